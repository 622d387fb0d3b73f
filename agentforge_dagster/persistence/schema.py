"""Business tables, declared once with SQLAlchemy Core; the same code serves SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()


def _order_id(**options: Any) -> Column[Any]:
    """The order a row is about: one column definition for every table that names an order."""
    return Column("order_id", String(64), **options)


def _run_id(**options: Any) -> Column[Any]:
    """The Dagster run a row comes from."""
    return Column("run_id", String(64), **options)


def _step(name: str, **options: Any) -> Column[Any]:
    """The name of a step (plan, draft, review...)."""
    return Column(name, String(40), **options)


def _moment(name: str, *, nullable: bool = False) -> Column[Any]:
    """A point in time, time zone included; required unless said otherwise."""
    return Column(name, DateTime(timezone=True), nullable=nullable)


def _answered_by() -> list[Column[Any]]:
    """The provider and the model a model call went to, and the model the answer said answered
    (None: it did not say; migration 0013)."""
    return [
        Column("provider", String(40), nullable=False),
        Column("model", String(120), nullable=False),
        Column("served_model", String(120)),
    ]


def _usage() -> list[Column[Any]]:
    """What a model call used and cost."""
    return [
        Column("input_tokens", Integer, nullable=False),
        Column("output_tokens", Integer, nullable=False),
        Column("cost_usd", Numeric(12, 6), nullable=False),
    ]


orders = Table(
    "orders",
    metadata,
    _order_id(primary_key=True),
    Column("customer", String(200), nullable=False),
    Column("service", String(40), nullable=False),
    Column("brief", Text, nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("status", String(20), nullable=False, index=True),
    _step("failed_step"),
    Column("last_error", Text),
    _moment("created_at"),
    _moment("updated_at"),
    Column("failed_error_class", String(20)),
    _moment("launch_requested_at", nullable=True),  # first claimed by the queue sensor
    Column("require_approval", Boolean, nullable=False, server_default=false()),
    # The runner working on the order (persistence/leases.py): its run, who it is, and until when
    # its claim holds unless renewed. Cleared when the order leaves processing.
    Column("lease_run_id", String(80)),
    Column("lease_holder", String(300)),
    _moment("lease_until", nullable=True),
    # The order's trace episodes (agentforge_dagster/tracing/ids.py): how many times a replay
    # took it out of its dead letter, and when the current episode began (None: at intake).
    Column("episode", Integer, nullable=False, server_default="0"),
    _moment("episode_started_at", nullable=True),
)

rejected_orders = Table(
    "rejected_orders",
    metadata,
    Column("rejection_id", Integer, primary_key=True, autoincrement=True),
    _moment("received_at"),
    Column("source", String(500), nullable=False),
    Column("payload", Text, nullable=False),
    Column("errors", Text, nullable=False),
    # The broker message it came from (rabbitmq:/redis: ...): a redelivery is not recorded twice.
    Column("message_key", String(300)),
    UniqueConstraint("message_key", name="uq_rejected_orders_message_key"),
)

deliveries = Table(
    "deliveries",
    metadata,
    _order_id(primary_key=True),
    Column("delivery_id", String(64), nullable=False, unique=True),
    Column("location", Text, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    _moment("delivered_at"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    _order_id(nullable=False),
    Column("invoice_id", String(64), nullable=False),
    Column("customer", String(200), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    _moment("created_at"),
    UniqueConstraint("order_id", name="uq_ledger_order"),
    UniqueConstraint("invoice_id", name="uq_ledger_invoice"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ts", String(40), nullable=False),  # ISO-8601 UTC text: hashed as written
    Column("event", String(40), nullable=False, index=True),
    _order_id(index=True),
    _step("step"),
    Column("attempt", Integer),
    _run_id(),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
    # One successor per row: two writers racing on the chain cannot both append after the same row.
    UniqueConstraint("prev_hash", name="uq_audit_prev_hash"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    _order_id(primary_key=True),
    _run_id(nullable=False),
    _step("failed_step", nullable=False),
    Column("error_class", String(20), nullable=False),
    Column("error_type", String(80), nullable=False),
    Column("message", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("replays", Integer, nullable=False, server_default="0"),
    _moment("dead_lettered_at"),
    Column("replay_requested_at", DateTime(timezone=True)),
    Column("replay_run_key", String(120)),
    Column("replay_from", String(40)),  # a step named by whoever asked for the replay
    Column("worker_output", Text),  # the run container's last lines, when it died around steps
)

model_calls = Table(
    "model_calls",
    metadata,
    Column("call_id", Integer, primary_key=True, autoincrement=True),
    _order_id(nullable=False, index=True),
    _step("step", nullable=False),
    _run_id(nullable=False),
    Column("attempt", Integer, nullable=False),
    *_answered_by(),
    *_usage(),
    Column("latency_s", Float, nullable=False),
    _moment("started_at"),
    _moment("ended_at"),
    Column("cache_hit", Boolean, nullable=False, server_default=false()),
    Column("cache_key", String(64)),  # the model_responses row paid for or reused
)

# A paid model call in flight: its worst-case cost, held against the month's cap until the real cost
# is recorded (same transaction) or the call fails. An expired row is a crashed caller's.
budget_reservations = Table(
    "budget_reservations",
    metadata,
    Column("reservation_id", Integer, primary_key=True, autoincrement=True),
    Column("month", String(7), nullable=False, index=True),
    Column("amount_usd", Numeric(12, 6), nullable=False),
    _order_id(nullable=False),
    _step("step", nullable=False),
    _moment("created_at"),
    _moment("expires_at"),
)

model_responses = Table(
    "model_responses",
    metadata,
    Column("cache_key", String(64), primary_key=True),  # SHA-256 of provider, model, request
    *_answered_by(),
    Column("text", Text, nullable=False),
    *_usage(),
    _moment("created_at"),
)

budgets = Table(
    "budgets",
    metadata,
    Column("month", String(7), primary_key=True),  # YYYY-MM, or "default"
    Column("cap_usd", Numeric(12, 2), nullable=False),
    _moment("set_at"),
)

review_holds = Table(
    "review_holds",
    metadata,
    Column("hold_id", Integer, primary_key=True, autoincrement=True),
    _order_id(nullable=False, index=True),
    _run_id(nullable=False),
    Column("kind", String(20), nullable=False),  # quarantined | awaiting_approval
    _step("step", nullable=False),  # the step that held it
    Column("findings", Text, nullable=False),  # JSON: [{rule, action, reason}]
    Column("draft", Text),  # the held deliverable as Markdown (none when the model refused)
    Column("model", String(120)),
    _moment("held_at"),
    Column("decision", String(20)),  # approve | edit | redrive | reject, once
    Column("decided_by", String(200)),
    _moment("decided_at", nullable=True),
    Column("note", Text),
    Column("edited_text", Text),
    Column("redrive_model", String(300)),
    _moment("escalated_at", nullable=True),
)

# The transactional outbox: one event per state change a client hears about, written in the
# transaction of the change, sent to each configured broker and marked sent once it confirmed.
order_events = Table(
    "order_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    _order_id(nullable=False, index=True),
    Column("state", String(20), nullable=False),
    Column("payload", Text, nullable=False),  # the event as published (JSON, schema-versioned)
    _moment("created_at"),
    _moment("rabbitmq_sent_at", nullable=True),
    _moment("redis_sent_at", nullable=True),
)

# The last success and the last error of each broker channel (intake or events, per broker).
broker_health = Table(
    "broker_health",
    metadata,
    Column("channel", String(40), primary_key=True),
    _moment("last_ok_at", nullable=True),
    Column("last_error", Text),
    _moment("last_error_at", nullable=True),
)

# A circuit breaker per model provider ("name:model"), shared by every run worker and host.
provider_breakers = Table(
    "provider_breakers",
    metadata,
    Column("provider", String(200), primary_key=True),
    Column("state", String(10), nullable=False),  # closed | open | half_open
    Column("failures", Integer, nullable=False),  # transient failures in the current window
    _moment("window_started_at"),
    _moment("open_until", nullable=True),
    _moment("probe_at", nullable=True),  # when the one probe call of a half-open breaker began
    _moment("updated_at"),
)

# Shared rate limits: what is left of each provider's request and token buckets ...
provider_rate_limits = Table(
    "provider_rate_limits",
    metadata,
    Column("provider", String(200), primary_key=True),
    Column("requests_left", Float, nullable=False),
    Column("tokens_left", Float, nullable=False),
    _moment("refilled_at"),
    _moment("paused_until", nullable=True),  # a 429's Retry-After
)

# ... and its calls under way (an expired row is a dead worker's: its slot is free again).
provider_calls_in_flight = Table(
    "provider_calls_in_flight",
    metadata,
    Column("call_id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(200), nullable=False, index=True),
    Column("tokens", Integer, nullable=False),
    _moment("started_at"),
    _moment("expires_at"),
)

# The deployment this database is the business record of: one row, made by its first migration to
# have it. Traces derive their ids from it (agentforge_dagster/tracing/ids.py), so two deployments'
# orders never share a trace and a restored backup keeps its orders' traces.
deployment = Table(
    "deployment",
    metadata,
    Column("deployment_id", String(64), primary_key=True),
    _moment("created_at"),
)
