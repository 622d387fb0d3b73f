"""The one door to the models: cache, budget, fallback, deadline, re-prompt, records.

Every model call of a step goes through :meth:`ModelGateway.ask`:

1. **Never pay twice**: the request is keyed by SHA-256 of (provider, model, task, prompt, output
   schema). A key already answered is served from the ``model_responses`` table: a retried step, a
   re-executed run or a replayed dead letter reuses what was paid for. In ``replay_only`` mode a
   missing answer is an error: the failed order's calls are reproduced exactly or not at all.
   The key is what the store is indexed by, so its recipe must not change (a test pins it): how
   the providers ask (structured output or not) is deliberately not part of it.
2. **Budget guard**: before a paid call, its worst-case cost (the prompt's tokens plus the most
   it may answer, at the model's prices) is reserved against the month's cap, in one transaction
   with the month's spend and the reservations of calls in flight (on every worker and host); a
   call that does not fit raises :class:`BudgetExhausted`, which pauses the order
   (``waiting_budget``). The real cost replaces the reservation when the call is recorded; a
   failed call releases it. Concurrent runs cannot take the month past its cap together.
3. **Fallback**: providers are tried in order; a provider that has failed transiently
   ``fallback_after`` times for this order and step is passed over for the next one. The count is
   kept in memory (``failures``), shared by the attempts of the step within the run (the model
   resource hands the same counter to each attempt's gateway): the hot path reads no audit rows,
   and a new run, say a replay, tries the primary again. Across orders, a provider's shared
   circuit breaker (:mod:`~agentforge_dagster.persistence.breakers`) opens after ``breaker``'s
   threshold of transient failures within its window, from any order on any worker: while it is
   open, calls go straight to the next provider; when every provider's breaker is open, the step
   fails transiently (:class:`CircuitOpen`) and retries after its back-off.
4. **Shared rate limits**: a provider with limits (``rate_limits``: requests and tokens a minute,
   calls at once) is called only once the shared buckets grant the call
   (:mod:`~agentforge_dagster.persistence.rate_limits`, for every worker and host); the gateway
   waits up to ``max_rate_wait_s`` for that, then fails transiently (the step backs off). A 429
   empties the provider's buckets for everyone and pauses it for its ``Retry-After``.
5. **Deadline**: the call runs under the step's model timeout; a hang is a transient error.
6. **Re-prompt**: an answer that does not validate against the step's schema is sent back with
   the validation error, at most ``max_reprompts`` times; then the step fails permanently. Only
   an answer that validated is kept in the response store (a paid answer that did not is
   recorded as a call, with no key: there is nothing to reuse).
7. **Untrusted answers**: whatever a provider says its answer used or cost, a token count that is
   not believable is estimated and a cost is never negative (priced again from the table), so a
   provider cannot lower the month's spend; a wait it asks for (``Retry-After``) pauses it for
   everyone for no longer than ``max_provider_wait_s``.

Each call (paid or served from the store) is a row of ``model_calls``: provider, model asked
for and model that answered, tokens, latency, cost and cache hit. Each transient provider failure is an audit event (a trail, not the
counter).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentforge_dagster import tracing
from agentforge_dagster.domain.errors import (
    BudgetExhausted,
    ModelCallTimeout,
    PermanentError,
    ProviderRateLimited,
    TransientError,
)
from agentforge_dagster.domain.limits import BreakerPolicy, RateLimits
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.execution.llm.base import (
    ModelProvider,
    ModelRequest,
    ModelResponse,
    estimate_tokens,
    served_model,
    token_count,
)
from agentforge_dagster.persistence.breakers import BreakerState
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import ModelSettings, defaults
from agentforge_dagster.tracing import genai

P = TypeVar("P", bound=BaseModel)
# The most a call may answer when its provider sets no max_tokens: the worst case a call reserves.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# What a call is expected to answer, as the shared tokens-a-minute bucket counts it beforehand.
EXPECTED_OUTPUT_TOKENS = 1000
Prices = dict[str, tuple[float, float]]


def call_with_timeout(
    fn: Callable[[ModelRequest], ModelResponse], request: ModelRequest, *, timeout_s: float
) -> ModelResponse:
    """Run a model call with a deadline; a call that hangs past it becomes a transient error.

    The call runs in a worker thread; on timeout the step stops waiting for it (a thread cannot be
    killed, so a truly hung call is left to finish or die with the process).
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-call")
    future = pool.submit(fn, request)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout as exc:
        raise ModelCallTimeout(
            f"model call for {request.task!r} did not answer within {timeout_s:g} s"
        ) from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def cache_key(provider: ModelProvider, request: ModelRequest) -> str:
    """The response store's key of a request to a provider; stable, or paid answers are lost."""
    payload = json.dumps(
        {
            "provider": provider.name,
            "model": provider.model,
            "task": request.task,
            "prompt": request.prompt,
            "schema": request.output_schema,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CircuitOpen(TransientError):
    """Every provider of the chain is open: no call is made; the step tries again later."""


def breaker_name(provider: ModelProvider) -> str:
    """What a provider's shared circuit breaker is called: ``name:model``."""
    return f"{provider.name}:{provider.model}"[:200]


def month_of() -> str:
    return utcnow().strftime("%Y-%m")


_MODELS = defaults(ModelSettings)  # the settings' defaults, written once in settings.py


@dataclass
class ModelGateway:
    """The model calls of one attempt of one step (see the module docstring).

    ``failures`` counts transient failures per (provider name, model) for this order and step;
    pass the same counter to every attempt of the step so fallback carries across retries.
    """

    store: BusinessStore
    providers: Sequence[ModelProvider]
    order_id: str
    step: str
    run_id: str
    attempt: int
    timeout_s: float = _MODELS.timeout_seconds
    fallback_after: int = _MODELS.fallback_after
    max_reprompts: int = _MODELS.max_reprompts
    replay_only: bool = _MODELS.replay_only
    default_budget_usd: Decimal | None = None
    prices: Prices = field(default_factory=dict)
    responses: list[ModelResponse] = field(default_factory=list)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    rate_limits: dict[str, RateLimits] = field(default_factory=dict)  # by "name:model"
    max_rate_wait_s: float = _MODELS.max_rate_wait_seconds
    max_provider_wait_s: float = _MODELS.max_provider_wait_seconds
    _trace: tracing.OrderTrace | None = field(default=None, init=False, repr=False)

    def ask(self, request: ModelRequest, schema: type[P]) -> P:
        """An answer to ``request`` that validates against ``schema``; only such answers are kept."""
        for reprompt in range(self.max_reprompts + 1):
            answer = self._answer(request)
            response = answer.response
            valid = False
            try:
                parsed = schema.model_validate_json(_json_text(response.text))
                valid = True
                return parsed
            except ValidationError as exc:
                problem = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}"
                    for e in exc.errors()[:5]
                )
                if reprompt == self.max_reprompts:
                    raise PermanentError(
                        f"{response.model} gave no answer matching {schema.__name__} after "
                        f"{self.max_reprompts} re-prompt(s); last problem: {problem}"
                    ) from exc
                request = ModelRequest(
                    task=request.task,
                    prompt=f"{request.prompt}\n\nYour previous answer was invalid: {problem}. "
                    "Answer again with JSON that matches the schema exactly.",
                    context={**request.context, "validation_error": problem},
                    output_schema=request.output_schema,
                )
            finally:
                self._settle(answer, keep=valid)
        raise AssertionError("unreachable")

    def complete(self, request: ModelRequest) -> ModelResponse:
        """One answer, recorded: from the store if paid for already, else from the first provider
        that can. It is not kept in the store: :meth:`ask` keeps an answer once it validates."""
        answer = self._answer(request)
        self._settle(answer, keep=False)
        return answer.response

    def _answer(self, request: ModelRequest) -> _Answered:
        """An answer not yet recorded; its budget reservation is held until :meth:`_settle`."""
        candidates = self._candidates()
        for index, provider in enumerate(candidates):
            key = cache_key(provider, request)
            stored = self.store.model_calls.stored_response(key)
            if stored is not None:
                return _Answered(
                    self._from_store(stored),
                    key,
                    utcnow(),
                    hit=True,
                    **self._about(provider, request),
                )
            if not self.store.breakers.breaker_allows(breaker_name(provider), self.breaker):
                continue  # open: every order passes it over until its cool-down ends
            if self.replay_only:
                raise PermanentError(
                    f"replay mode: no recorded answer of {provider.model} for this {request.task} "
                    "request"
                )
            reservation = self._reserve_budget(provider, request)
            started = utcnow()
            try:
                response = self._believable(request, self._call(provider, request))
            except BaseException as exc:
                if reservation is not None:
                    self.store.model_calls.release_budget(reservation)
                self._span_of_failure(provider, request, started, exc)
                if not isinstance(exc, TransientError):
                    raise
                self.failures[(provider.name, provider.model)] += 1
                opened = self.store.breakers.breaker_failed(
                    breaker_name(provider), self.breaker, error=f"{type(exc).__name__}: {exc}"
                )
                self.store.audit.record_event(
                    "model_call_failed",
                    **self._where(),
                    detail={
                        "provider": provider.name,
                        "model": provider.model,
                        "error_type": type(exc).__name__,
                        "message": str(exc)[:500],
                    },
                )
                if index + 1 < len(candidates) and (
                    self._failures(provider) >= self.fallback_after or opened is BreakerState.OPEN
                ):
                    continue  # the primary is down: the next provider answers
                raise
            self.store.breakers.breaker_succeeded(breaker_name(provider), self.breaker)
            return _Answered(
                response,
                key,
                started,
                hit=False,
                reservation=reservation,
                **self._about(provider, request),
            )
        if not candidates:
            raise AssertionError("no model provider configured")
        raise CircuitOpen(
            "every model provider's circuit breaker is open ("
            + ", ".join(breaker_name(p) for p in candidates)
            + "); the step retries after its back-off"
        )

    def _where(self) -> dict[str, Any]:
        """Where a call happens, as the audit trail and the ``model_calls`` rows name it."""
        return {name: getattr(self, name) for name in ("order_id", "step", "attempt", "run_id")}

    def _candidates(self) -> list[ModelProvider]:
        """Providers in order, leaving out those that failed too often here (the last stays)."""
        usable = [p for p in self.providers[:-1] if self._failures(p) < self.fallback_after]
        return [*usable, self.providers[-1]]

    def _failures(self, provider: ModelProvider) -> int:
        return self.failures[(provider.name, provider.model)]

    def _call(self, provider: ModelProvider, request: ModelRequest) -> ModelResponse:
        """The provider's answer, within its shared rate limits and the call's deadline."""
        limits = self.rate_limits.get(breaker_name(provider))
        if limits is None or not limits.enforced:
            return call_with_timeout(provider.complete, request, timeout_s=self.timeout_s)
        name = breaker_name(provider)
        tokens = estimate_tokens(request.prompt) + EXPECTED_OUTPUT_TOKENS
        waited = 0.0
        while True:
            grant = self.store.rate_limits.acquire_call(name, limits, tokens)
            if grant.call_id is not None:
                break
            if waited + grant.wait_s > self.max_rate_wait_s:
                raise ProviderRateLimited(
                    f"{name}: its shared rate limit grants no call within "
                    f"{self.max_rate_wait_s:g} s",
                    retry_after=grant.wait_s,
                )
            time.sleep(grant.wait_s)
            waited += grant.wait_s
        try:
            response = call_with_timeout(provider.complete, request, timeout_s=self.timeout_s)
        except ProviderRateLimited as exc:  # a 429: slow everyone down at once (not for long)
            self.store.rate_limits.end_call(name, limits, grant.call_id)
            self.store.rate_limits.throttle(
                name, limits, exc.retry_after, longest_s=self.max_provider_wait_s
            )
            raise
        except BaseException:
            self.store.rate_limits.end_call(name, limits, grant.call_id)
            raise
        # The provider's own count of what is left (its rate-limit headers), where it gave one:
        # a limit set too high here, or shared with callers we do not see, is kept all the same.
        self.store.rate_limits.end_call(
            name,
            limits,
            grant.call_id,
            remaining_requests=response.remaining_requests,
            remaining_tokens=response.remaining_tokens,
        )
        return response

    def _reserve_budget(self, provider: ModelProvider, request: ModelRequest) -> int | None:
        """Reserve the call's worst-case cost against the month's cap; None: no cap."""
        month = month_of()
        cap = self.store.model_calls.budget_cap(month)
        if cap is None:
            cap = self.default_budget_usd
        if cap is None:
            return None
        price_in, price_out = self.prices.get(provider.model, (0.0, 0.0))
        most_out = getattr(provider, "max_tokens", None) or DEFAULT_MAX_OUTPUT_TOKENS
        worst = Decimal(str(estimate_tokens(request.prompt) * price_in + most_out * price_out))
        worst = (worst / 1_000_000).quantize(Decimal("0.000001"), rounding=ROUND_CEILING)
        reservation, committed = self.store.model_calls.reserve_budget(
            month,
            worst,
            cap,
            order_id=self.order_id,
            step=self.step,
            ttl_seconds=self.timeout_s * 2 + 60,
        )
        if reservation is None:
            raise BudgetExhausted(
                f"model budget for {month} is {cap} USD; {committed} spent or held by calls in "
                f"flight, and the next {provider.model} call may cost up to {worst} USD"
            )
        return reservation

    def _believable(self, request: ModelRequest, response: ModelResponse) -> ModelResponse:
        """The answer with what it says of itself checked, whichever provider gave it: counts
        that are not believable are estimated, a cost that is negative or not a number is priced
        again from the table (the answering model's price, else the requested model's)."""
        served = served_model(response.served_model)
        input_tokens = token_count(response.input_tokens) or estimate_tokens(request.prompt)
        output_tokens = token_count(response.output_tokens) or estimate_tokens(response.text)
        cost = response.cost_usd
        counted = (input_tokens, output_tokens) == (response.input_tokens, response.output_tokens)
        if not (isinstance(cost, int | float) and math.isfinite(cost) and cost >= 0 and counted):
            price_in, price_out = self.prices.get(
                served or response.model, self.prices.get(response.model, (0.0, 0.0))
            )
            cost = max(0.0, (input_tokens * price_in + output_tokens * price_out) / 1_000_000)
        return replace(
            response,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=float(cost),
            served_model=served,
        )

    @staticmethod
    def _from_store(row: dict[str, object]) -> ModelResponse:
        served = row.get("served_model")
        return ModelResponse(
            text=str(row["text"]),
            provider=str(row["provider"]),
            model=str(row["model"]),
            input_tokens=int(str(row["input_tokens"])),
            output_tokens=int(str(row["output_tokens"])),
            cost_usd=0.0,
            latency_s=0.0,
            served_model=str(served) if served is not None else None,
        )

    def _settle(self, answer: _Answered, *, keep: bool) -> None:
        """Record the call (its reservation released in the same transaction); with ``keep``, a
        paid answer is kept in the store under its key. A paid answer not kept is recorded with
        no key: no stored answer was paid for by it."""
        response = answer.response
        if keep and not answer.hit:
            self.store.model_calls.store_response(
                cache_key=answer.key, **response.row(without="latency_s")
            )
        self.responses.append(response)
        self.store.model_calls.record_model_call(
            reservation_id=answer.reservation,
            **self._where(),
            **response.row(without="text"),
            started_at=answer.started,
            ended_at=utcnow(),
            cache_hit=answer.hit,
            cache_key=answer.key if keep or answer.hit else None,
        )
        if tracing.enabled():
            genai.model_call(
                self._order_trace(),
                provider=response.provider,
                model=response.model,
                served_model=response.served_model,
                base_url=answer.base_url,
                started=answer.started,  # type: ignore[arg-type]  # a datetime (utcnow)
                input_tokens=response.input_tokens,
                output_tokens=response.output_tokens,
                cost_usd=response.cost_usd,
                cache_hit=answer.hit,
                prompt=answer.prompt,
                completion=response.text,
            )

    @staticmethod
    def _about(provider: ModelProvider, request: ModelRequest) -> dict[str, Any]:
        """What a model call's span says besides the answer: where it went, what was asked."""
        return {"base_url": getattr(provider, "base_url", None), "prompt": request.prompt}

    def _order_trace(self) -> tracing.OrderTrace:
        if self._trace is None:
            self._trace = self.store.order_trace(self.order_id)
        return self._trace

    def _span_of_failure(
        self, provider: ModelProvider, request: ModelRequest, started: Any, exc: BaseException
    ) -> None:
        if not tracing.enabled() or not isinstance(exc, Exception):
            return
        genai.model_call(
            self._order_trace(),
            provider=provider.name,
            model=provider.model,
            base_url=getattr(provider, "base_url", None),
            started=started,
            error_type=type(exc).__name__,
            prompt=request.prompt,
        )


@dataclass(frozen=True)
class _Answered:
    """An answer between the call and its record: where it came from and what it holds."""

    response: ModelResponse
    key: str
    started: object
    hit: bool
    reservation: int | None = None
    base_url: str | None = None
    prompt: str | None = None


def _json_text(text: str) -> str:
    """The JSON in an answer, without the Markdown fence some models put around it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else stripped
        stripped = stripped.rsplit("```", 1)[0]
    return stripped.strip()
