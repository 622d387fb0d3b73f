"""Dagster's PostgreSQL storage with one fix and one economy.

**The fix: changing a pool's default limit no longer fails steps.**

Dagster 1.13.27 (``SqlEventLogStorage.initialize_concurrency_limit_to_default``) sets a pool's limit
from ``concurrency.pools.default_limit`` by inserting the pool's row and, on ``IntegrityError``,
updating it in the same transaction. SQLite lets that transaction go on; PostgreSQL has aborted it,
so the update fails with ``InFailedSqlTransaction``. The call happens when a step claims a slot of
a pool whose row came from an older default (an operator raised ``default_limit``: every model step
then fails, run after run), and when two runs create the same pool's row at once. The repository's
``dagster.yaml`` names :class:`AgentForgePostgresStorage` instead of ``storage: postgres``; it is
``dagster-postgres``'s storage, with the pool's row written in one statement,
``INSERT … ON CONFLICT (concurrency_key) DO UPDATE``, which neither fails nor races.

**The economy: a connection is kept, not opened per statement.** dagster-postgres gives its run and
event-log storages a ``NullPool``: every statement opens a new connection (authentication, and a
new backend process forked on the server). A run worker opened about 330 a run (profiled under the
daemon, bench/suite.py). Here each of those two storages keeps one connection, checked before use
(``pool_pre_ping``: a restarted server costs a reconnect, not an error) and opens more only while
statements overlap, closing them after, as Dagster's webserver does
(``optimize_for_webserver``). A process holds two idle connections to PostgreSQL at most.

Dagster internals used here (pinned by ``tests/instance/test_internals.py``):
``DagsterPostgresStorage.__init__`` is re-implemented with this module's storages (its signature
is pinned); the storages' ``_engine`` is replaced by a pooled one (``optimize_for_webserver()``,
the public alternative, keeps an engine but without ``pool_pre_ping`` and only for the
webserver); ``dagster._core.storage.event_log.schema.ConcurrencyLimitsTable`` is the table the pool
row goes to; ``DagsterStorage`` and ``ConfigurableClassData`` are the base class and constructor
argument every instance storage has. ``dagster_postgres.utils`` (``create_pg_engine``,
``pg_url_from_config``, ``get_token_provider_from_config``) keeps the engine and the config read as
dagster-postgres makes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import ConcurrencyLimitsTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.dialects.postgresql import insert

MODULE = __name__
OVERFLOW = 8  # connections opened beyond the kept one while statements overlap, closed after
RECYCLE_SECONDS = 3600


def from_config(config_value: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a dagster-postgres storage from its config, as it reads them."""
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


def keep_one_connection(storage: PostgresEventLogStorage | PostgresRunStorage) -> None:
    """Give a dagster-postgres storage an engine that keeps one connection instead of none."""
    if storage._engine.pool.__class__.__name__ != "NullPool":
        return  # already pooled (optimize_for_webserver)
    storage._engine.dispose()
    storage._engine = create_pg_engine(
        storage.postgres_url,
        storage._token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        max_overflow=OVERFLOW,
        pool_recycle=RECYCLE_SECONDS,
        pool_pre_ping=True,
    )


class _KeepsOneConnection:
    """What both storages of this module add to dagster-postgres's: one kept connection, and the
    constructor from config that builds this class rather than Dagster's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_one_connection(self)  # type: ignore[arg-type]

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Any:
        return cls(inst_data=inst_data, **from_config(config_value))


class PooledPostgresRunStorage(_KeepsOneConnection, PostgresRunStorage):
    """``PostgresRunStorage`` that keeps one connection."""


class PoolSafePostgresEventLogStorage(_KeepsOneConnection, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` whose pool defaults are written by an upsert, keeping one
    connection."""

    def initialize_concurrency_limit_to_default(self, concurrency_key: str) -> bool:
        if not (self.has_concurrency_limits_table and self.has_instance):
            return super().initialize_concurrency_limit_to_default(concurrency_key)
        default_limit = self._instance.global_op_concurrency_default_limit
        if default_limit is None or not self.has_default_pool_limit_col:
            return super().initialize_concurrency_limit_to_default(concurrency_key)
        self._reconcile_concurrency_limits_from_slots()
        with self.index_transaction() as conn:
            upsert = insert(ConcurrencyLimitsTable).values(
                concurrency_key=concurrency_key, limit=default_limit, using_default_limit=True
            )
            conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[ConcurrencyLimitsTable.c.concurrency_key],
                    set_={"limit": default_limit},
                    where=ConcurrencyLimitsTable.c.limit != default_limit,
                )
            )
            self._allocate_concurrency_slots(conn, concurrency_key, default_limit)
        return True


class AgentForgePostgresStorage(DagsterPostgresStorage):
    """``storage: postgres`` of ``dagster-postgres``, with the storages of this module."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        # DagsterPostgresStorage.__init__ with this module's storages (building its own first
        # would check the tables of each storage twice).
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PooledPostgresRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = PoolSafePostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        DagsterStorage.__init__(self)  # type: ignore[arg-type]

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> AgentForgePostgresStorage:
        return cls(inst_data=inst_data, **from_config(config_value))

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        if self.inst_data is None:
            return None
        return ConfigurableClassData(
            MODULE, PooledPostgresRunStorage.__name__, self.inst_data.config_yaml
        )

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        if self.inst_data is None:
            return None
        return ConfigurableClassData(
            MODULE, PoolSafePostgresEventLogStorage.__name__, self.inst_data.config_yaml
        )
