"""Every Dagster internal the instance package patches, pinned against the pinned release.

A Dagster upgrade that changes one of these fails here, by name, instead of quietly breaking a
deployment (a forkserver that no longer starts workers, a storage without its one-statement pool
row, a launcher whose override is never called).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import dagster

ROOT = Path(__file__).resolve().parents[2]


def _pinned(package: str) -> str:
    match = re.search(rf'"{package}==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert match, f"{package} is pinned in pyproject.toml"
    return match.group(1)


def test_the_installed_dagster_is_the_pinned_one() -> None:
    assert dagster.__version__ == _pinned("dagster"), (
        "Dagster moved: re-check every patch in agentforge_dagster/instance/ (this file's tests "
        "say which), then move the pin"
    )


def test_the_api_server_still_picks_its_start_method_in_mp_ctx() -> None:
    from dagster._grpc.server import DagsterApiServer

    source = inspect.getsource(DagsterApiServer.__init__)
    assert 'self._mp_ctx = multiprocessing.get_context("spawn")' in source
    assert "self._mp_ctx" in inspect.getsource(DagsterApiServer)  # read where workers start


def test_dagster_postgres_storages_still_open_a_connection_per_statement_in_engine() -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    for storage in (PostgresEventLogStorage, PostgresRunStorage):
        source = inspect.getsource(storage.__init__)
        assert "self._engine = create_pg_engine(" in source, storage
        assert "poolclass=db_pool.NullPool" in source, storage


def test_the_re_implemented_postgres_storage_init_matches_upstream() -> None:
    from dagster_postgres import DagsterPostgresStorage

    from agentforge_dagster.instance.storage import AgentForgePostgresStorage

    upstream = list(inspect.signature(DagsterPostgresStorage.__init__).parameters)
    ours = list(inspect.signature(AgentForgePostgresStorage.__init__).parameters)
    assert ours == upstream
    source = inspect.getsource(DagsterPostgresStorage.__init__)
    for attribute in ("_run_storage", "_event_log_storage", "_schedule_storage", "_inst_data"):
        assert f"self.{attribute}" in source, attribute


def test_the_docker_launcher_override_is_still_where_containers_are_made() -> None:
    from dagster_docker import DockerRunLauncher

    from agentforge_dagster.instance.docker_launcher import CappedDockerRunLauncher

    upstream = inspect.signature(DockerRunLauncher._launch_container_with_command)
    ours = inspect.signature(CappedDockerRunLauncher._launch_container_with_command)
    assert list(upstream.parameters) == list(ours.parameters) == [
        "self", "run", "docker_image", "command",
    ]  # fmt: skip
    assert "_launch_container_with_command(" in inspect.getsource(DockerRunLauncher.launch_run)
