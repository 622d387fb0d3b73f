"""Alembic migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from agentforge_dagster.persistence.schema import metadata
from agentforge_dagster.persistence.store import BusinessStore


def differences(store: BusinessStore) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_sqlite_schema_matches_the_declared_tables(store: BusinessStore) -> None:
    assert store.schema_revision() == "0011"
    assert differences(store) == []


def test_postgres_schema_matches_the_declared_tables(pg_store: BusinessStore) -> None:
    assert pg_store.schema_revision() == "0011"
    assert differences(pg_store) == []
    pg_store.upgrade()  # a second upgrade is a no-op
    assert pg_store.schema_revision() == "0011"
