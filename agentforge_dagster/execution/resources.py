"""Dagster resources of the execution layer: the model provider and fault injection."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from agentforge_dagster.execution.faults import SlowModel, injected_fault
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
    hang_first: dict[str, int] = Field(
        default_factory=dict, description="Model calls of the first N attempts of a step hang."
    )
    hang_seconds: float = Field(default=3600.0, gt=0)
    retry_after_seconds: float | None = Field(
        default=None, description="Injected faults ask for this wait, like a 429's Retry-After."
    )
    model_latency_seconds: float = Field(
        default=0.0, ge=0, description="Simulated latency added to every model call."
    )

    def wrap_model(self, provider: ModelProvider, *, step: str, attempt: int) -> ModelProvider:
        """The provider as this attempt sees it: hung, slowed down, or untouched."""
        if attempt <= self.hang_first.get(step, 0):
            return SlowModel(provider, self.hang_seconds)
        if self.model_latency_seconds > 0:
            return SlowModel(provider, self.model_latency_seconds)
        return provider

    def check(self, *, order_id: str, step: str, attempt: int, phase: str) -> None:
        fault = injected_fault(
            retry_after=self.retry_after_seconds,
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
    model_timeout_seconds: float = Field(
        default=120.0, gt=0, description="A model call slower than this is a transient error."
    )
    image: str | None = Field(default=None, description="Image tag the run executes in.")
    image_id: str | None = Field(default=None, description="Image id (digest) of that image.")
