"""Circuit breakers of the model providers, kept in the business database for every worker.

A provider (``name:model``) that fails transiently ``threshold`` times within ``window`` seconds —
across all orders, runs and hosts, without a success in between — is **open** for ``cooldown``
seconds: calls go straight to the next provider of the chain. Then the first caller takes the one
**probe** (``half_open``): its success closes the breaker, its failure opens it again. Every open
and close is an audit event (``breaker_opened``, ``breaker_closed``), written in the transaction
that changes the state. Each change is a compare-and-set on the row, so two workers never both
open a breaker or both take its probe. When a breaker opens is plain policy
(:class:`~agentforge_dagster.domain.limits.BreakerPolicy`); this module keeps the breakers' state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select

from agentforge_dagster.domain.limits import BreakerPolicy
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.schema import provider_breakers
from agentforge_dagster.persistence.sql import (
    StoreConcern,
    as_utc,
    dialect_insert,
    update_if_unchanged,
)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Breaker:
    provider: str
    state: BreakerState
    failures: int
    open_until: datetime | None
    probe_at: datetime | None
    updated_at: datetime


def _row(conn: Connection, provider: str) -> Any:
    return conn.execute(
        select(provider_breakers).where(provider_breakers.c.provider == provider).with_for_update()
    ).one_or_none()


_CAS_ATTEMPTS = 20


# A breaker's row is as read while these are (the key first): the compare-and-set's columns.
_AS_READ = ("provider", "state", "failures", "updated_at")


class BreakerStore(StoreConcern):
    """Shared breaker state: may a provider be called, and what its calls did."""

    def breaker_allows(self, provider: str, policy: BreakerPolicy) -> bool:
        """Whether a call may go to ``provider`` now (a half-open breaker lets one probe through)."""
        if policy.threshold <= 0:
            return True
        now = utcnow()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(provider_breakers).where(provider_breakers.c.provider == provider)
            ).one_or_none()
        if row is None or row.state == BreakerState.CLOSED:
            return True
        open_until, probe_at = as_utc(row.open_until), as_utc(row.probe_at)
        if row.state == BreakerState.OPEN and open_until is not None and now < open_until:
            return False
        if (
            row.state == BreakerState.HALF_OPEN
            and probe_at is not None
            and now - probe_at < timedelta(seconds=policy.probe_timeout_s)
        ):
            return False  # someone's probe is out
        probe = {"state": BreakerState.HALF_OPEN.value, "probe_at": now, "updated_at": now}
        with self.begin() as conn:  # take the probe: one caller wins the compare-and-set
            return update_if_unchanged(conn, provider_breakers, row, _AS_READ, probe)

    def breaker_failed(self, provider: str, policy: BreakerPolicy, *, error: str) -> BreakerState:
        """Count a transient failure; open the breaker at the threshold, or after a failed probe."""
        if policy.threshold <= 0:
            return BreakerState.CLOSED
        for _ in range(_CAS_ATTEMPTS):
            now = utcnow()
            with self.begin() as conn:
                row = _row(conn, provider)
                if row is None:
                    conn.execute(
                        dialect_insert(conn, provider_breakers)
                        .values(
                            provider=provider,
                            state=BreakerState.CLOSED.value,
                            failures=0,
                            window_started_at=now,
                            updated_at=now,
                        )
                        .on_conflict_do_nothing()
                    )
                    row = _row(conn, provider)
                state = BreakerState(row.state)
                window_start = as_utc(row.window_started_at)
                fresh = window_start is not None and now - window_start <= timedelta(
                    seconds=policy.window_s
                )
                failures = row.failures + 1 if fresh else 1
                values: dict[str, Any] = {"failures": failures, "updated_at": now}
                if not fresh:
                    values["window_started_at"] = now
                opens = (state is BreakerState.CLOSED and failures >= policy.threshold) or (
                    state is BreakerState.HALF_OPEN
                )
                if opens:
                    values.update(
                        state=BreakerState.OPEN.value,
                        open_until=now + timedelta(seconds=policy.cooldown_s),
                        probe_at=None,
                    )
                if not update_if_unchanged(conn, provider_breakers, row, _AS_READ, values):
                    continue  # another worker changed it first (SQLite has no FOR UPDATE)
                if not opens:
                    return state
                after = (
                    "a failed probe"
                    if state is BreakerState.HALF_OPEN
                    else f"{failures} transient failures within {policy.window_s:g} s"
                )
                audit.append(
                    conn,
                    "breaker_opened",
                    detail={
                        "provider": provider,
                        "after": after,
                        "cooldown_s": policy.cooldown_s,
                        "error": error[:300],
                    },
                )
                return BreakerState.OPEN
        raise RuntimeError(f"circuit breaker {provider!r}: kept changing under concurrent writers")

    def breaker_succeeded(self, provider: str, policy: BreakerPolicy) -> None:
        """A call answered: the failure count starts again, and an open breaker closes."""
        if policy.threshold <= 0:
            return
        for _ in range(_CAS_ATTEMPTS):
            now = utcnow()
            with self.begin() as conn:
                row = _row(conn, provider)
                if row is None or (row.state == BreakerState.CLOSED and row.failures == 0):
                    return  # the common case: one read, no write
                values = {
                    "state": BreakerState.CLOSED.value,
                    "failures": 0,
                    "window_started_at": now,
                    "open_until": None,
                    "probe_at": None,
                    "updated_at": now,
                }
                if not update_if_unchanged(conn, provider_breakers, row, _AS_READ, values):
                    continue
                if row.state != BreakerState.CLOSED:
                    audit.append(
                        conn,
                        "breaker_closed",
                        detail={"provider": provider, "was": row.state, "after": "a call answered"},
                    )
                return

    def breakers(self) -> list[Breaker]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(provider_breakers).order_by(provider_breakers.c.provider))
            return [
                Breaker(
                    provider=row.provider,
                    state=BreakerState(row.state),
                    failures=row.failures,
                    open_until=as_utc(row.open_until),
                    probe_at=as_utc(row.probe_at),
                    updated_at=as_utc(row.updated_at) or row.updated_at,
                )
                for row in rows
            ]
