"""Dagster resources of the execution layer: the model provider and fault injection."""

from __future__ import annotations

import json
from dataclasses import dataclass

from dagster import ConfigurableResource
from pydantic import Field

from agentforge_dagster.execution.faults import SlowModel, injected_fault
from agentforge_dagster.execution.providers import DEFAULT_PRICES, ModelProvider, OfflineModel


class ModelResource(ConfigurableResource):
    """Which models answer the steps, in fallback order, and the rules around every call.

    ``models`` is a comma-separated chain of ``provider:model[@base_url]``: ``offline`` (the
    built-in model), ``openai:gpt-4o-mini``, ``anthropic:claude-sonnet-4-5``,
    ``openai:llama3.1@http://127.0.0.1:11434/v1`` (any OpenAI-compatible server). Keys come from
    ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` through ``EnvVar``.
    """

    models: str = "offline"
    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    fallback_after: int = Field(default=2, ge=1)
    max_reprompts: int = Field(default=2, ge=0)
    replay_only: bool = False
    monthly_budget_usd: float | None = None
    prices_json: str | None = Field(
        default=None, description='USD per million tokens: {"model": [input, output]}.'
    )

    def specs(self) -> list[ModelSpec]:
        return parse_model_specs(self.models)

    def prices(self) -> dict[str, tuple[float, float]]:
        table = dict(DEFAULT_PRICES)
        if self.prices_json:
            table.update(
                {k: (float(v[0]), float(v[1])) for k, v in json.loads(self.prices_json).items()}
            )
        return table

    def get_providers(self) -> list[ModelProvider]:
        return [self._provider(spec) for spec in self.specs()]

    def _provider(self, spec: ModelSpec) -> ModelProvider:
        if spec.provider == "offline":
            return OfflineModel()
        # The SDKs take seconds to import: only runs that call a real model pay for that.
        from agentforge_dagster.execution.llm_providers import (
            AnthropicProvider,
            OpenAICompatibleProvider,
        )

        if spec.provider == "openai":
            return OpenAICompatibleProvider(
                model=spec.model,
                api_key=self.openai_api_key,
                base_url=spec.base_url or "https://api.openai.com/v1",
                timeout_s=self.timeout_seconds,
                prices=self.prices(),
            )
        return AnthropicProvider(
            model=spec.model,
            api_key=self.anthropic_api_key,
            base_url=spec.base_url,
            timeout_s=self.timeout_seconds,
            prices=self.prices(),
        )


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    model: str
    base_url: str | None = None


KNOWN_PROVIDERS = ("offline", "openai", "anthropic")


def parse_model_specs(text: str) -> list[ModelSpec]:
    """``"openai:gpt-4o-mini@http://host/v1, offline"`` → specs, first is primary."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        provider, _, rest = item.partition(":")
        model, _, base_url = rest.partition("@")
        if provider not in KNOWN_PROVIDERS:
            raise ValueError(
                f"unknown model provider {provider!r} in {item!r}; known: "
                + ", ".join(KNOWN_PROVIDERS)
            )
        if provider != "offline" and not model:
            raise ValueError(f"{item!r}: name the model, e.g. {provider}:MODEL")
        specs.append(ModelSpec(provider, model or OfflineModel.model, base_url or None))
    if not specs:
        raise ValueError("no model configured (AGENTFORGE_MODELS is empty)")
    return specs


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
    allocate_mb: dict[str, int] = Field(
        default_factory=dict,
        description="Megabytes a step allocates and holds during its work: an out-of-memory "
        "drill for run containers with a memory cap.",
    )

    def wrap_model(self, provider: ModelProvider, *, step: str, attempt: int) -> ModelProvider:
        """The provider as this attempt sees it: hung, slowed down, or untouched."""
        if attempt <= self.hang_first.get(step, 0):
            return SlowModel(provider, self.hang_seconds)
        if self.model_latency_seconds > 0:
            return SlowModel(provider, self.model_latency_seconds)
        return provider

    def allocate(self, step: str) -> bytes | None:
        """The step's memory ballast, every page written so it is really resident."""
        megabytes = self.allocate_mb.get(step, 0)
        return b"\xff" * (megabytes * 1024 * 1024) if megabytes > 0 else None

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
