"""Dagster resources of the execution layer: the model provider and fault injection."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from agentforge_dagster.domain.limits import BreakerPolicy, parse_rate_limits
from agentforge_dagster.domain.models import Order
from agentforge_dagster.execution.backoff import StepBackoff
from agentforge_dagster.execution.gateway import ModelGateway
from agentforge_dagster.execution.llm.base import DEFAULT_PRICES, ModelProvider
from agentforge_dagster.execution.llm.offline import OFFLINE_MODEL_NAME
from agentforge_dagster.execution.llm.registry import provider_class
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import (
    ModelSettings,
    RetrySettings,
    ReviewSettings,
    defaults,
)

# The settings' defaults (settings.py), where each is written once.
_MODELS, _RETRIES, _REVIEW = (
    defaults(ModelSettings),
    defaults(RetrySettings),
    defaults(ReviewSettings),
)


class ModelResource(ConfigurableResource):
    """Which models answer the steps, in fallback order, and the rules around every call.

    ``models`` is a comma-separated chain of ``provider:model[@base_url]``: ``offline`` (the
    built-in model), ``openai:gpt-4o-mini``, ``anthropic:claude-sonnet-4-5``,
    ``openai:llama3.1@http://127.0.0.1:11434/v1`` (any OpenAI-compatible server). Keys come from
    ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` through ``EnvVar``.

    The providers (and their SDK clients, with their connection pools) live for the run: built in
    :meth:`setup_for_execution`, closed in :meth:`teardown_after_execution`. A run also keeps here,
    in memory, how often each provider has failed each order's step, which is what fallback reads.
    """

    models: str = _MODELS.chain
    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    timeout_seconds: float = Field(
        default=_MODELS.timeout_seconds,
        gt=0,
        description="The one deadline of a model call: the SDK clients' timeout, and how long a "
        "step waits for an answer before the call is a transient error.",
    )
    fallback_after: int = Field(default=_MODELS.fallback_after, ge=1)
    breaker_failures: int = Field(
        default=_MODELS.breaker_failures,
        ge=0,
        description="Failures that open a provider's shared circuit breaker "
        "(AGENTFORGE_MODEL_BREAKER_FAILURES).",
    )
    rate_limits_json: str | None = Field(
        default=None,
        description='Shared limits per "provider:model": {"name:model": {"rpm", "tpm", '
        '"concurrency"}}.',
    )
    max_rate_wait_seconds: float = Field(default=_MODELS.max_rate_wait_seconds, ge=0)
    max_provider_wait_seconds: float = Field(
        default=_MODELS.max_provider_wait_seconds,
        gt=0,
        description="The longest wait a provider may ask for; an answer asking for more fails "
        "as rate-limited, and its pause of the shared limits is no longer.",
    )
    max_response_bytes: int = Field(
        default=_MODELS.max_response_bytes,
        ge=1024,
        description="The most bytes of an answer read; a larger one is refused unread.",
    )
    breaker_window_seconds: float = Field(default=_MODELS.breaker_window_seconds, gt=0)
    breaker_cooldown_seconds: float = Field(default=_MODELS.breaker_cooldown_seconds, gt=0)
    max_reprompts: int = Field(default=_MODELS.max_reprompts, ge=0)
    replay_only: bool = _MODELS.replay_only
    monthly_budget_usd: float | None = _MODELS.monthly_budget_usd
    prices_json: str | None = Field(
        default=None, description='USD per million tokens: {"model": [input, output]}.'
    )

    _providers: list[ModelProvider] | None = PrivateAttr(default=None)
    _chosen: dict[str, list[ModelProvider]] = PrivateAttr(default_factory=dict)
    _closers: list[Callable[[], None]] = PrivateAttr(default_factory=list)
    _failures: dict[tuple[str, str], Counter[tuple[str, str]]] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Build the providers once for the run, so no step pays for clients again."""
        self.get_providers()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Close the SDK clients' connection pools, whatever the run's outcome."""
        closers, self._closers, self._providers = self._closers, [], None
        self._chosen.clear()
        self._failures.clear()
        for close in closers:
            close()

    def specs(self) -> list[ModelSpec]:
        return parse_model_specs(self.models)

    def prices(self) -> dict[str, tuple[float, float]]:
        table = dict(DEFAULT_PRICES)
        if self.prices_json:
            table.update(
                {k: (float(v[0]), float(v[1])) for k, v in json.loads(self.prices_json).items()}
            )
        return table

    def get_providers(self, models: str | None = None) -> list[ModelProvider]:
        """The run's providers in fallback order, built on first use and shared by every step.

        ``models`` names another chain (a person's re-drive with another model), built once a run.
        """
        if models is not None:
            if models not in self._chosen:
                self._chosen[models] = [self._provider(s) for s in parse_model_specs(models)]
            return self._chosen[models]
        if self._providers is None:
            self._providers = [self._provider(spec) for spec in self.specs()]
        return self._providers

    def gateway(
        self,
        store: BusinessStore,
        *,
        order_id: str,
        step: str,
        run_id: str,
        attempt: int,
        wrap: Callable[[ModelProvider], ModelProvider] | None = None,
        models: str | None = None,
    ) -> ModelGateway:
        """The model door for one attempt of one step, on the run's providers and failure counts.

        ``wrap`` may stand in front of each provider (the fault drills slow or hang them);
        ``models`` replaces the configured chain (see :meth:`get_providers`).
        """
        providers = self.get_providers(models)
        budget = self.monthly_budget_usd
        return ModelGateway(
            store=store,
            providers=[wrap(p) for p in providers] if wrap is not None else list(providers),
            order_id=order_id,
            step=step,
            run_id=run_id,
            attempt=attempt,
            timeout_s=self.timeout_seconds,
            fallback_after=self.fallback_after,
            max_reprompts=self.max_reprompts,
            replay_only=self.replay_only,
            default_budget_usd=Decimal(str(budget)) if budget is not None else None,
            prices=self.prices(),
            failures=self._failures.setdefault((order_id, step), Counter()),
            rate_limits=parse_rate_limits(self.rate_limits_json) if self.rate_limits_json else {},
            max_rate_wait_s=self.max_rate_wait_seconds,
            max_provider_wait_s=self.max_provider_wait_seconds,
            breaker=BreakerPolicy(
                threshold=self.breaker_failures,
                window_s=self.breaker_window_seconds,
                cooldown_s=self.breaker_cooldown_seconds,
                probe_timeout_s=self.timeout_seconds + 60,
            ),
        )

    def _provider(self, spec: ModelSpec) -> ModelProvider:
        cls = provider_class(spec.provider)  # imports the SDK of this kind only
        if spec.provider == "offline":
            return cls()  # type: ignore[no-any-return]
        provider = cls(
            model=spec.model,
            api_key=self.openai_api_key if spec.provider == "openai" else self.anthropic_api_key,
            base_url=spec.base_url
            or ("https://api.openai.com/v1" if spec.provider == "openai" else None),
            timeout_s=self.timeout_seconds,
            prices=self.prices(),
            max_wait_s=self.max_provider_wait_seconds,
            max_response_bytes=self.max_response_bytes,
        )
        self._closers.append(provider.close)  # an SDK provider holds a connection pool
        return provider  # type: ignore[no-any-return]


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
        specs.append(ModelSpec(provider, model or OFFLINE_MODEL_NAME, base_url or None))
    if not specs:
        raise ValueError("no model configured (AGENTFORGE_MODELS is empty)")
    return specs


class StepOptions(ConfigurableResource):
    """Business settings of the steps: how many revisions a review may ask, who approves what."""

    max_revisions: int = Field(default=_REVIEW.max_revisions, ge=0, le=5)
    retry_max_retries: int = Field(default=_RETRIES.max_retries, ge=0, le=20)
    retry_delay_seconds: float = Field(
        default=_RETRIES.delay_seconds, gt=0, description="Wait before the first retry."
    )
    retry_max_delay_seconds: float = Field(
        default=_RETRIES.max_delay_seconds, gt=0, description="Longest single wait."
    )
    max_provider_wait_seconds: float = Field(
        default=_MODELS.max_provider_wait_seconds,
        gt=0,
        description="The longest wait before a retry that a provider's Retry-After may ask for.",
    )
    approval_services: str = Field(
        default=_REVIEW.approval_services, description="Services held for approval."
    )
    approval_customers: str = Field(
        default=_REVIEW.approval_customers, description="Customers held for approval."
    )
    image: str | None = Field(default=None, description="Image tag the run executes in.")
    image_id: str | None = Field(default=None, description="Image id (digest) of that image.")
    trace_url: str | None = Field(
        default=None, description="A trace viewer's page of one trace ({trace_id} in it)."
    )

    def requires_approval(self, order: Order) -> bool:
        """Whether a person approves this order's deliverable before it goes out."""

        def listed(text: str) -> set[str]:
            return {item.strip().casefold() for item in text.split(",") if item.strip()}

        return (
            order.require_approval
            or order.service.value.casefold() in listed(self.approval_services)
            or order.customer.casefold() in listed(self.approval_customers)
        )

    def backoff(self) -> StepBackoff:
        return StepBackoff(
            self.retry_max_retries,
            self.retry_delay_seconds,
            self.retry_max_delay_seconds,
            self.max_provider_wait_seconds,
        )
