"""Our small error hierarchy: every failure is either worth retrying (transient) or not (permanent).

The orchestration layer maps the two classes onto Dagster's retry machinery; nothing else decides
whether an error is retried.
"""

from __future__ import annotations


class AgentForgeError(Exception):
    """Base of every error this project raises on purpose."""

    error_class = "error"


class TransientError(AgentForgeError):
    """A failure that may pass if the same step is tried again (timeouts, overload, injected faults).

    ``retry_after`` is a server-provided wait in seconds, when one was given.
    """

    error_class = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderRateLimited(TransientError):
    """The provider (its 429) or our shared limit says: not now; ``retry_after`` says for how long."""


class ModelCallTimeout(TransientError):
    """A model call that did not answer within the step's deadline."""


class PermanentError(AgentForgeError):
    """A failure that retrying cannot fix (invalid input, refused content, exhausted revisions)."""

    error_class = "permanent"


class InjectedFault(TransientError):
    """A transient failure raised on purpose by fault injection, to exercise and measure retries."""


class InjectedPermanentFault(PermanentError):
    """A permanent failure raised on purpose by a drill: the path of errors no retry can fix."""


class InvalidOrder(PermanentError):
    """An order that does not pass intake validation; ``errors`` names each offending field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid order: " + "; ".join(errors))
        self.errors = errors


class MissingArtifact(PermanentError):
    """A step's input artifact is not in the artifact store (deleted, or the store lost it).

    Trying the same step again cannot bring it back; a replay re-runs the step that makes it.
    """

    def __init__(self, order_id: str, step: str, location: str) -> None:
        super().__init__(
            f"the {step} artifact of order {order_id!r} is missing at {location}; a replay "
            f"(agentforge dlq replay {order_id}) re-runs from the earliest step whose output is gone"
        )
        self.order_id = order_id
        self.step = step
        self.location = location


class UnknownOrder(PermanentError):
    """A run was asked to process an order the business store does not hold."""


class IllegalTransition(PermanentError):
    """An order was asked to move between two states the state machine does not connect."""


class AlreadySubmitted(IllegalTransition):
    """The same order (same id, same content) was submitted before: nothing to do again."""

    def __init__(self, order_id: str, status: str) -> None:
        super().__init__(f"order {order_id!r} was already submitted (now {status})")
        self.order_id = order_id
        self.status = status


class OrderIdTaken(InvalidOrder):
    """An order id already used by a different order: refused, the first one is kept."""

    def __init__(self, order_id: str) -> None:
        super().__init__(
            [f"order_id: {order_id!r} is already used by a different order (choose another id)"]
        )


class ContentRefusal(PermanentError):
    """A model or its provider refused the request on content grounds: the order is held for a
    person (quarantined), not failed — another model or an instruction may do it."""


class OrderTaken(AgentForgeError):
    """Another runner holds the order (its lease is live), or it is no longer this run's to work
    on (finished, or taken back from a runner that stopped renewing its lease). The run stops; the
    order is not this run's failure and is left as it is."""

    error_class = "taken"


class BudgetExhausted(AgentForgeError):
    """The next paid model call would exceed the month's model budget: pause, do not fail."""

    error_class = "budget"
