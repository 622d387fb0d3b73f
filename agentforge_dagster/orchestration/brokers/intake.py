"""The intake, written once for every broker: take a batch, commit each order or refusal, settle.

Each message is acknowledged only after its order or its refusal is committed to the business
store; refused ones are dead-lettered by their broker (:meth:`~.base.Intake.dead_letter`). The
drill ``AGENTFORGE_FAULT_BROKER_CRASH_AFTER`` kills the process between a commit and its
acknowledgement, which the broker answers by delivering the message again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum

from dagster import DagsterInstance
from sqlalchemy.exc import SQLAlchemyError

from agentforge_dagster.domain.errors import AlreadySubmitted, InvalidOrder
from agentforge_dagster.domain.models import load_order_json, parse_order
from agentforge_dagster.orchestration.brokers.base import Broker, BrokerMessage, describe_error
from agentforge_dagster.orchestration.intake import submit_order
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

CRASH_EXIT_CODE = 70  # the intake drill's exit status (AGENTFORGE_FAULT_BROKER_CRASH_AFTER)
NO_ORDER_ID = (
    "message: no order id: the JSON body has no order_id field and the message has no "
    "message_id property (publish with one or the other)"
)


class Taken(StrEnum):
    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"
    REFUSED = "refused"


@dataclass
class IntakeCounts:
    queued: int = 0
    already_queued: int = 0
    refused: int = 0

    def add(self, taken: Taken) -> None:
        setattr(self, taken.value, getattr(self, taken.value) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def take_message(
    store: BusinessStore, instance: DagsterInstance, message: BrokerMessage
) -> tuple[Taken, list[str]]:
    """Queue the order a message carries, or record why it is refused: committed either way.

    The same validation as ``agentforge submit --file`` (same errors, same ``rejected_orders``
    record). Raises only when the business store itself fails (then nothing is acknowledged).
    """
    if message.refusal:  # the broker's envelope holds no order: refused as it is
        errors = list(message.refusal)
    else:
        try:
            raw = load_order_json(message.body)
            if message.publisher_id is None and not (isinstance(raw, dict) and "order_id" in raw):
                raise InvalidOrder([NO_ORDER_ID])
            order = parse_order(raw, default_order_id=message.publisher_id)
            submit_order(
                store, instance, order, source=message.source, traceparent=message.traceparent
            )
            return Taken.QUEUED, []
        except AlreadySubmitted:
            return Taken.ALREADY_QUEUED, []
        except InvalidOrder as exc:
            errors = exc.errors
        except SQLAlchemyError:
            raise  # the store is down: leave the message on the broker for the next tick
        except Exception as exc:  # one odd message must not stop the queue: refuse it, say why
            errors = [f"message: could not be taken ({describe_error(exc)})"]
    if message.key is None and message.redelivered:
        earlier = store.orders.rejection_of(message.source, message.body)
        if earlier is not None:  # recorded before a crash, delivered again
            return Taken.REFUSED, errors
    store.orders.reject(message.body, errors, source=message.source, message_key=message.key)
    return Taken.REFUSED, errors


class _Commits:
    """Counts commits; the drill dies after the Nth, before its acknowledgement."""

    def __init__(self, crash_after: int | None, after_commit: Callable[[int], None] | None):
        self.count = 0
        self.crash_after = crash_after
        self.after_commit = after_commit

    def __call__(self) -> None:
        self.count += 1
        if self.after_commit is not None:
            self.after_commit(self.count)
        if self.crash_after is not None and self.count >= self.crash_after:
            os._exit(CRASH_EXIT_CODE)  # a crash: no cleanup, no acknowledgement, no goodbye


def take_batch(
    broker: Broker,
    store: BusinessStore,
    instance: DagsterInstance,
    settings: AgentForgeSettings,
    *,
    after_commit: Callable[[int], None] | None = None,
) -> IntakeCounts:
    """Take up to ``broker_batch`` messages from ``broker``'s intake; see the package's contract.

    ``after_commit`` (tests) is called with the number of commits so far, before the
    acknowledgement of the last one.
    """
    counts = IntakeCounts()
    commits = _Commits(settings.drills.broker_crash_after, after_commit)
    with broker.intake() as intake:
        for message in intake.messages():
            taken, errors = take_message(store, instance, message)
            commits()
            if taken is Taken.REFUSED:
                intake.dead_letter(message, errors)
            else:
                intake.acknowledge(message)
            counts.add(taken)
    return counts
