"""The review gate's holds: orders waiting for a person, and the one decision each gets.

An order is held (``quarantined`` or ``awaiting_approval``) together with a ``review_holds`` row —
the findings, the held draft as Markdown, the model that wrote it — and a letter of class
``review``, in one transaction. A decision is a conditional update of the open hold (``decision IS
NULL``) after locking the order's row: of two people deciding at once one wins and the other is
told who did. Approve, edit and re-drive mark the letter for a replay through the one replay
mechanism (from ``delivery``, or from ``draft`` for a re-drive); reject closes the order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, select

from agentforge_dagster.domain.errors import PermanentError, UnknownOrder
from agentforge_dagster.domain.limits import MAX_EDITED_CHARS
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.policy import Finding
from agentforge_dagster.domain.state import HELD_STATUSES, OrderStatus
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.dead_letters import mark_for_replay, park_letter
from agentforge_dagster.persistence.orders import lock_order, transition_in
from agentforge_dagster.persistence.schema import review_holds
from agentforge_dagster.persistence.sql import StoreConcern

Decision = Literal["approve", "edit", "redrive", "reject"]
HoldKind = Literal["quarantined", "awaiting_approval"]
DECISIONS: tuple[Decision, ...] = ("approve", "edit", "redrive", "reject")
# Where the replay of a decision starts: approve and edit deliver what is held; re-drive drafts anew.
REPLAY_FROM: dict[str, str] = {"approve": "delivery", "edit": "delivery", "redrive": "draft"}


class DecisionRefused(PermanentError):
    """A decision that cannot be taken: the order is not held, someone decided first, or the
    decision does not fit the hold (approving a draft the model never wrote)."""


@dataclass(frozen=True)
class Hold:
    """One hold of an order, as the store keeps it."""

    hold_id: int
    order_id: str
    run_id: str
    kind: HoldKind
    step: str
    findings: list[dict[str, str]]
    draft: str | None
    model: str | None
    held_at: datetime
    decision: Decision | None
    decided_by: str | None
    decided_at: datetime | None
    note: str | None
    edited_text: str | None
    redrive_model: str | None
    escalated_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Hold:
        values = {**dict(row), "findings": json.loads(row["findings"])}
        for moment in ("held_at", "decided_at", "escalated_at"):  # SQLite returns naive UTC
            if values[moment] is not None and values[moment].tzinfo is None:
                values[moment] = values[moment].replace(tzinfo=UTC)
        return cls(**values)

    @property
    def reasons(self) -> list[str]:
        return [finding["reason"] for finding in self.findings]


def _newest_hold(conn: Connection, order_id: str) -> Any:
    return (
        conn.execute(
            select(review_holds)
            .where(review_holds.c.order_id == order_id)
            .order_by(review_holds.c.hold_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )


class ReviewHoldStore(StoreConcern):
    """Hold an order for a person, take their decision once, and read what waits."""

    def hold_for_review(
        self,
        order_id: str,
        *,
        run_id: str,
        kind: HoldKind,
        step: str,
        findings: list[Finding],
        draft: str | None,
        model: str | None,
    ) -> int:
        """Hold a processing order for a person; returns the hold's id.

        Idempotent for the run: a retried step that held the order already gets that hold back.
        """
        reasons = [finding.reason for finding in findings]
        with self.begin() as conn:
            status = lock_order(conn, order_id)
            held = _newest_hold(conn, order_id)
            if (
                status is OrderStatus(kind)
                and held is not None
                and (held["run_id"], held["step"], held["decision"]) == (run_id, step, None)
            ):
                return int(held["hold_id"])
            transition_in(
                conn,
                order_id,
                OrderStatus(kind),
                run_id=run_id,
                step=step,
                detail={"rules": [finding.rule for finding in findings], "reasons": reasons},
            )
            inserted = conn.execute(
                review_holds.insert().values(
                    order_id=order_id,
                    run_id=run_id,
                    kind=kind,
                    step=step,
                    findings=json.dumps([finding.__dict__ for finding in findings]),
                    draft=draft,
                    model=model,
                    held_at=utcnow(),
                )
            ).inserted_primary_key
            assert inserted is not None
            park_letter(
                conn,
                order_id,
                run_id=run_id,
                step=step,
                error_class="review",
                error_type=kind,
                message="; ".join(reasons) or "approval required",
            )
        return int(inserted[0])

    def decide(
        self,
        order_id: str,
        decision: Decision,
        *,
        actor: str,
        note: str | None = None,
        edited_text: str | None = None,
        redrive_model: str | None = None,
    ) -> Hold:
        """Take a person's decision on a held order; returns the hold as decided.

        Raises :class:`DecisionRefused` when the order is not held, when another decision came
        first, or when the decision does not fit (see :func:`_check_fits`).
        """
        with self.begin() as conn:
            status = lock_order(conn, order_id)
            if status is None:
                raise UnknownOrder(f"no order {order_id!r} in the business store")
            row = _newest_hold(conn, order_id)
            if status not in HELD_STATUSES or row is None or row["decision"] is not None:
                raise DecisionRefused(_not_held(order_id, status, row))
            _check_fits(order_id, decision, row, note, edited_text, redrive_model)
            decided_at = utcnow()
            values = {
                "decision": decision,
                "decided_by": actor[:200],
                "decided_at": decided_at,
                "note": note,
                "edited_text": edited_text,
                "redrive_model": redrive_model,
            }
            taken = conn.execute(
                review_holds.update()
                .where(review_holds.c.hold_id == row["hold_id"], review_holds.c.decision.is_(None))
                .values(**values)
            ).rowcount
            if taken != 1:  # only where the database did not lock the order's row
                raise DecisionRefused(f"order {order_id!r} was decided by someone else just now")
            detail = {
                "actor": actor[:200],
                "decision": decision,
                "hold_id": row["hold_id"],
                **({"note": note} if note else {}),
                **({"model": redrive_model} if redrive_model else {}),
                **({"edited_chars": len(edited_text)} if edited_text else {}),
            }
            if decision == "reject":
                transition_in(conn, order_id, OrderStatus.REJECTED, step=row["step"], detail=detail)
            else:
                mark_for_replay(conn, order_id, from_step=REPLAY_FROM[decision], detail=detail)
        return Hold.from_row({**dict(row), **values})

    def latest_hold(self, order_id: str) -> Hold | None:
        """The order's newest hold, decided or not."""
        with self.engine.connect() as conn:
            row = _newest_hold(conn, order_id)
        return Hold.from_row(row) if row is not None else None

    def holds(self, *, waiting: bool = False) -> list[Hold]:
        """Every hold, oldest first; ``waiting``: only those still without a decision."""
        query = select(review_holds).order_by(review_holds.c.hold_id)
        if waiting:
            query = query.where(review_holds.c.decision.is_(None))
        with self.engine.connect() as conn:
            return [Hold.from_row(row) for row in conn.execute(query).mappings()]

    def hold_rows(self) -> list[dict[str, Any]]:
        """Every hold's order, kind and model, when it was held, and its decision and when,
        oldest first: what the review gate's figures are made of."""
        query = select(
            review_holds.c.order_id,
            review_holds.c.kind,
            review_holds.c.model,
            review_holds.c.held_at,
            review_holds.c.decision,
            review_holds.c.decided_at,
        ).order_by(review_holds.c.hold_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def escalate_overdue(self, waited: timedelta) -> list[str]:
        """Flag the holds waiting longer than ``waited`` (once each, audited); their orders."""
        cutoff = utcnow() - waited
        escalated = []
        with self.begin() as conn:
            overdue = conn.execute(
                select(review_holds.c.hold_id, review_holds.c.order_id)
                .where(
                    review_holds.c.decision.is_(None),
                    review_holds.c.escalated_at.is_(None),
                    review_holds.c.held_at < cutoff,
                )
                .order_by(review_holds.c.hold_id)
            ).all()
            for hold_id, order_id in overdue:
                conn.execute(
                    review_holds.update()
                    .where(review_holds.c.hold_id == hold_id)
                    .values(escalated_at=utcnow())
                )
                audit.append(
                    conn,
                    "review_escalated",
                    order_id=order_id,
                    detail={
                        "hold_id": hold_id,
                        "waited_hours": round(waited.total_seconds() / 3600, 2),
                    },
                )
                escalated.append(order_id)
        return escalated


def _not_held(order_id: str, status: OrderStatus, row: Any) -> str:
    if row is not None and row["decision"] is not None and status not in HELD_STATUSES:
        return (
            f"order {order_id!r} was already decided: {row['decision']} by {row['decided_by']} "
            f"at {row['decided_at']:%Y-%m-%d %H:%M:%S} UTC (it is {status.value} now)"
        )
    return (
        f"order {order_id!r} is {status.value}: only a quarantined or awaiting_approval order "
        "takes a decision"
    )


def _check_fits(
    order_id: str,
    decision: Decision,
    row: Any,
    note: str | None,
    edited_text: str | None,
    redrive_model: str | None,
) -> None:
    if decision not in DECISIONS:
        raise DecisionRefused(f"unknown decision {decision!r}: one of {', '.join(DECISIONS)}")
    if decision in ("approve", "edit") and row["draft"] is None:
        raise DecisionRefused(
            f"order {order_id!r} has no draft to {decision} (the model refused at "
            f"{row['step']}): re-drive it (another model, or an instruction) or reject it"
        )
    if decision == "edit" and not (edited_text and edited_text.strip()):
        raise DecisionRefused("an edit needs the text to deliver (agentforge review edit --file)")
    if decision == "edit" and len(edited_text or "") > MAX_EDITED_CHARS:
        raise DecisionRefused(f"the edited text is over {MAX_EDITED_CHARS:,} characters")
    if decision == "redrive" and not (redrive_model or (note and note.strip())):
        raise DecisionRefused(
            "a re-drive needs another model (--model) or an instruction (--note): the same model "
            "and prompt would give the same answer again, from the response store"
        )
    if decision == "reject" and not (note and note.strip()):
        raise DecisionRefused("a rejection needs a reason (--reason)")
