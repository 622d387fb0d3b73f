"""Dagster's private modules appear in ``agentforge_dagster/instance/`` and nowhere else.

ruff's ``banned-api`` (``pyproject.toml``) refuses the imports; this also catches what an import
check cannot see: a module named in a string (``sys.modules.get("dagster._grpc.server")``) or an
instance file's ``module: dagster._core.run_coordinator`` (public form: ``module: dagster``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dagster import deserialize_value
from dagster._core.instance.ref import InstanceRef

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agentforge_dagster"
PRIVATE = re.compile(r"\bdagster(_docker|_postgres|_aws)?\._[a-z]")
INSTANCE_FILES = [
    ROOT / "dagster.yaml",
    ROOT / "docker" / "dagster.docker.yaml",
    ROOT / "docker" / "ecs" / "dagster.yaml",
    ROOT / "workspace.yaml",
]


def test_private_dagster_modules_are_named_only_in_the_instance_package() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if PACKAGE / "instance" not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_instance_files_name_public_modules_or_ours(path: Path) -> None:
    modules = re.findall(r"^\s*module:\s*(\S+)", path.read_text(), re.MULTILINE)
    assert all(not PRIVATE.search(module) for module in modules), modules


def test_an_instance_ref_serialized_by_the_previous_release_still_loads(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    """A run launched before an upgrade carries the old module paths in its instance ref."""
    monkeypatch.setenv("AGENTFORGE_TEST_INSTANCE_PG_URL", pg_url)
    serialized = json.dumps(
        json.loads((Path(__file__).with_name("instance_ref_0.1.json")).read_text())
    )
    ref = deserialize_value(serialized, InstanceRef)
    assert "agentforge_dagster.execution.launcher" in serialized  # the paths of the old layout
    assert "agentforge_dagster.persistence.dagster_storage" in serialized
    from agentforge_dagster.instance.docker_launcher import CappedDockerRunLauncher
    from agentforge_dagster.instance.storage import AgentForgePostgresStorage

    launcher = ref.run_launcher_data.rehydrate(as_type=CappedDockerRunLauncher)
    storage = ref.storage_data.rehydrate(as_type=AgentForgePostgresStorage)
    try:
        assert type(launcher) is CappedDockerRunLauncher
        assert type(storage) is AgentForgePostgresStorage
        assert storage.run_storage.get_runs() == []
    finally:
        storage.run_storage.dispose()
        storage.event_log_storage.dispose()
