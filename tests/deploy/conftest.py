"""A Docker deployment for tests: project images, a code server container, a real daemon.

The daemon runs on the host with docker/dagster.docker.yaml (the deployment's own instance config,
with faster monitoring), against a fresh PostgreSQL database and the moto S3 server; runs go to
containers of the project image through CappedDockerRunLauncher. Docker missing is a failure.

As in a deployment: the daemon reaches the engine only through the socket proxy (its allowlist,
docker/proxy/docker-api.allowlist, so a call the launcher needs and the list lacks fails these
tests), and every secret is a file of a secrets folder holding a canary value, which must show
up nowhere but there (tests/deploy/test_front_door.py looks). One stack for the package's tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import docker.client
import docker.errors
import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from sqlalchemy import Engine, make_url, text

from agentforge_dagster.orchestration.deploy import code_server_environment, deploy, secret_files
from agentforge_dagster.persistence.io_managers_s3 import ensure_bucket
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import PG_ADMIN_URL, make_order
from tests.orchestration.daemon import Daemon, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMINGS: dict[str, float] = {}
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# Orders launched by hand (dagster job launch), put in processing before the daemon starts so the
# queue sensor never launches them too.
HAND_LAUNCHED = ("caps", "oom", "long", "back_on_a", "real_model", "canary", "dies_at_start")
# A secret that must appear nowhere but in its file: database password, S3 secret, model key.
CANARY = f"canary-{uuid.uuid4().hex}"
PROXY_UID = 10002  # the proxy image's user
IMAGE_UID = 10001  # the project image's user


def _script(args: list[str], what: str, env: dict[str, str] | None = None) -> str:
    start = time.monotonic()
    done = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    TIMINGS[what] = round(time.monotonic() - start, 1)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    """The engine, installed and started by docker/install-engine.sh if need be."""
    _script(["bash", "docker/install-engine.sh"], "install-engine")
    try:
        client = docker.client.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker is not usable after docker/install-engine.sh: {exc}")
    return client


@pytest.fixture(scope="session")
def images(docker_engine: Any) -> dict[str, str]:
    """Image A (this tree) and image B (the same tree, another revision label: another image id)."""
    _script(["bash", "docker/build-base-image.sh"], "build-base-image")
    image_a = _script(["bash", "docker/build-image.sh"], "build-image A").strip().splitlines()[-1]
    revision = image_a.split(":", 1)[1].split("-", 1)[1]
    env = {**os.environ, "REVISION": f"{revision}-b"}
    image_b = _script(["bash", "docker/build-image.sh"], "build-image B", env).splitlines()[-1]
    assert docker_engine.images.get(image_a).id != docker_engine.images.get(image_b).id
    return {"A": image_a, "B": image_b}


@pytest.fixture(scope="session")
def proxy_image(docker_engine: Any) -> str:
    """The nginx proxy image (front door, socket proxy), built once; a cache hit when unchanged."""
    _script(["bash", "docker/build-base-image.sh"], "build-base-image")
    return _script(["bash", "docker/build-proxy-image.sh"], "build-proxy-image").splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkspaceDaemon(Daemon):
    """The test daemon, reading a workspace of one gRPC code location."""

    def __init__(self, home: Path, env: dict[str, str], log: Path, workspace: Path) -> None:
        super().__init__(home, env, log)
        self.workspace = workspace

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
                cwd=self.home,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.groups.append(self.process.pid)


@dataclass
class DockerDeployment:
    env: dict[str, str]
    home: Path
    workspace: Path
    port: int
    history: Path
    images: dict[str, str]
    image_ids: dict[str, str]
    store: BusinessStore
    instance: DagsterInstance
    client: Any
    log: Path
    orders: dict[str, str] = field(default_factory=dict)
    secrets_dir: Path = Path("/nonexistent")
    socket_dir: Path = Path("/nonexistent")
    daemon: Any = None
    bucket: str = ""
    dagster_db: str = ""
    # `docker inspect` of each run container seen: they are removed when their run ends.
    inspected: list[dict[str, Any]] = field(default_factory=list)
    # Presigned links made by the tests: they must not be stored anywhere either.
    links: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The label every container of this stack carries (cleaned up with it)."""
        return f"agentforge/port={self.port}"

    def secret_environment(self) -> dict[str, str]:
        """What a Dagster container of this stack gets: settings, and secrets as NAME_FILE."""
        files = secret_files(self.secrets_dir)
        return {
            **{
                k: v
                for k, v in code_server_environment(self.env).items()
                if f"{k}_FILE" not in files
            },
            **files,
        }

    def launch(self, order_id: str, tags: dict[str, str] | None = None, config: Any = None) -> str:
        """``dagster job launch`` of one order's partition; returns the run id."""
        run_id = str(uuid.uuid4())
        args = [
            str(BIN / "dagster"), "job", "launch", "-j", "order_pipeline",
            "-w", str(self.workspace), "--run-id", run_id,
            "--tags", json.dumps({"dagster/partition": order_id, **(tags or {})}),
        ]  # fmt: skip
        if config is not None:
            args += ["--config-json", json.dumps(config)]
        _script(args, f"dagster job launch {order_id}", self.env)
        return run_id

    def agentforge(self, *args: str) -> str:
        return _script([str(BIN / "agentforge"), *args], f"agentforge {args[0]}", self.env)

    def run(self, run_id: str) -> DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None, f"run {run_id} does not exist"
        return run

    def wait_run(self, run_id: str, timeout: float = 120) -> DagsterRun:
        wait_until(lambda: self.run(run_id).status in FINISHED, timeout, f"run {run_id}", self.log)
        return self.run(run_id)

    def run_containers(self, run_id: str | None = None) -> list[Any]:
        label = f"dagster/run_id={run_id}" if run_id else "agentforge/role=run"
        found = []
        # Listed, then inspected one by one: a run container is removed once its run has ended,
        # and one that went between the two steps is simply not there any more.
        for container in self.client.containers.list(
            all=True, sparse=True, filters={"label": [label, self.label]}
        ):
            try:
                container.reload()
            except docker.errors.NotFound:
                continue
            found.append(container)
        return found

    def wait_container(self, run_id: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.run_containers(run_id)
            if found:
                self.inspected.append(found[0].attrs)
                return found[0]
            time.sleep(0.3)
        raise AssertionError(f"no container for run {run_id} within {timeout:.0f} s")

    def assert_no_run_container_left(self, timeout: float = 120) -> None:
        wait_until(lambda: not self.run_containers(), timeout, "run containers to be removed")

    def step_images(self, order_id: str, run_id: str) -> set[tuple[str, str]]:
        return {
            (row["detail"]["image"], row["detail"]["image_id"])
            for row in self.store.audit.audit_rows(order_id)
            if row["event"] == "step_started" and row["run_id"] == run_id
        }


def _secrets(folder: Path, values: dict[str, str]) -> Path:
    """One file per secret, readable only by the image's user, as an operator would make them."""
    folder.mkdir(mode=0o500)
    for name, value in values.items():
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o400)
        os.chown(path, IMAGE_UID, IMAGE_UID)
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    return folder


