"""Business tables, declared once with SQLAlchemy Core; the same code serves SQLite and PostgreSQL."""

from __future__ import annotations

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

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer", String(200), nullable=False),
    Column("service", String(40), nullable=False),
    Column("brief", Text, nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("failed_step", String(40)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("failed_error_class", String(20)),
    Column("launch_requested_at", DateTime(timezone=True)),  # first claimed by the queue sensor
)

rejected_orders = Table(
    "rejected_orders",
    metadata,
    Column("rejection_id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source", String(500), nullable=False),
    Column("payload", Text, nullable=False),
    Column("errors", Text, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("delivery_id", String(64), nullable=False, unique=True),
    Column("location", Text, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("invoice_id", String(64), nullable=False),
    Column("customer", String(200), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("order_id", name="uq_ledger_order"),
    UniqueConstraint("invoice_id", name="uq_ledger_invoice"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ts", String(40), nullable=False),  # ISO-8601 UTC text: hashed as written
    Column("event", String(40), nullable=False, index=True),
    Column("order_id", String(64), index=True),
    Column("step", String(40)),
    Column("attempt", Integer),
    Column("run_id", String(64)),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
    # One successor per row: two writers racing on the chain cannot both append after the same row.
    UniqueConstraint("prev_hash", name="uq_audit_prev_hash"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("failed_step", String(40), nullable=False),
    Column("error_class", String(20), nullable=False),
    Column("error_type", String(80), nullable=False),
    Column("message", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("replays", Integer, nullable=False, server_default="0"),
    Column("dead_lettered_at", DateTime(timezone=True), nullable=False),
    Column("replay_requested_at", DateTime(timezone=True)),
    Column("replay_run_key", String(120)),
)

model_calls = Table(
    "model_calls",
    metadata,
    Column("call_id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("step", String(40), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("provider", String(40), nullable=False),
    Column("model", String(120), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", Numeric(12, 6), nullable=False),
    Column("latency_s", Float, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("cache_hit", Boolean, nullable=False, server_default=false()),
)

model_responses = Table(
    "model_responses",
    metadata,
    Column("cache_key", String(64), primary_key=True),  # SHA-256 of provider, model, request
    Column("provider", String(40), nullable=False),
    Column("model", String(120), nullable=False),
    Column("text", Text, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", Numeric(12, 6), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

budgets = Table(
    "budgets",
    metadata,
    Column("month", String(7), primary_key=True),  # YYYY-MM, or "default"
    Column("cap_usd", Numeric(12, 2), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
)
