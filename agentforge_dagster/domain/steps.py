"""The order's six steps by name, in pipeline order, and the asset each one is materialised as.

They live in the domain so every layer can name the steps without importing the one that runs them:
the execution layer builds its step table in this order, and the metrics read Dagster's event log
by these names without importing execution.
"""

from __future__ import annotations

STEP_NAMES: tuple[str, ...] = ("intake", "plan", "draft", "review", "delivery", "invoice")


def step_asset_name(step: str) -> str:
    """The asset (and Dagster step key) a step is materialised as: ``plan`` → ``order_plan``."""
    return f"order_{step}"