def start_socket_proxy(client: Any, proxy_image: str, folder: Path, label: str) -> Any:
    """The Docker socket proxy: no network, the engine's socket, one socket per client in folder."""
    folder.mkdir()
    os.chown(folder, PROXY_UID, PROXY_UID)
    container = client.containers.run(
        proxy_image,
        ["socket-proxy"],
        detach=True,
        name=f"agentforge-socket-proxy-{uuid.uuid4().hex[:8]}",
        network_mode="none",
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
        volumes=[
            "/var/run/docker.sock:/var/run/docker.sock",
            f"{folder}:/run/docker-proxy",
        ],
        labels={label.split("=")[0]: label.split("=")[1], "agentforge/role": "socket-proxy"},
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    wait_until(
        lambda: (folder / "daemon" / "docker.sock").exists(),
        20,
        "the socket proxy's sockets",
    )
    return container


def _database(pg_admin: Engine) -> str:
    name = f"agentforge_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return name


@pytest.fixture(scope="package")
def docker_deployment(
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin: Engine,
    s3_endpoint: str,
    images: dict[str, str],
    proxy_image: str,
    docker_engine: Any,
) -> Iterator[DockerDeployment]:
    tmp = tmp_path_factory.mktemp("docker_deployment")
    home = tmp / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "docker" / "dagster.docker.yaml").read_text())
    # The deployment's config, with monitoring fast enough for a test and one run retry.
    config["run_monitoring"].update(
        {
            "poll_interval_seconds": 2,
            "start_timeout_seconds": 120,
            "free_slots_after_run_end_seconds": 2,
        }
    )
    config["run_retries"]["max_retries"] = 1
    # Drills (slow models, memory ballast) are not production wiring: switched on for the code
    # server and, through the launcher's env_vars, for every run container.
    config["run_launcher"]["config"]["env_vars"].append("AGENTFORGE_DRILLS")
    port = _free_port()
    # This stack's run containers carry its label too: found and cleaned up with the stack,
    # never confused with another stack's on the same engine.
    config["run_launcher"]["config"]["container_kwargs"]["labels"] = {"agentforge/port": str(port)}
    # make bench-docker (test_bench_docker.py): faults on every step, automatic replays as in
    # production; the code server and every run container see the same settings.
    bench = {
        "AGENTFORGE_FAULT_RATE": os.environ.get("AGENTFORGE_BENCH_DOCKER_FAULT_RATE", "0"),
        "AGENTFORGE_DLQ_MAX_REPLAYS": "3",
        "AGENTFORGE_DLQ_COOLDOWN_SECONDS": "5",
    }
    benching = "AGENTFORGE_BENCH_DOCKER_FAULT_RATE" in os.environ
    if benching:
        config["run_launcher"]["config"]["env_vars"] += sorted(bench)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = tmp / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "grpc_server": {
                            "host": "127.0.0.1",
                            "port": port,
                            "location_name": "agentforge",
                        }
                    }
                ]
            }
        )
    )
    dagster_db, business_db = _database(pg_admin), _database(pg_admin)
    # Trust auth on loopback: any password is accepted, so the canary can be the password.
    business_url = (
        make_url(PG_ADMIN_URL).set(database=business_db, password=CANARY).render_as_string(False)
    )
    secrets_dir = _secrets(
        tmp / "secrets",
        {
            "dagster_pg_password": CANARY,
            "agentforge_database_url": business_url,
            "aws_secret_access_key": CANARY,
            "openai_api_key": CANARY,
            # The traces' collector headers, when this session traces (test_phoenix.py): a
            # secret file, as make-secrets.sh otel writes it.
            **(
                {"otel_exporter_otlp_headers": os.environ["OTEL_EXPORTER_OTLP_HEADERS"]}
                if os.environ.get("OTEL_EXPORTER_OTLP_HEADERS")
                else {}
            ),
        },
    )
    bucket = f"agentforge-{uuid.uuid4().hex[:10]}"
    ensure_bucket(boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1"), bucket)
    history = tmp / "deploys.json"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": CANARY,
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": dagster_db,
        "DAGSTER_RUN_IMAGE": images["A"],
        "AGENTFORGE_DATABASE_URL": business_url,
        "AGENTFORGE_S3_BUCKET": bucket,
        "AGENTFORGE_S3_ENDPOINT_URL": s3_endpoint,
        "AGENTFORGE_MODELS": "offline",
        "AGENTFORGE_DRILLS": "true",
        "AGENTFORGE_SENSOR_INTERVAL_SECONDS": "2",
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.05",
        "AGENTFORGE_DLQ_MAX_REPLAYS": "0",  # letters stay put: the tests look at them
        "AGENTFORGE_CODE_SERVER_PORT": str(port),
        "AGENTFORGE_DEPLOY_HISTORY": str(history),
        "AGENTFORGE_HOME": str(tmp / "agentforge"),
        "AWS_REGION": "us-east-1",
        "AWS_SECRET_ACCESS_KEY": CANARY,  # moto takes any
        "AGENTFORGE_SECRETS_DIR": str(secrets_dir),
        **(bench if benching else {}),
    }
    store = BusinessStore.from_url(business_url)
    store.upgrade()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    # The daemon reaches the engine through the socket proxy only.
    socket_dir = tmp / "docker-proxy"
    daemon = WorkspaceDaemon(
        home,
        {**env, "DOCKER_HOST": f"unix://{socket_dir}/daemon/docker.sock"},
        tmp / "daemon.log",
        workspace,
    )
    instance = DagsterInstance.from_config(str(home))
    try:
        start_socket_proxy(docker_engine, proxy_image, socket_dir, f"agentforge/port={port}")
        start = time.monotonic()
        deploy(
            images["A"],
            port=port,
            history=history,
            environment=code_server_environment(env),
            client=docker_engine,
            secrets_dir=secrets_dir,
        )
        TIMINGS["deploy A (fixture)"] = round(time.monotonic() - start, 1)
        orders = {
            name: store.orders.submit(make_order(i)).order_id
            for i, name in enumerate(HAND_LAUNCHED)
        }
        for order_id in orders.values():
            store.orders.claim(order_id, run_id=None, step="launch")
        instance.add_dynamic_partitions("orders", list(orders.values()))
        daemon.start()
        yield DockerDeployment(
            env=env,
            home=home,
            workspace=workspace,
            port=port,
            history=history,
            images=images,
            image_ids={k: str(docker_engine.images.get(v).id) for k, v in images.items()},
            store=store,
            instance=instance,
            client=docker_engine,
            log=tmp / "daemon.log",
            orders=orders,
            secrets_dir=secrets_dir,
            socket_dir=socket_dir,
            daemon=daemon,
            bucket=bucket,
            dagster_db=dagster_db,
        )
    finally:
        daemon.stop_everything()
        for container in docker_engine.containers.list(
            all=True, filters={"label": f"agentforge/port={port}"}
        ):
            container.remove(force=True)
        instance.dispose()
        store.engine.dispose()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with pg_admin.connect() as conn:
            for name in (dagster_db, business_db):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        print(f"\ndocker test timings (s): {TIMINGS}")
