"""Orders in run containers of the project image: caps, OOM, deploy and roll-back, S3 deliveries.

Real Docker engine and images built from this tree, a real dagster-daemon with the deployment's
instance config (docker/dagster.docker.yaml: CappedDockerRunLauncher, PostgreSQL storage, S3
compute logs) talking to the engine through the socket proxy, a code server container started by
``deploy``, moto S3 for the artifacts and deliveries, secrets as files, the wire-level fake model
provider for a real-model configuration.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterRunStatus, RunsFilter

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.containers import (
    HOST_CHECK,
    IMAGE_ID_TAG,
    container_death,
    parse_memory,
)
from agentforge_dagster.execution.hosts import host_entries
from agentforge_dagster.orchestration.deploy import (
    CODE_SERVER_ROLE,
    DeployError,
    code_servers,
    deploy,
    read_history,
)
from agentforge_dagster.persistence.deliverables import parse_s3_location
from tests.conftest import make_order
from tests.deploy.conftest import CANARY, ROOT, DockerDeployment
from tests.fakes.brain import offline_brain
from tests.fakes.llm_server import FakeLLMServer
from tests.orchestration.daemon import wait_until

pytestmark = [pytest.mark.service, pytest.mark.xdist_group("deploy")]
COMPOSE_CONFIG = [
    "docker-compose", "-f", "docker/compose.yaml",
    "--env-file", "docker/compose.env.example", "config", "--quiet",
]  # fmt: skip
SLOW_MODEL = {"resources": {"faults": {"config": {"model_latency_seconds": 1.5}}}}


def test_compose_file_validates() -> None:
    done = subprocess.run(
        COMPOSE_CONFIG,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_why_a_removed_container_died_is_read_from_the_engine(
    docker_engine: Any, images: dict[str, str]
) -> None:
    """What run monitoring reports once auto_remove has taken the container and its state."""
    container = docker_engine.containers.run(
        images["A"],
        ["python", "-c", "ballast = b'x' * (300 * 1024 * 1024)"],
        mem_limit="100m",
        memswap_limit="100m",
        auto_remove=True,
        detach=True,
        network_mode="host",
    )
    wait_until(
        lambda: not docker_engine.containers.list(all=True, filters={"id": container.id}),
        60,
        "the container to be removed",
    )
    assert container_death(docker_engine, container.id) == (
        "The container exited with code 137 (OOM-killed)."
    )


def test_a_launched_order_runs_in_a_capped_container_of_this_image(
    docker_deployment: DockerDeployment,
) -> None:
    dep = docker_deployment
    order_id = dep.orders["caps"]
    run_id = dep.launch(
        order_id,
        tags={"agentforge/mem_limit": "64g", "agentforge/nano_cpus": "500000000"},
        config=SLOW_MODEL,
    )

    container = dep.wait_container(run_id)
    host = container.attrs["HostConfig"]
    assert container.image.id == dep.image_ids["A"]
    assert host["Memory"] == parse_memory("4g"), "64g asked, clamped to max_mem_limit"
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000, "a request under the max is granted"
    assert host["PidsLimit"] == 512
    assert host["SecurityOpt"] == ["no-new-privileges"]
    # Kept after it ends until the daemon has read how it ended, then removed (below).
    assert host["NetworkMode"] == "host" and host["AutoRemove"] is False
    # Hardened: read-only root with a writable /tmp, no capabilities, the image's non-root user.
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not host["Privileged"]
    assert container.attrs["Config"]["User"] in ("", "agentforge:agentforge")
    assert container.image.attrs["Config"]["User"] == "agentforge:agentforge"
    # Secrets: the folder mounted read-only, NAME_FILE in the environment, never a value.
    assert f"{dep.secrets_dir}:/run/secrets:ro" in host["Binds"]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["DAGSTER_PG_PASSWORD_FILE"] == "/run/secrets/dagster_pg_password"
    assert env["AGENTFORGE_DATABASE_URL_FILE"] == "/run/secrets/agentforge_database_url"
    assert not {"DAGSTER_PG_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AGENTFORGE_DATABASE_URL"} & set(
        env
    )
    assert CANARY not in json.dumps(container.attrs)
    assert "DOCKER_HOST" not in env, "the daemon's engine address stays with the daemon"
    # It resolves what the daemon resolves (the daemon's own host entries, copied), and checks
    # every configured host before the run worker starts.
    assert sorted(host["ExtraHosts"] or []) == sorted(
        f"{name}:{address}" for name, address in host_entries().items()
    )
    assert container.attrs["Config"]["Cmd"][: len(HOST_CHECK)] == HOST_CHECK
    assert env["AGENTFORGE_IMAGE"] == dep.images["A"]
    assert env["AGENTFORGE_IMAGE_ID"] == dep.image_ids["A"]

    run = dep.wait_run(run_id)
    assert run.status is DagsterRunStatus.SUCCESS
    assert run.tags[IMAGE_ID_TAG] == dep.image_ids["A"]
    assert dep.store.orders.get(order_id).status is OrderStatus.COMPLETED
    assert dep.step_images(order_id, run_id) == {(dep.images["A"], dep.image_ids["A"])}
    engine_events = [
        record.event_log_entry.message
        for record in dep.instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ENGINE_EVENT
        ).records
    ]
    assert any("mem_limit: the run asked for 64g, clamped" in m for m in engine_events)
    [materialization] = dep.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("order_invoice"), asset_partitions=[order_id]),
        limit=1,
    ).records
    metadata = materialization.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["image"].value == dep.images["A"]
    assert metadata["image_id"].value == dep.image_ids["A"]
    dep.assert_no_run_container_left()


def test_a_queued_order_is_launched_by_the_sensor_into_a_container(
    docker_deployment: DockerDeployment,
) -> None:
    dep = docker_deployment
    order_id = dep.store.orders.submit(make_order(100)).order_id
    wait_until(
        lambda: dep.store.orders.get(order_id).status is OrderStatus.COMPLETED,
        150,
        f"order {order_id} to complete",
        dep.log,
    )
    [run] = dep.instance.get_runs(RunsFilter(tags={"dagster/partition": order_id}))
    assert run.tags["dagster/sensor_name"] == "order_queue"
    assert dep.wait_run(run.run_id).status is DagsterRunStatus.SUCCESS
    assert dep.step_images(order_id, run.run_id) == {(dep.images["A"], dep.image_ids["A"])}
    dep.assert_no_run_container_left()


def test_a_step_over_the_memory_cap_is_killed_retried_and_dead_lettered(
    docker_deployment: DockerDeployment,
) -> None:
    dep = docker_deployment
    order_id = dep.orders["oom"]
    run_id = dep.launch(
        order_id,
        tags={"agentforge/mem_limit": "400m"},
        config={"resources": {"faults": {"config": {"allocate_mb": {"plan": 700}}}}},
    )
    container = dep.wait_container(run_id)
    assert container.attrs["HostConfig"]["Memory"] == parse_memory("400m")

    wait_until(
        lambda: dep.store.orders.get(order_id).status is OrderStatus.DEAD_LETTERED,
        240,
        f"order {order_id} to be dead-lettered",
        dep.log,
    )
    runs = dep.instance.get_runs(RunsFilter(tags={"dagster/partition": order_id}))
    assert len(runs) == 2, "the run and its one retry (run_retries.max_retries: 1)"
    assert all(run.status is DagsterRunStatus.FAILURE for run in runs)
    retry = next(run for run in runs if run.run_id != run_id)
    assert retry.parent_run_id == run_id and retry.tags["agentforge/mem_limit"] == "400m"
    [letter] = [row for row in dep.store.dead_letters.dead_letters() if row["order_id"] == order_id]
    assert letter["error_class"] == "infrastructure"
    assert letter["failed_step"] == "plan"
    assert "137" in letter["message"] and "OOM" in letter["message"], letter["message"]
    audit = dep.store.audit.audit_rows(order_id)
    plans = [row for row in audit if row["step"] == "plan"]
    assert {row["run_id"] for row in plans if row["event"] == "step_started"} == {
        run_id,
        retry.run_id,
    }
    assert not [row for row in plans if row["event"] == "step_succeeded"]
    # The retry re-executes from the failure (plan): intake's output is read back from S3.
    assert [row["event"] for row in audit if row["step"] == "intake"] == [
        "step_started",
        "step_succeeded",
    ]
    # The pool slot the killed plan step held is given back, or model steps would stall.
    wait_until(
        lambda: (
            not {run_id, retry.run_id} & dep.instance.event_log_storage.get_concurrency_run_ids()
        ),
        60,
        "the killed runs' pool slots to be freed",
        dep.log,
    )
    dep.assert_no_run_container_left()


def test_a_run_whose_container_dies_before_it_starts_says_why_at_once(
    docker_deployment: DockerDeployment,
) -> None:
    """A container OOM-killed while its interpreter starts: the run never reaches STARTED.

    Dagster does not health-check STARTING runs (it would wait out start_timeout_seconds, 120 s
    here, and fail the run as a bare START_TIMEOUT); the launcher's watch in the daemon fails it
    with how the container ended, which the order's dead letter carries.
    """
    dep = docker_deployment
    order_id = dep.orders["dies_at_start"]
    run_id = dep.launch(order_id, tags={"agentforge/mem_limit": "8m"})
    wait_until(
        lambda: dep.store.orders.get(order_id).status is OrderStatus.DEAD_LETTERED,
        240,
        f"order {order_id} to be dead-lettered",
        dep.log,
    )
    runs = dep.instance.get_runs(RunsFilter(tags={"dagster/partition": order_id}))
    assert {run.run_id for run in runs} >= {run_id}
    for run in runs:
        assert run.status is DagsterRunStatus.FAILURE
        [failure] = dep.instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
        message = failure.dagster_event.message or ""
        assert "ended before the run started" in message, message
        assert "timed out" not in message, "failed by the watch, not by the start timeout"
        reports = [
            entry.dagster_event.event_specific_data.metadata
            for entry in dep.instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if "container_output" in entry.dagster_event.event_specific_data.metadata
        ]
        assert [r["container_exit_code"].value for r in reports] == [137]
        assert [r["container_oom_killed"].value for r in reports] == [True]
    letter = dep.store.dead_letters.dead_letter_of(order_id)
    assert letter is not None and letter["error_class"] == "infrastructure"
    assert "exited with code 137 (OOM-killed)" in letter["message"], letter["message"]
    shown = dep.agentforge("dlq", "show", order_id)
    assert "exited with code 137 (OOM-killed)" in shown
    dep.assert_no_run_container_left()


def test_a_run_container_that_cannot_resolve_a_host_names_it(
    docker_engine: Any, images: dict[str, str]
) -> None:
    """The run container's first command: every configured host must resolve, or it says which."""
    done = subprocess.run(
        [
            "docker", "run", "--rm", "--network", "host",
            "-e", "DAGSTER_PG_HOST=postgres",
            "-e", "AGENTFORGE_S3_ENDPOINT_URL=http://minio.invalid:9000",
            "-e", "AGENTFORGE_DATABASE_URL=postgresql://u:secret-pw@127.0.0.1/db",
            images["A"],
            *HOST_CHECK, "true",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 68, done.stderr
    assert "host 'minio.invalid' (AGENTFORGE_S3_ENDPOINT_URL) does not resolve" in done.stderr
    assert "host 'postgres' (DAGSTER_PG_HOST) does not resolve" in done.stderr
    assert "secret-pw" not in done.stderr + done.stdout
    resolved = subprocess.run(
        [
            "docker", "run", "--rm", "--network", "host", "--add-host", "postgres:127.0.0.1",
            "-e", "DAGSTER_PG_HOST=postgres", images["A"], *HOST_CHECK, "echo", "started",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert resolved.returncode == 0 and resolved.stdout.strip() == "started", resolved.stderr


def test_a_deploy_that_does_not_come_up_leaves_the_serving_image(
    docker_deployment: DockerDeployment,
) -> None:
    """The base image has no Dagster: its server exits, the deploy fails, A keeps serving."""
    dep = docker_deployment
    [serving] = code_servers(dep.client, dep.port)
    with pytest.raises(DeployError, match=r"did not start|exited"):
        deploy(
            "agentforge-base:bookworm",
            port=dep.port,
            history=dep.history,
            client=dep.client,
            timeout_seconds=60,
        )
    assert [c.id for c in code_servers(dep.client, dep.port)] == [serving.id]
    assert (
        dep.client.containers.list(
            all=True, filters={"label": "agentforge/image=agentforge-base:bookworm"}
        )
        == []
    )
    assert [h.image for h in read_history(dep.history)][-1] == serving.labels["agentforge/image"]


def test_deploy_b_and_roll_back_to_a_each_run_records_its_image(
    docker_deployment: DockerDeployment,
) -> None:
    dep = docker_deployment
    image_a, image_b = dep.images["A"], dep.images["B"]
    # The long run is held in its first model call by a latch (a loopback port that accepts
    # only once the test opens it), so the deploy lands mid-run however slow the machine is.
    latch = socket.socket()
    latch.bind(("127.0.0.1", 0))
    held = {"resources": {"faults": {"config": {"hold_until_port": latch.getsockname()[1]}}}}
    long_run = dep.launch(dep.orders["long"], config=held)
    dep.wait_container(long_run)
    wait_until(
        lambda: dep.run(long_run).status is DagsterRunStatus.STARTED,
        120,
        f"run {long_run} to start",
        dep.log,
    )

    dep.agentforge("deploy", "--image", image_b)
    assert dep.run(long_run).status is DagsterRunStatus.STARTED, "the latch holds the run"
    [server] = code_servers(dep.client, dep.port)
    assert server.image.id == dep.image_ids["B"]
    # Launched by the sensor right after the deploy: the daemon's copy of the workspace may still
    # name A (it is refreshed every 60 s); the launcher asks the code server and launches in B.
    on_b_order = dep.store.orders.submit(make_order(300)).order_id
    wait_until(
        lambda: dep.store.orders.get(on_b_order).status is OrderStatus.COMPLETED,
        150,
        f"order {on_b_order} to complete",
        dep.log,
    )
    [on_b_run] = dep.instance.get_runs(RunsFilter(tags={"dagster/partition": on_b_order}))
    on_b = on_b_run.run_id
    assert on_b_run.tags["dagster/sensor_name"] == "order_queue"
    assert dep.wait_run(on_b).status is DagsterRunStatus.SUCCESS
    assert dep.run(on_b).tags["dagster/image"] == image_b

    dep.agentforge("rollback")
    [server] = code_servers(dep.client, dep.port)
    assert server.image.id == dep.image_ids["A"]
    back_on_a = dep.launch(dep.orders["back_on_a"])
    assert dep.wait_run(back_on_a).status is DagsterRunStatus.SUCCESS
    assert dep.run(long_run).status is DagsterRunStatus.STARTED, "the latch holds the run"
    latch.listen()  # open: the held model calls go on
    try:
        assert dep.wait_run(long_run).status is DagsterRunStatus.SUCCESS, "deploys broke it"
    finally:
        latch.close()

    assert dep.step_images(dep.orders["long"], long_run) == {(image_a, dep.image_ids["A"])}
    assert dep.step_images(on_b_order, on_b) == {(image_b, dep.image_ids["B"])}
    assert dep.step_images(dep.orders["back_on_a"], back_on_a) == {(image_a, dep.image_ids["A"])}
    for name in ("long", "back_on_a"):
        assert dep.store.orders.get(dep.orders[name]).status is OrderStatus.COMPLETED
    history = read_history(dep.history)
    assert [(h.action, h.image) for h in history] == [
        ("deploy", image_a),
        ("deploy", image_b),
        ("rollback", image_a),
    ]
    servers = dep.client.containers.list(
        all=True, filters={"label": f"agentforge/role={CODE_SERVER_ROLE}"}
    )
    assert [s.name for s in servers if s.labels["agentforge/port"] == str(dep.port)] == [
        history[-1].container
    ], "the replaced code servers are removed"
    assert json.loads(Path(dep.history).read_text())[-1]["image_id"] == dep.image_ids["A"]
    dep.assert_no_run_container_left()


@pytest.fixture(scope="module")
def fake_provider() -> Iterator[FakeLLMServer]:
    """An OpenAI-compatible model server on loopback that answers like a competent model."""
    with FakeLLMServer(answer=offline_brain) as server:
        yield server


def test_an_order_on_a_real_model_is_delivered_to_s3_and_outlives_its_container(
    docker_deployment: DockerDeployment, fake_provider: FakeLLMServer
) -> None:
    """The model key reaches the run container as a file; the deliverable is in S3 afterwards."""
    dep = docker_deployment
    order_id = dep.orders["real_model"]
    real_model = {
        "models": f"openai:gpt-test@{fake_provider.openai_base_url}",
        "openai_api_key": {"env": "OPENAI_API_KEY"},  # exported from OPENAI_API_KEY_FILE
    }
    run_id = dep.launch(order_id, config={"resources": {"model": {"config": real_model}}})
    container = dep.wait_container(run_id)
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["OPENAI_API_KEY_FILE"] == "/run/secrets/openai_api_key"
    assert "OPENAI_API_KEY" not in env
    assert dep.wait_run(run_id).status is DagsterRunStatus.SUCCESS
    dep.assert_no_run_container_left()

    calls = [r for r in fake_provider.requests if r.path.endswith("/chat/completions")]
    assert len(calls) >= 2, "plan and draft asked the model"
    assert {r.headers["authorization"] for r in calls} == {f"Bearer {CANARY}"}
    delivery = dep.store.deliveries.delivery(order_id)
    assert delivery is not None
    where = parse_s3_location(delivery.location)
    assert where is not None and where.bucket == dep.bucket and where.version_id
    assert where.key == f"deliveries/{order_id}.md"
    s3 = boto3.client(
        "s3", endpoint_url=dep.env["AGENTFORGE_S3_ENDPOINT_URL"], region_name="us-east-1"
    )
    body = s3.get_object(Bucket=where.bucket, Key=where.key, VersionId=where.version_id)
    assert hashlib.sha256(body["Body"].read()).hexdigest() == delivery.content_sha256

    link = dep.agentforge("delivery", "link", order_id, "--expires", "1h").strip()
    with urllib.request.urlopen(link, timeout=10) as answer:
        assert hashlib.sha256(answer.read()).hexdigest() == delivery.content_sha256
    dep.links.append(link)
