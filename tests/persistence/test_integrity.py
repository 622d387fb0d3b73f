"""A damaged PostgreSQL data file is found before the audit chain is trusted.

The cluster is the test's own (``initdb``): its table file is overwritten while it is stopped, as
a failing disk would, and ``agentforge audit verify`` must say DAMAGED rather than "intact".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from agentforge_dagster.persistence.store import BusinessStore
from tests.orchestration.daemon import ROOT
from tests.pgcluster import PostgresCluster

pytestmark = pytest.mark.service
PAGE = 8192


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    own = PostgresCluster()
    try:
        own.init("business")
        yield own
    finally:
        own.remove()


def test_a_damaged_table_page_is_found_and_audit_verify_says_damaged(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = cluster.url("business")
    store = BusinessStore.from_url(url)
    store.upgrade()
    for index in range(300):  # several pages of audit rows
        store.audit.record_event("drill_event", order_id=f"o-{index}", detail={"n": index})
    assert store.integrity_problem() is None
    with store.engine.connect() as conn:
        relative = conn.execute(text("SELECT pg_relation_filepath('audit_log')")).scalar_one()
    store.engine.dispose()

    cluster.stop()
    table_file = cluster.data / relative
    assert table_file.stat().st_size >= 3 * PAGE
    with table_file.open("r+b") as data:  # page 1 of the table, garbled
        data.seek(PAGE)
        data.write(b"\xa5" * PAGE)
    cluster.start()

    problem = store.integrity_problem()
    assert problem is not None and "invalid page" in problem
    store.engine.dispose()
    verify = subprocess.run(
        [str(Path(sys.executable).parent / "agentforge"), "audit", "verify"],
        env={**os.environ, "AGENTFORGE_DATABASE_URL": url, "AGENTFORGE_HOME": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode != 0
    assert "database DAMAGED" in verify.stderr and "invalid page" in verify.stderr
    assert "intact" not in verify.stdout
