"""The ``take_order`` job: an order from the launchpad is validated as ``agentforge submit`` does it,
queued like any other order, and taken once per run group; a refused one is only recorded.

Run on the embedded default (SQLite) and on PostgreSQL; the refusals are compared with what the
real ``agentforge submit`` prints for the same fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidConfigError,
    Definitions,
    EnvVar,
    ExecuteInProcessResult,
    JobDefinition,
    ReexecutionOptions,
    build_sensor_context,
    execute_job,
    reconstructable,
)
from sqlalchemy import select

from agentforge_dagster.domain.errors import TransientError
from agentforge_dagster.domain.models import MAX_BRIEF_CHARS
from agentforge_dagster.orchestration import intake_job
from agentforge_dagster.orchestration.intake_job import (
    ACCEPT_ORDER,
    TAKE_ORDER,
    run_order_id,
    take_order_job,
)
from agentforge_dagster.orchestration.sensors import build_sensors
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.schema import rejected_orders
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DATABASE_ENV = "AGENTFORGE_TEST_TAKE_ORDER_DATABASE_URL"  # for the reconstructable job below
ORDER = {
    "customer": "Acme",
    "service": "blog_post",
    "brief": "Write about our spring range of ceramic mugs",
    "price": "120.00",
}


@pytest.fixture(params=["embedded", "postgresql"])
def database_url(request: pytest.FixtureRequest, settings: AgentForgeSettings) -> str:
    if request.param == "embedded":
        return settings.storage.resolved_database_url()
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def business(database_url: str) -> Iterator[BusinessStore]:
    store = BusinessStore.opened(database_url)
    yield store
    store.engine.dispose()


def job_defs(settings: AgentForgeSettings, database_url: str) -> Definitions:
    return Definitions(
        jobs=[take_order_job(settings.retries)],
        resources={"store": BusinessStoreResource(database_url=database_url)},
    )


@pytest.fixture
def take(
    settings: AgentForgeSettings, database_url: str, business: BusinessStore, instance: Any
) -> Any:
    """Launch the job as the launchpad does, with this config."""
    job = job_defs(settings, database_url).resolve_job_def(TAKE_ORDER)

    def launch(config: dict[str, Any]) -> ExecuteInProcessResult:
        return job.execute_in_process(
            run_config={"ops": {ACCEPT_ORDER: {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )

    return launch


def rejections(store: BusinessStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(rejected_orders)).mappings()]


def failure_description(result: ExecuteInProcessResult) -> str:
    failure = result.failure_data_for_node(ACCEPT_ORDER)
    assert failure is not None and failure.user_failure_data is not None
    return str(failure.user_failure_data.description)


def step_events(result: ExecuteInProcessResult, kind: DagsterEventType) -> int:
    return sum(1 for event in result.all_events if event.event_type == kind)


def test_a_valid_order_is_queued_its_partition_registered_and_the_queue_sensor_takes_it(
    take: Any,
    business: BusinessStore,
    instance: DagsterInstance,
    settings: AgentForgeSettings,
    database_url: str,
) -> None:
    config = {**ORDER, "order_id": "acme-42", "price": 120.5, "require_approval": True}
    done = take(config)  # a YAML number for the price, as `price: 120.50` in a file
    assert done.success
    assert done.output_for_node(ACCEPT_ORDER) == "acme-42"
    record = business.orders.get("acme-42")
    assert record.status.value == "queued"
    assert record.order.price == Decimal("120.50") and record.order.require_approval
    assert instance.get_dynamic_partitions("orders") == ["acme-42"]
    [submitted] = [
        r for r in business.audit.audit_rows("acme-42") if r["event"] == "order_submitted"
    ]
    assert submitted["detail"]["source"] == "job:take_order"
    [output] = [e for e in done.all_events if e.event_type == DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert metadata["order_id"].value == "acme-42"
    assert "/runs?q%5B%5D=tag%3Adagster%2Fpartition%3Dacme-42" in str(metadata["next"].value)

    [queue] = [
        s for s in build_sensors(settings.sensors, budget_usd=None) if s.name == "order_queue"
    ]
    with build_sensor_context(
        instance=instance, resources={"store": BusinessStoreResource(database_url=database_url)}
    ) as context:
        [request] = queue(context)
    assert request.run_key == "order-acme-42" and request.partition_key == "acme-42"

    again = take(config)  # the same order again: nothing to do, not a failure
    assert again.success and again.output_for_node(ACCEPT_ORDER) == "acme-42"
    assert business.orders.order_ids() == ["acme-42"]


_CLI_ERRORS: dict[str, list[str]] = {}


def submit_refusal(tmp: Path, fields: dict[str, str]) -> list[str]:
    """The errors the real ``agentforge submit`` prints for these flags (its own database; run
    once per case, for both databases)."""
    key = json.dumps(fields, sort_keys=True)
    if key not in _CLI_ERRORS:
        _CLI_ERRORS[key] = _run_submit(tmp, fields)
    return _CLI_ERRORS[key]


def _run_submit(tmp: Path, fields: dict[str, str]) -> list[str]:
    env = {
        **os.environ,
        "AGENTFORGE_HOME": str(tmp / "af"),
        "DAGSTER_HOME": str(tmp / "dh"),
    }
    env.pop("AGENTFORGE_DATABASE_URL", None)
    flags = [arg for key, value in fields.items() for arg in (f"--{key.replace('_', '-')}", value)]
    done = subprocess.run(
        [str(BIN / "agentforge"), "submit", *flags],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    return [line[4:] for line in done.stderr.splitlines() if line.startswith("  - ")]


REFUSED = {
    "unknown service": {**ORDER, "service": "yachts"},
    "oversized brief": {**ORDER, "brief": "b" * (MAX_BRIEF_CHARS + 1)},
    "hostile strings": {
        **ORDER,
        "customer": "Acme\u202eevil",
        "brief": "Write \x1b[2J about our spring range",
        "price": "1e3",
    },
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_order_is_recorded_as_submit_records_it_and_never_queued(
    case: str,
    take: Any,
    business: BusinessStore,
    instance: DagsterInstance,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    fields = REFUSED[case]
    cli_errors = submit_refusal(tmp_path_factory.mktemp("cli"), fields)
    assert cli_errors, "agentforge submit refuses it too"

    done = take(fields)
    assert not done.success
    assert step_events(done, DagsterEventType.STEP_UP_FOR_RETRY) == 0, "a refusal is not retried"
    assert business.orders.order_ids() == [] and instance.get_dynamic_partitions("orders") == []
    [row] = rejections(business)
    assert row["source"] == "job:take_order"
    assert json.loads(row["errors"]) == cli_errors, "the same validator, the same words"
    assert json.loads(row["payload"]) == {**fields, "require_approval": False}
    [audited] = [r for r in business.audit.audit_rows() if r["event"] == "order_rejected"]
    assert audited["detail"]["rejection_id"] == row["rejection_id"]
    description = failure_description(done)
    assert description.startswith(f"order rejected (recorded as rejection {row['rejection_id']}):")
    assert description.splitlines()[1:] == [f"  - {error[:500]}" for error in cli_errors]


def test_an_id_holding_a_different_order_is_refused_and_the_first_kept(
    take: Any, business: BusinessStore
) -> None:
    assert take({**ORDER, "order_id": "acme-7"}).success
    other = take({**ORDER, "order_id": "acme-7", "brief": "Something else entirely, please"})
    assert not other.success
    assert "'acme-7' is already used by a different order" in failure_description(other)
    assert business.orders.get("acme-7").order.brief == ORDER["brief"]
    assert len(rejections(business)) == 1


def _job_for_reexecution() -> JobDefinition:
    """The job with its store, rebuilt by ``execute_job`` from this module (a reexecution).

    Dagster keeps the job it rebuilt for the process: the database is read when a run starts.
    """
    settings = AgentForgeSettings(retries={"delay_seconds": 0.001})
    return Definitions(
        jobs=[take_order_job(settings.retries)],
        resources={"store": BusinessStoreResource(database_url=EnvVar(DATABASE_ENV))},
    ).resolve_job_def(TAKE_ORDER)


def test_without_an_order_id_a_run_group_takes_one_order_however_often_it_runs(
    database_url: str,
    business: BusinessStore,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run retry or a re-execution has the same root run: the same order id, one order."""
    monkeypatch.setenv(DATABASE_ENV, database_url)
    job = reconstructable(_job_for_reexecution)
    run_config = {"ops": {ACCEPT_ORDER: {"config": ORDER}}}
    with execute_job(job, instance, run_config=run_config) as first:
        assert first.success
        order_id = first.output_for_node(ACCEPT_ORDER)
        root = first.run_id
    assert order_id == run_order_id(root) and order_id.startswith("ord-")
    with execute_job(
        job, instance, reexecution_options=ReexecutionOptions(parent_run_id=root)
    ) as retried:
        assert retried.success and retried.dagster_run.root_run_id == root
        assert retried.output_for_node(ACCEPT_ORDER) == order_id
    assert business.orders.order_ids() == [order_id]
    assert instance.get_dynamic_partitions("orders") == [order_id]

    with execute_job(job, instance, run_config=run_config) as another:  # a new launch: new order
        assert another.success and another.output_for_node(ACCEPT_ORDER) != order_id
    assert len(business.orders.order_ids()) == 2


