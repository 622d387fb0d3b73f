"""The append-only, hash-chained audit trail.

Each row carries the SHA-256 of the row before it (``prev_hash``) and its own hash over its content
and ``prev_hash``. Changing or deleting a row breaks the chain at that point; :func:`verify_chain`
finds the first broken link. The application only ever INSERTs here.

The trail records what happened, for people and for :func:`verify_chain`; it is not working state,
so no hot path reads it back. :class:`AuditStore` is the business store's door to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from agentforge_dagster.persistence.schema import audit_log
from agentforge_dagster.persistence.sql import StoreConcern

GENESIS_HASH = "0" * 64
_APPEND_ATTEMPTS = 20


def _row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + canonical).encode("ascii")).hexdigest()


class EventContext(TypedDict, total=False):
    """What an event is about, each part optional, and its details (any JSON-able mapping)."""

    order_id: str | None
    step: str | None
    attempt: int | None
    run_id: str | None
    detail: dict[str, Any] | None


_SUBJECT = ("order_id", "step", "attempt", "run_id")  # stored as given (``detail`` as JSON text)
_HASHED = ("ts", "event", *_SUBJECT, "detail")  # the columns a row's hash covers


def _hashed_fields(row: Any) -> dict[str, Any]:
    return {name: row[name] for name in _HASHED}


def append(conn: Connection, event: str, **context: Unpack[EventContext]) -> str:
    """Append one event to the chain inside the caller's transaction; returns the row's hash.

    Two writers racing for the same predecessor collide on the unique ``prev_hash``; the loser
    re-reads the head and tries again, so the chain never forks.
    """
    fields = {
        "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
        "event": event,
        **{name: context.get(name) for name in _SUBJECT},
        "detail": json.dumps(context.get("detail") or {}, sort_keys=True, default=str),
    }
    for _ in range(_APPEND_ATTEMPTS):
        head = conn.execute(
            select(audit_log.c.row_hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).scalar_one_or_none()
        prev_hash = head or GENESIS_HASH
        row_hash = _row_hash(prev_hash, fields)
        try:
            with conn.begin_nested():
                conn.execute(
                    audit_log.insert().values(**fields, prev_hash=prev_hash, row_hash=row_hash)
                )
        except IntegrityError:
            continue
        return row_hash
    raise RuntimeError("audit chain: could not append after repeated contention")


@dataclass(frozen=True)
class ChainReport:
    rows: int
    ok: bool
    first_broken_seq: int | None = None
    reason: str | None = None


def verify_chain(conn: Connection) -> ChainReport:
    """Walk the chain in order; report the first row whose link or content does not check out."""
    prev_hash = GENESIS_HASH
    count = 0
    for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings():
        count += 1
        if row["prev_hash"] != prev_hash:
            return ChainReport(
                count, False, row["seq"], "link broken: the row before it was changed or deleted"
            )
        if _row_hash(prev_hash, _hashed_fields(row)) != row["row_hash"]:
            return ChainReport(count, False, row["seq"], "content changed after it was written")
        prev_hash = row["row_hash"]
    return ChainReport(count, True)


class AuditStore(StoreConcern):
    """Business events appended to the chain, the trail read back, and the chain checked."""

    def record_event(self, event_name: str, **context: Unpack[EventContext]) -> None:
        """Append one event to the chain in a transaction of its own."""
        with self.begin() as conn:
            append(conn, event_name, **context)

    def audit_rows(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(audit_log).order_by(audit_log.c.seq)
        if order_id is not None:
            query = query.where(audit_log.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [
                {**row, "detail": json.loads(row["detail"])}
                for row in conn.execute(query).mappings()
            ]

    def stored_events(self, event_name: str) -> list[dict[str, Any]]:
        """When each ``event_name`` event happened and its detail as stored (JSON text), for
        figures counted over a day; not for a hot path, which never reads the trail."""
        query = select(audit_log.c.ts, audit_log.c.detail).where(audit_log.c.event == event_name)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def event_count(self, event_name: str) -> int:
        """How many times ``event_name`` was recorded (an indexed count, not a scan)."""
        with self.engine.connect() as conn:
            query = (
                select(func.count()).select_from(audit_log).where(audit_log.c.event == event_name)
            )
            return int(conn.execute(query).scalar_one())

    def verify_audit(self) -> ChainReport:
        with self.engine.connect() as conn:
            return verify_chain(conn)
