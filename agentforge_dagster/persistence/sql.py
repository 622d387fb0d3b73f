"""What every concern of the business store shares: one engine, and inserts the database settles.

Each concern (orders, leases, deliveries, dead letters, review holds, model calls, audit, outbox,
breakers, rate limits) is a small :class:`StoreConcern` over the same engine;
:class:`~agentforge_dagster.persistence.store.BusinessStore` holds one of each (``store.orders``,
``store.deliveries``, …), and a concern's write that touches another's tables calls that module's
functions on the connection it holds, so the whole write stays one transaction. Writers in
several processes race on the same keys, so a write that may collide is one statement whose
conflict clause says what happens (``INSERT … ON CONFLICT``), never a read followed by a write:
the database's unique keys decide, inside the writer's own transaction, with no window between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, inspect, select, text
from sqlalchemy import table as table_named
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError


class StoreConcern:
    """The engine one concern of the store works on; the concerns of one store share it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.engine.begin() as conn:
            yield conn


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime (SQLite hands them back naive)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def update_if_unchanged(
    conn: Connection, table: Table, row: Any, columns: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Compare-and-set: update the row whose ``columns`` still hold what ``row`` read (the first
    column is its key). False when another writer changed it first: read again and retry. Works
    where ``FOR UPDATE`` does not (SQLite)."""
    condition = [table.c[name] == getattr(row, name) for name in columns]
    return conn.execute(table.update().where(*condition).values(**values)).rowcount == 1


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ``on_conflict_do_update`` / ``on_conflict_do_nothing`` on this dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(
        f"the business store supports PostgreSQL and SQLite, not {conn.dialect.name!r}"
    )


def insert_once(conn: Connection, table: Table, values: dict[str, Any], key: str) -> dict[str, Any]:
    """Insert ``values`` unless a row with the same unique key exists; return the row kept.

    The first writer wins: a repeat, or a writer racing it, inserts nothing and reads the first
    writer's row. Any unique key of the table counts as the conflict (``deliveries`` and ``ledger``
    have two), so a racing writer never fails on the second one.
    """
    conn.execute(dialect_insert(conn, table).values(**values).on_conflict_do_nothing())
    row = conn.execute(select(table).where(table.c[key] == values[key])).mappings().one()
    return dict(row)


def integrity_problem(engine: Engine) -> str | None:
    """What is wrong with the database file or tables, or None when it reads back whole.

    SQLite runs ``PRAGMA integrity_check`` over every page. PostgreSQL checks each page it reads
    (its header, and its checksum where the cluster has them), so every table is read whole; where
    the ``amcheck`` extension is installed, every B-tree index is checked against its rules too.
    A database that cannot even be opened is a problem too.
    """
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                found = [str(row[0]) for row in conn.execute(text("PRAGMA integrity_check"))]
                return None if found == ["ok"] else "; ".join(found[:5])[:500]
            for name in inspect(conn).get_table_names():
                conn.execute(select(func.count()).select_from(table_named(name))).scalar_one()
            has_amcheck = conn.execute(
                text("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")
            ).scalar_one()
            if has_amcheck:
                conn.execute(
                    text(
                        "SELECT bt_index_check(c.oid) FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_am a ON a.oid = c.relam "
                        "WHERE a.amname = 'btree' AND c.relnamespace = current_schema()::regnamespace"
                    )
                ).all()
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:500]
    return None
