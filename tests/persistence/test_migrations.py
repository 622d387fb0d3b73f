"""Alembic migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from agentforge_dagster.persistence.schema import metadata
from agentforge_dagster.persistence.store import MIGRATIONS, BusinessStore


def newest_revision() -> str:
    """The head of the migrations folder (one head: a branch would be a defect here too)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    [head] = ScriptDirectory.from_config(config).get_heads()
    return str(head)


def differences(store: BusinessStore) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_sqlite_schema_matches_the_declared_tables(store: BusinessStore) -> None:
    assert store.schema_revision() == newest_revision()
    assert differences(store) == []


def test_postgres_schema_matches_the_declared_tables(pg_store: BusinessStore) -> None:
    assert pg_store.schema_revision() == newest_revision()
    assert differences(pg_store) == []
    pg_store.upgrade()  # a second upgrade is a no-op
    assert pg_store.schema_revision() == newest_revision()


def test_the_head_read_from_the_files_is_alembic_s() -> None:
    from agentforge_dagster.persistence.store import head_revision

    assert head_revision() == newest_revision()


def test_a_store_at_head_is_not_upgraded_again(store: BusinessStore) -> None:
    assert store.schema_revision_if_known() == store.schema_revision() == newest_revision()
    store.upgrade()  # the fast path: Alembic is not needed
    assert store.schema_revision() == newest_revision()