@pytest.mark.parametrize("database_url", ["embedded"], indirect=True)
def test_a_transient_error_is_retried_and_the_order_taken_once(
    take: Any, business: BusinessStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = intake_job.submit_order
    calls: list[str] = []

    def blip_once(*args: Any, **kwargs: Any) -> Any:
        calls.append("call")
        if len(calls) == 1:
            raise TransientError("the database connection dropped")
        return real(*args, **kwargs)

    monkeypatch.setattr(intake_job, "submit_order", blip_once)
    done = take({**ORDER, "order_id": "acme-9"})
    assert done.success and len(calls) == 2
    assert step_events(done, DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert business.orders.order_ids() == ["acme-9"]


def test_the_job_is_in_the_code_location_with_the_step_retry_policy(
    defs: Definitions, settings: AgentForgeSettings
) -> None:
    job = defs.resolve_job_def(TAKE_ORDER)
    policy = job.op_retry_policy
    assert policy is not None and policy.max_retries == settings.retries.max_retries
    assert job.executor_def.name == "in_process"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_yaml_run_config_through_dagster_job_execute(
    database_url: str, business: BusinessStore, tmp_path: Path
) -> None:
    """``dagster job execute -c order.yaml`` runs here; ``dagster job launch`` takes the same file."""
    order_yaml = tmp_path / "order.yaml"
    order_yaml.write_text(
        "ops:\n"
        "  accept_order:\n"
        "    config:\n"
        "      customer: Acme\n"
        "      service: press_release\n"
        "      brief: Announce the opening of our second shop\n"
        "      price: 240.00\n"
        "      order_id: acme-yaml\n"
    )
    (tmp_path / "dagster_home").mkdir()
    env = {
        **os.environ,
        "AGENTFORGE_HOME": str(tmp_path / "af"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "AGENTFORGE_DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "agentforge_dagster.definitions",
            "-j",
            TAKE_ORDER,
            "-c",
            str(order_yaml),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = business.orders.get("acme-yaml")
    assert record.status.value == "queued" and record.order.price == Decimal("240.00")
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_dynamic_partitions("orders") == ["acme-yaml"]


@pytest.mark.parametrize("database_url", ["embedded"], indirect=True)
def test_a_refused_run_re_executed_is_recorded_once(
    database_url: str,
    business: BusinessStore,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DATABASE_ENV, database_url)
    job = reconstructable(_job_for_reexecution)
    run_config = {"ops": {ACCEPT_ORDER: {"config": REFUSED["unknown service"]}}}
    with execute_job(job, instance, run_config=run_config) as refused:
        assert not refused.success
    with execute_job(
        job, instance, reexecution_options=ReexecutionOptions.from_failure(refused.run_id, instance)
    ) as again:
        assert not again.success
    assert len(rejections(business)) == 1 and business.orders.order_ids() == []


@pytest.mark.parametrize("database_url", ["embedded"], indirect=True)
def test_dagster_checks_the_config_types_before_any_run(take: Any, business: BusinessStore) -> None:
    with pytest.raises(DagsterInvalidConfigError, match="require_approval"):
        take({**ORDER, "require_approval": "sometimes"})
    with pytest.raises(DagsterInvalidConfigError, match="customer"):
        take({key: value for key, value in ORDER.items() if key != "customer"})
    assert business.orders.order_ids() == [] and rejections(business) == []
