"""Two processes migrating one fresh PostgreSQL database at once: both succeed, the schema is whole.

A fresh stack starts several processes that each bring the business tables up to date (the
one-shot ``agentforge db upgrade`` service, the code server, the daemon, a CLI command). Without
serialising them, two upgraders on an empty database both create ``alembic_version`` and the
tables, and one fails. Each round starts both processes, lets them import and connect, then
releases them at the same instant.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from agentforge_dagster.persistence.store import MIGRATIONS, BusinessStore
from tests.persistence.test_migrations import differences

ROUNDS = 5
ROOT = Path(__file__).resolve().parents[2]

# Import and connect first, say so, then wait for the go file: the upgrades start together.
UPGRADER = """
import pathlib, sys, time
from agentforge_dagster.persistence.store import BusinessStore
store = BusinessStore.from_url(sys.argv[1])
store.engine.connect().close()
pathlib.Path(sys.argv[2]).touch()
go = pathlib.Path(sys.argv[3])
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
store.upgrade()
"""


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def race(url: str, folder: Path) -> list[subprocess.CompletedProcess[str]]:
    """Two upgraders on ``url``, released together; their results once both have ended."""
    go = folder / "go"
    ready = [folder / f"ready-{n}" for n in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADER, url, str(flag), str(go)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 60
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            break
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_two_upgraders_at_once_on_a_fresh_database_both_succeed(
    new_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    head = head_revision()
    for round_ in range(ROUNDS):
        url = new_pg_database()
        folder = tmp_path / f"round-{round_}"
        folder.mkdir()
        for done in race(url, folder):
            assert done.returncode == 0, f"round {round_}: an upgrader failed:\n{done.stderr}"
        store = BusinessStore.from_url(url)
        try:
            assert store.schema_revision() == head
            assert differences(store) == [], "the tables are exactly the declared ones"
        finally:
            store.engine.dispose()


def test_db_upgrade_is_a_one_shot_command_that_exits_0_at_head(pg_url: str, tmp_path: Path) -> None:
    """What a compose service runs before the others: twice at once, then again at head."""
    agentforge = str(Path(sys.executable).parent / "agentforge")

    def start(name: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "AGENTFORGE_HOME": str(tmp_path / name),
            "DAGSTER_HOME": str(tmp_path / name / "dagster_home"),
            "AGENTFORGE_DATABASE_URL": pg_url,
        }
        return subprocess.Popen(
            [agentforge, "db", "upgrade"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    for proc in [start("a"), start("b")]:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "business database ready" in out
    again = start("a")
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert "order partitions registered in Dagster: 0 new" in out
    store = BusinessStore.from_url(pg_url)
    try:
        assert store.schema_revision() == head_revision()
    finally:
        store.engine.dispose()
