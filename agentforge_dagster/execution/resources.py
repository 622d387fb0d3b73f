"""Dagster resources of the execution layer: the model provider and fault injection."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from agentforge_dagster.execution.faults import injected_fault
from agentforge_dagster.execution.providers import ModelProvider, OfflineModel


class ModelResource(ConfigurableResource):
    """Which model answers the steps; ``offline`` is the built-in deterministic model."""

    provider: str = "offline"

    def get_provider(self) -> ModelProvider:
        if self.provider == "offline":
            return OfflineModel()
        raise ValueError(f"unknown model provider {self.provider!r}; known: offline")


class FaultInjector(ConfigurableResource):
    """Raises transient faults on purpose, before and after each step's work.

    ``rate`` is the probability that one attempt of one step fails; ``seed`` makes it repeatable;
    ``fail_first`` scripts the first N attempts of named steps to fail.
    """

    rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0
    fail_first: dict[str, int] = Field(default_factory=dict)

    def check(self, *, order_id: str, step: str, attempt: int, phase: str) -> None:
        fault = injected_fault(
            rate=self.rate,
            seed=self.seed,
            order_id=order_id,
            step=step,
            attempt=attempt,
            phase=phase,
            fail_first=self.fail_first,
        )
        if fault is not None:
            raise fault


class StepOptions(ConfigurableResource):
    """Business settings of the steps: where deliverables go, how many revisions a review may ask."""

    deliveries_dir: str
    max_revisions: int = Field(default=1, ge=0, le=5)
