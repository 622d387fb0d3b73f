"""The step order the domain names is the order the execution layer builds its assets in."""

from __future__ import annotations

from agentforge_dagster.domain.steps import STEP_NAMES, step_asset_name
from agentforge_dagster.execution.steps import STEPS


def test_step_names_follow_the_step_table() -> None:
    assert tuple(spec.name for spec in STEPS) == STEP_NAMES


def test_each_step_is_materialised_as_the_asset_its_spec_names() -> None:
    assert [step_asset_name(spec.name) for spec in STEPS] == [spec.asset_name for spec in STEPS]
