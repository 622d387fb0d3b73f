"""Shared fixtures: every test gets its own business database, folders and Dagster instance."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from dagster import DagsterInstance, Definitions, instance_for_test
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.models import Order, parse_order
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

# The `spans` fixture: tracing on, into memory.
pytest_plugins = ["tests.spans"]


@pytest.fixture
def settings(tmp_path: Path) -> AgentForgeSettings:
    """The embedded default in a temporary folder, with a short retry back-off (1 ms, not 50 ms:
    a step that exhausts its six retries would otherwise sleep 6 s in every test that fails one)."""
    return AgentForgeSettings(
        storage={"home": tmp_path / "agentforge", "dagster_home": tmp_path / "dagster_home"},
        retries={"delay_seconds": 0.001},
    )


@pytest.fixture
def store(settings: AgentForgeSettings) -> Iterator[BusinessStore]:
    business = BusinessStore.from_url(settings.storage.resolved_database_url())
    business.upgrade()
    yield business
    business.engine.dispose()


@pytest.fixture
def defs(settings: AgentForgeSettings) -> Definitions:
    """The definitions with drills on: tests inject faults through run config."""
    return build_definitions(settings, drills=True)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def make_order(index: int = 0, **overrides: object) -> Order:
    fields: dict[str, object] = {
        "customer": f"customer-{index}",
        "service": "blog_post",
        "brief": f"Write about reliable pipelines for small shops, part {index}",
        "price": "150.00",
        **overrides,
    }
    return parse_order(fields)


ALWAYS_FAIL_DELIVERY = {"resources": {"faults": {"config": {"fail_first": {"delivery": 99}}}}}


def dead_lettered_order(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> tuple[str, Any]:
    """An order whose plan, draft and review were paid for, then dead-lettered at delivery.

    Returns the order id and the runner's result for the failed run.
    """
    from agentforge_dagster.domain.state import OrderStatus
    from agentforge_dagster.orchestration.runner import run_order

    order = store.orders.submit(make_order())
    result = run_order(defs, instance, store, order.order_id, run_config=ALWAYS_FAIL_DELIVERY)
    assert not result.success and result.status is OrderStatus.DEAD_LETTERED
    return order.order_id, result


# -- real services ------------------------------------------------------------------------------
PG_ADMIN_URL = os.environ.get(
    "AGENTFORGE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """The PostgreSQL server on loopback. Not reachable is a failure, never a skip."""
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL}: start it (make services). {exc}"
        )
    yield engine
    engine.dispose()


@pytest.fixture
def new_pg_database(pg_admin: Engine) -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases for one test; all dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"agentforge_test_{uuid.uuid4().hex[:12]}"
        with pg_admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with pg_admin.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(new_pg_database: Callable[[], str]) -> str:
    return new_pg_database()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[BusinessStore]:
    business = BusinessStore.from_url(pg_url)
    business.upgrade()
    yield business
    business.engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP server (moto in server mode) on a loopback port, for the whole session."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the moto S3 server did not start")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    return f"agentforge-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def step_env(
    store: BusinessStore,
    order_id: str,
    deliveries: Path,
    *,
    max_revisions: int = 1,
    run_id: str = "run-test",
    step: str = "test",
) -> Any:
    """A StepEnv on the offline model, as run_step builds one."""
    from agentforge_dagster.execution.gateway import ModelGateway
    from agentforge_dagster.execution.llm.offline import OfflineModel
    from agentforge_dagster.execution.steps import StepEnv
    from agentforge_dagster.persistence.deliverables import LocalDeliverables

    gateway = ModelGateway(
        store=store,
        providers=[OfflineModel()],
        order_id=order_id,
        step=step,
        run_id=run_id,
        attempt=1,
    )
    return StepEnv(
        order_id=order_id,
        run_id=run_id,
        attempt=1,
        store=store,
        gateway=gateway,
        deliverables=LocalDeliverables(deliveries),
        max_revisions=max_revisions,
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On CI a skipped test is a failure: every service-backed test must really run there."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if os.environ.get("CI") and skipped:
        reporter.write_line(f"CI: {skipped} test(s) skipped; on CI every test must run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
