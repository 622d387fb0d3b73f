"""A pool's default limit changed on a PostgreSQL instance: Dagster's storage fails, ours does not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from sqlalchemy import Engine, event, make_url, text
from sqlalchemy.exc import InternalError

from agentforge_dagster.instance.storage import PoolSafePostgresEventLogStorage

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def instance_with(home: Path, storage: dict, default_limit: int) -> Iterator[DagsterInstance]:
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "storage": storage,
        "concurrency": {"pools": {"default_limit": default_limit}},
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


def pool_limit(instance: DagsterInstance, pool: str) -> int | None:
    return instance.event_log_storage.get_concurrency_info(pool).slot_count


def ours(url: str) -> dict:
    """The storage block of the repository's dagster.yaml, pointed at ``url``."""
    storage = yaml.safe_load((ROOT / "dagster.yaml").read_text())["storage"]
    storage["custom"]["config"]["postgres_url"] = url
    return storage


def test_dagster_postgres_alone_fails_once_the_default_limit_changes(
    tmp_path: Path, pg_url: str
) -> None:
    """Dagster 1.13.27's own storage: the upstream bug this module works around, still there."""
    storage = {"postgres": {"postgres_url": pg_url}}
    with instance_with(tmp_path / "a", storage, 2) as instance:
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("model_x")
        assert pool_limit(instance, "model_x") == 2
    with instance_with(tmp_path / "b", storage, 3) as instance:
        with pytest.raises(InternalError, match="InFailedSqlTransaction"):
            instance.event_log_storage.initialize_concurrency_limit_to_default("model_x")
        assert pool_limit(instance, "model_x") == 2  # and the new default never applies


def test_ours_follows_a_changed_default_and_survives_a_race(
    tmp_path: Path, new_pg_database: Callable[[], str]
) -> None:
    url = new_pg_database()
    with instance_with(tmp_path / "a", ours(url), 2) as instance:
        assert isinstance(instance.event_log_storage, PoolSafePostgresEventLogStorage)
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("model_x")
        assert pool_limit(instance, "model_x") == 2
    with instance_with(tmp_path / "b", ours(url), 3) as instance:
        assert instance.event_log_storage.initialize_concurrency_limit_to_default("model_x")
        assert pool_limit(instance, "model_x") == 3
        # Eight runs meet a new pool at once: one row, its limit, no error.
        with ThreadPoolExecutor(8) as pool:
            done = list(
                pool.map(
                    lambda _: instance.event_log_storage.initialize_concurrency_limit_to_default(
                        "model_y"
                    ),
                    range(8),
                )
            )
        assert done == [True] * 8
        assert pool_limit(instance, "model_y") == 3
        assert instance.event_log_storage.get_concurrency_keys() >= {"model_x", "model_y"}


def test_ours_keeps_a_connection_where_dagster_postgres_opens_one_a_statement(
    tmp_path: Path, pg_url: str, pg_admin: Engine
) -> None:
    def connections_opened(storage: dict, home: Path) -> int:
        opened: list[int] = []
        with instance_with(home, storage, 2) as instance:
            for engine in (instance.run_storage._engine, instance.event_log_storage._engine):
                event.listen(engine, "connect", lambda *_: opened.append(1))
            for _ in range(25):
                instance.get_runs_count()
                instance.event_log_storage.get_concurrency_keys()
            # The server ends every connection (a restart): the next statement still works.
            with pg_admin.connect() as conn:
                conn.execute(
                    text(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where datname = :db and pid <> pg_backend_pid()"
                    ),
                    {"db": make_url(pg_url).database},
                )
            assert instance.get_runs_count() == 0
        return len(opened)

    assert connections_opened({"postgres": {"postgres_url": pg_url}}, tmp_path / "a") >= 51
    assert connections_opened(ours(pg_url), tmp_path / "b") <= 3
