"""Shared rate limits of the model providers: one budget of requests, tokens and concurrent calls
per provider and model, for every run worker and host, kept in the business database.

A provider's limits (requests a minute, tokens a minute, calls at once) are token buckets refilled
continuously: a call takes one request and its estimated tokens, and holds a slot until it ends.
State lives in two tables: ``provider_rate_limits`` (per provider: what is left in each bucket, when
it was refilled, until when the provider asked us to pause) and ``provider_calls_in_flight`` (one
row per call under way, with an expiry, so a worker that dies mid-call frees its slot in time).
Each acquisition is one transaction that changes the provider's row by compare-and-set: two workers
never spend the same request. A 429 empties the buckets and pauses the provider for its
``Retry-After``; rate-limit headers, where a provider sends them, lower what is left to what the
provider says is left. The limits themselves are plain policy
(:class:`~agentforge_dagster.domain.limits.RateLimits`); this module keeps their state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from agentforge_dagster.domain.limits import MAX_PROVIDER_WAIT_S, RateLimits
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.persistence.schema import provider_calls_in_flight, provider_rate_limits
from agentforge_dagster.persistence.sql import (
    StoreConcern,
    as_utc,
    dialect_insert,
    update_if_unchanged,
)

_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class Grant:
    """The outcome of asking for a call: granted (with its slot's id), or how long to wait."""

    call_id: int | None
    wait_s: float

    @property
    def granted(self) -> bool:
        return self.call_id is not None


def _refilled(row: Any, limits: RateLimits, now: datetime) -> tuple[float, float]:
    """The buckets' levels at ``now``: what was left plus the refill since, up to a minute's worth."""
    elapsed = max(0.0, (now - (as_utc(row.refilled_at) or now)).total_seconds())
    requests = row.requests_left
    tokens = row.tokens_left
    if limits.requests_per_minute is not None:
        requests = min(
            limits.requests_per_minute, requests + elapsed * limits.requests_per_minute / 60
        )
    if limits.tokens_per_minute is not None:
        tokens = min(limits.tokens_per_minute, tokens + elapsed * limits.tokens_per_minute / 60)
    return requests, tokens


def _in_flight(conn: Connection, provider: str, now: datetime) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                provider_calls_in_flight.c.provider == provider,
                provider_calls_in_flight.c.expires_at > now,
            )
        ).scalar_one()
    )


def _row(conn: Connection, provider: str, limits: RateLimits, now: datetime) -> Any:
    row = conn.execute(
        select(provider_rate_limits).where(provider_rate_limits.c.provider == provider)
    ).one_or_none()
    if row is not None:
        return row
    conn.execute(
        dialect_insert(conn, provider_rate_limits)
        .values(
            provider=provider,
            requests_left=float(limits.requests_per_minute or 0),
            tokens_left=float(limits.tokens_per_minute or 0),
            refilled_at=now,
            paused_until=None,
        )
        .on_conflict_do_nothing()
    )
    return conn.execute(
        select(provider_rate_limits).where(provider_rate_limits.c.provider == provider)
    ).one()


# A provider's buckets are as read while these are (the key first): the compare-and-set's columns.
_AS_READ = ("provider", "refilled_at", "requests_left", "tokens_left")


class RateLimitStore(StoreConcern):
    """Requests, tokens and call slots of each provider, shared by every worker."""

    def acquire_call(self, provider: str, limits: RateLimits, tokens: int) -> Grant:
        """Take one request, ``tokens`` tokens and a call slot of ``provider`` now, or say how
        long to wait before asking again."""
        for _ in range(_CAS_ATTEMPTS):
            now = utcnow()
            with self.begin() as conn:
                row = _row(conn, provider, limits, now)
                paused = as_utc(row.paused_until)
                if paused is not None and now < paused:
                    return Grant(None, (paused - now).total_seconds())
                requests, bucket = _refilled(row, limits, now)
                waits = []
                if limits.requests_per_minute is not None and requests < 1:
                    waits.append((1 - requests) * 60 / limits.requests_per_minute)
                wanted = min(tokens, limits.tokens_per_minute or tokens)  # one call may use it all
                if limits.tokens_per_minute is not None and bucket < wanted:
                    waits.append((wanted - bucket) * 60 / limits.tokens_per_minute)
                if limits.concurrency is not None and (
                    _in_flight(conn, provider, now) >= limits.concurrency
                ):
                    waits.append(0.25)  # a slot frees when a call ends: look again shortly
                if waits:
                    return Grant(None, max(waits))
                values = {
                    "requests_left": requests - 1 if limits.requests_per_minute else requests,
                    "tokens_left": bucket - wanted if limits.tokens_per_minute else bucket,
                    "refilled_at": now,
                    "paused_until": None,
                }
                if not update_if_unchanged(conn, provider_rate_limits, row, _AS_READ, values):
                    continue  # another worker took from the bucket first: read again
                call_id = conn.execute(
                    provider_calls_in_flight.insert()
                    .values(
                        provider=provider,
                        tokens=tokens,
                        started_at=now,
                        expires_at=now + timedelta(seconds=limits.call_ttl_s),
                    )
                    .returning(provider_calls_in_flight.c.call_id)
                ).scalar_one()
                return Grant(int(call_id), 0.0)
        return Grant(None, 0.1)  # heavy contention: the caller asks again

    def end_call(
        self,
        provider: str,
        limits: RateLimits,
        call_id: int,
        *,
        remaining_requests: int | None = None,
        remaining_tokens: int | None = None,
    ) -> None:
        """Free the call's slot; where the provider said what is left, believe it."""
        with self.begin() as conn:
            conn.execute(
                provider_calls_in_flight.delete().where(
                    provider_calls_in_flight.c.call_id == call_id
                )
            )
        if remaining_requests is None and remaining_tokens is None:
            return
        for _ in range(_CAS_ATTEMPTS):
            now = utcnow()
            with self.begin() as conn:
                row = _row(conn, provider, limits, now)
                requests, tokens = _refilled(row, limits, now)
                if remaining_requests is not None:
                    requests = min(requests, float(remaining_requests))
                if remaining_tokens is not None:
                    tokens = min(tokens, float(remaining_tokens))
                values = {"requests_left": requests, "tokens_left": tokens, "refilled_at": now}
                if update_if_unchanged(conn, provider_rate_limits, row, _AS_READ, values):
                    return

    def throttle(
        self,
        provider: str,
        limits: RateLimits,
        retry_after: float | None,
        *,
        longest_s: float = MAX_PROVIDER_WAIT_S,
    ) -> None:
        """A 429: the buckets are empty, and nobody calls before ``retry_after`` (default 1 s).

        The pause is never longer than ``longest_s`` (what a provider may ask for), nor negative.
        """
        now = utcnow()
        asked = retry_after if retry_after is not None and math.isfinite(retry_after) else 1.0
        pause = now + timedelta(seconds=min(max(asked, 0.0), longest_s))
        with self.begin() as conn:
            _row(conn, provider, limits, now)
            conn.execute(
                provider_rate_limits.update()
                .where(provider_rate_limits.c.provider == provider)
                .values(requests_left=0.0, tokens_left=0.0, refilled_at=now, paused_until=pause)
            )

    def calls_in_flight(self, provider: str) -> int:
        with self.engine.connect() as conn:
            return _in_flight(conn, provider, utcnow())
