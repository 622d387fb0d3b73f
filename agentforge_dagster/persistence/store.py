"""The business store: one object over the business database, composed of one store per concern.

SQLAlchemy Core over any URL (SQLite by default, PostgreSQL in production). Callers hold one
:class:`BusinessStore` and go through the concern a call is about — ``store.orders`` (orders and
their state machine, :mod:`.orders`), ``store.leases`` (runners' leases on orders, :mod:`.leases`),
``store.deliveries`` (deliveries and the ledger, :mod:`.deliveries`), ``store.dead_letters``
(dead letters and replays, :mod:`.dead_letters`), ``store.review`` (the review gate's holds,
:mod:`.review_holds`), ``store.model_calls`` (model calls, stored answers and the budget,
:mod:`.model_calls`), ``store.audit`` (the audit trail, :mod:`.audit`), ``store.outbox`` (order
events for the brokers, :mod:`.outbox`), ``store.breakers`` (providers' circuit breakers,
:mod:`.breakers`) and ``store.rate_limits`` (providers' rate limits, :mod:`.rate_limits`) — each a
small class over the one engine they share. This module keeps what concerns the database as a
whole: the engine's settings, the schema's migrations and the integrity check.
"""

from __future__ import annotations

import fcntl
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from agentforge_dagster import tracing
from agentforge_dagster.domain.runs import ORDER_TAG, TRACE_TAG
from agentforge_dagster.persistence import sql, traces
from agentforge_dagster.persistence.audit import AuditStore
from agentforge_dagster.persistence.breakers import BreakerStore
from agentforge_dagster.persistence.dead_letters import DeadLetterStore
from agentforge_dagster.persistence.deliveries import DeliveryStore
from agentforge_dagster.persistence.leases import LeaseStore
from agentforge_dagster.persistence.model_calls import ModelCallStore
from agentforge_dagster.persistence.orders import OrderRecord, OrderStore
from agentforge_dagster.persistence.outbox import OutboxStore
from agentforge_dagster.persistence.rate_limits import RateLimitStore
from agentforge_dagster.persistence.review_holds import ReviewHoldStore
from agentforge_dagster.tracing import OrderTrace

__all__ = ["MIGRATIONS", "BusinessStore", "OrderRecord", "make_engine"]

MIGRATIONS = Path(__file__).with_name("migrations")
# The PostgreSQL advisory lock every upgrader of the business schema takes (any fixed bigint does:
# this one spells "AgFoMigr"); only our upgraders use it.
MIGRATION_LOCK_KEY = 0x4167466F4D696772


def make_engine(url: str) -> Engine:
    """An engine with the settings each dialect needs for several writer processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _lock_for_migration(conn: Connection) -> None:
    """Wait for the migration lock until the transaction ends (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """The SQLite counterpart: a lock file beside the database (two ``agentforge run`` started
    at once on a new home both upgrade it; one waits for the other)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with Path(f"{database}.upgrade.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class BusinessStore:
    """The business database: one store per concern over one engine, and the schema they share."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.orders = OrderStore(engine)
        self.leases = LeaseStore(engine)
        self.deliveries = DeliveryStore(engine)
        self.dead_letters = DeadLetterStore(engine)
        self.review = ReviewHoldStore(engine)
        self.model_calls = ModelCallStore(engine)
        self.audit = AuditStore(engine)
        self.outbox = OutboxStore(engine)
        self.breakers = BreakerStore(engine)
        self.rate_limits = RateLimitStore(engine)

    @classmethod
    def from_url(cls, url: str) -> BusinessStore:
        return cls(make_engine(url))

    @classmethod
    def opened(cls, url: str) -> BusinessStore:
        """The store at ``url`` with its tables brought up to date: what a command works on."""
        store = cls.from_url(url)
        store.upgrade()
        return store

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction over the whole database: committed when the block ends, rolled back if
        it raises."""
        with self.engine.begin() as conn:
            yield conn

    def order_trace(self, order_id: str) -> OrderTrace:
        """Where the order's spans go: its trace, under its current episode's root
        (:mod:`.traces`); the deployment's id is read once per process."""
        with self.engine.connect() as conn:
            return traces.order_trace(conn, order_id)

    def run_tags(self, order_id: str) -> dict[str, str]:
        """The tags every run of the order carries: its id, and its trace id when tracing is on."""
        tags = {ORDER_TAG: order_id}
        if tracing.enabled():
            tags[TRACE_TAG] = self.order_trace(order_id).trace_id_hex
        return tags

    def integrity_problem(self) -> str | None:
        """What is wrong with the database file or tables, or None when it reads back whole
        (:func:`~agentforge_dagster.persistence.sql.integrity_problem`)."""
        return sql.integrity_problem(self.engine)

    def upgrade(self) -> None:
        """Bring the business tables to the newest Alembic revision (the only way tables are made).

        Safe when several processes start at once (a fresh stack's services, a CLI command): on
        PostgreSQL each takes the same advisory lock first, in the migration's own transaction, so
        they go one at a time and the later ones find the schema at head; the lock goes with the
        commit. Without it two upgraders of an empty database both create ``alembic_version``
        and one fails (``tests/persistence/test_migrations_concurrent.py``).
        """
        if self.schema_revision_if_known() == head_revision():
            return  # at head: no need to load Alembic and every migration (most commands)
        from alembic import command as alembic_command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with _sqlite_file_lock(self.engine), self.engine.begin() as conn:
            _lock_for_migration(conn)
            config.attributes["connection"] = conn
            alembic_command.upgrade(config, "head")

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def schema_revision_if_known(self) -> str | None:
        """The revision recorded in ``alembic_version``, without Alembic; None if there is none."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError:
            return None  # a new database: no table yet
        return str(rows[0][0]) if len(rows) == 1 else None


@functools.cache
def head_revision() -> str:
    """The newest migration's revision, read from the migration files' headers.

    Alembic would import every migration to say so; this reads their ``revision`` and
    ``down_revision`` lines. ``tests/persistence/test_migrations.py`` checks it against Alembic's.
    """
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text()
        revision = re.search(r'^revision\s*=\s*"([^"]+)"', source, re.MULTILINE)
        parent = re.search(r'^down_revision\s*=\s*"([^"]+)"', source, re.MULTILINE)
        if revision:
            revisions.add(revision.group(1))
        if parent:
            parents.add(parent.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the business schema's migrations have heads {sorted(heads)}")
    return heads.pop()
