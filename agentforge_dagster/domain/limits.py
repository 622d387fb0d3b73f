"""Limits kept once because several layers apply them (plain Python: the CLI reads them too).

What a model provider's answer is held to (a provider is untrusted input): the defaults of the
settings ``AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS`` and ``AGENTFORGE_MODEL_MAX_RESPONSE_BYTES``,
which the providers, the step back-off and the shared rate limiter all apply; and the longest text
a person may deliver instead of a held draft (the review store and ``agentforge review edit``);
and how long a runner's lease on an order holds (``AGENTFORGE_LEASE_SECONDS``).
And the policies of the model providers' shared limits — a provider's rate limits
(:class:`RateLimits`, read from ``AGENTFORGE_MODEL_RATE_LIMITS_JSON`` by :func:`parse_rate_limits`) and
when its circuit breaker opens (:class:`BreakerPolicy`) — which the gateway applies and the
business store keeps the state of (:mod:`~agentforge_dagster.persistence.rate_limits`,
:mod:`~agentforge_dagster.persistence.breakers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# The longest wait a provider may ask for (Retry-After): an answer asking for more fails as
# rate-limited and is waited no longer than this, and nothing anywhere sleeps longer for it.
MAX_PROVIDER_WAIT_S = 300.0
# The most bytes of an answer read off the wire (a 64k-token answer is about 256 KB of JSON).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
# How long a runner's claim on an order holds unless renewed (the store, the resource and the
# setting ``AGENTFORGE_LEASE_SECONDS`` default to it).
DEFAULT_LEASE_SECONDS = 120.0
# The most tokens a count may say before it is taken for a lie and estimated instead.
MAX_TOKEN_COUNT = 10_000_000
# The longest text a person may deliver instead of a held draft (agentforge review edit).
MAX_EDITED_CHARS = 200_000


@dataclass(frozen=True)
class BreakerPolicy:
    """When a provider's circuit breaker opens, and how long it stays open."""

    threshold: int = 5  # transient failures within the window that open the breaker; 0: never
    window_s: float = 60.0
    cooldown_s: float = 30.0
    probe_timeout_s: float = 180.0  # a probe that never reported (its worker died) is retaken


@dataclass(frozen=True)
class RateLimits:
    """A provider's limits; None: that limit is not enforced."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    concurrency: int | None = None
    call_ttl_s: float = 300.0  # a call in flight longer than this is a dead worker's

    @property
    def enforced(self) -> bool:
        return any(
            limit is not None
            for limit in (self.requests_per_minute, self.tokens_per_minute, self.concurrency)
        )


def parse_rate_limits(text: str) -> dict[str, RateLimits]:
    """``{"provider:model": {"rpm": N, "tpm": N, "concurrency": N}}`` → limits by provider.

    Raises ``ValueError`` naming what is wrong (an unknown key, a limit that is not positive).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"model rate limits: not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError("model rate limits: a JSON object of provider:model → limits")
    limits = {}
    for provider, given in data.items():
        if not isinstance(given, dict) or not set(given) <= {"rpm", "tpm", "concurrency"}:
            raise ValueError(
                f"model rate limits of {provider!r}: an object of rpm, tpm and concurrency"
            )
        for key, value in given.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model rate limits of {provider!r}: {key} must be above 0")
        limits[provider] = RateLimits(
            requests_per_minute=given.get("rpm"),
            tokens_per_minute=given.get("tpm"),
            concurrency=int(given["concurrency"]) if "concurrency" in given else None,
        )
    return limits
