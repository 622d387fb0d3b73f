"""The compose deployment as a new operator brings it up: the README's commands, then orders.

``make test-deploy``. A copy of this tree (as a fresh clone would have it) is set up by running
``docker/deploy-steps.sh`` step by step — the very file the README shows — with only what an
operator decides given from outside (where the secrets go, a PostgreSQL port free on this
machine, a compose project name). Then orders come in the three ways of the README (the shell,
``dagster job launch`` of ``take_order``, a RabbitMQ message), each is delivered and its S3 object
matches the recorded SHA-256; the front door lets in only the right logins; nothing but the front
door listens beyond loopback; a daemon restart mid-order delivers the order once; a daemon whose
run containers cannot resolve a host dead-letters the order with the host's name within one
monitoring poll; ``down -v`` removes it all. The S3 stand-in checks request signatures, so the S3
secret provably reaches run containers.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pika
import pytest
from sqlalchemy import make_url

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.deliverables import parse_s3_location
from agentforge_dagster.persistence.store import BusinessStore
from tests.deploy.test_front_door import _descendants
from tests.orchestration.daemon import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.service]
ROOT = Path(__file__).resolve().parents[2]
PROJECT = f"agentforgestack{uuid.uuid4().hex[:6]}"
COMPOSE = ["docker-compose", "-f", "docker/compose.yaml"]
# Ports the compose file binds on 127.0.0.1 (and the front door on every address).
FIXED_PORTS = (3000, 3001, 4000, 8443, 9000, 9001)
ALICE = ("alice", f"al-{uuid.uuid4().hex[:12]}")
BOB = ("bob", f"bo-{uuid.uuid4().hex[:12]}")
LAUNCH = """mutation {
  launchPipelineExecution(executionParams: {selector: {repositoryLocationName: "agentforge",
      repositoryName: "__repository__", jobName: "order_pipeline"}}) { __typename }
}"""
TIMINGS: dict[str, float] = {}


def steps(path: Path) -> list[tuple[str, str]]:
    """The ``# step: NAME`` sections of a steps file, in order, each as the text bash runs."""
    found: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        heading = re.match(r"^# step: (\S+)", line)
        if heading:
            found.append((heading.group(1), []))
        elif found:
            found[-1][1].append(line)
    return [(name, "\n".join(lines).strip()) for name, lines in found]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    tree: Path
    env: dict[str, str]
    secrets: Path
    pg_port: int
    vhost: str
    log: Path
    store: BusinessStore | None = None
    s3: Any = None
    orders: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)

    def run(self, args: list[str] | str, what: str, stdin: str | None = None) -> str:
        """A command in the tree, as the operator's shell runs it; its output is logged."""
        start = time.monotonic()
        command = ["bash", "-euo", "pipefail", "-c", args] if isinstance(args, str) else args
        done = subprocess.run(
            command,
            cwd=self.tree,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        TIMINGS[what] = round(time.monotonic() - start, 1)
        with self.log.open("a") as out:
            out.write(f"\n$ {what}\n{done.stdout}\n{done.stderr}\n")
        if done.returncode != 0:
            pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    def compose(self, *args: str, what: str | None = None) -> str:
        return self.run([*COMPOSE, *args], what or f"docker-compose {' '.join(args)}")

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text().strip()

    def business(self) -> BusinessStore:
        """The stack's business database, reached from the host (127.0.0.1, not 'postgres')."""
        if self.store is None:
            url = make_url(self.secret("agentforge_database_url")).set(
                host="127.0.0.1", port=self.pg_port
            )
            self.store = BusinessStore.from_url(url.render_as_string(hide_password=False))
        return self.store

    def bucket(self) -> Any:
        if self.s3 is None:
            self.s3 = boto3.client(
                "s3",
                endpoint_url="http://127.0.0.1:9000",
                region_name="us-east-1",
                aws_access_key_id="agentforge",
                aws_secret_access_key=self.secret("aws_secret_access_key"),
            )
        return self.s3

    def status(self, order_id: str) -> OrderStatus | None:
        try:
            return self.business().orders.get(order_id).status
        except Exception:  # not there yet (or the database still starting)
            return None

    def wait_status(self, order_id: str, status: OrderStatus, timeout: float = 300) -> None:
        try:
            wanted = f"order {order_id} to be {status.value}"
            wait_until(lambda: self.status(order_id) is status, timeout, wanted)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis(order_id)}") from None

    def diagnosis(self, order_id: str) -> str:
        """What a stuck order's trail, the containers and the daemon's last lines say."""
        lines = [f"order {order_id} is {self.status(order_id)}"]
        try:
            lines += [
                f"  {row['event']} {json.dumps(row['detail'], default=str)[:300]}"
                for row in self.business().audit.audit_rows(order_id)
            ]
        except Exception as exc:  # the database is what is wrong
            lines.append(f"  audit trail unreadable: {exc}")
        for command in (
            ["docker", "ps", "-a", "--format", "{{.Names}} {{.Status}} {{.Labels}}"],
            [*COMPOSE, "logs", "--no-color", "--tail", "60", "daemon", "user_code"],
        ):
            done = subprocess.run(
                command, cwd=self.tree, env=self.env, capture_output=True, text=True, check=False
            )
            lines.append(f"$ {' '.join(command)}\n{done.stdout[-6000:]}{done.stderr[-2000:]}")
        return "\n".join(lines)

    def door(
        self, path: str, auth: tuple[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if auth is not None:
            token = base64.b64encode(":".join(auth).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # self-signed on first start
        connection = http.client.HTTPSConnection("127.0.0.1", 8443, context=tls, timeout=60)
        try:
            connection.request(
                "POST" if body is not None else "GET",
                path,
                body=json.dumps(body).encode() if body is not None else None,
                headers=headers,
            )
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, check=True, timeout=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    taken = [port for port in FIXED_PORTS if _taken(port)]
    if taken:
        pytest.fail(f"ports the compose file binds are taken on this machine: {taken}")
    tmp = tmp_path_factory.mktemp("compose_stack")
    tree = tmp / "agentforge"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    vhost = f"agentforge-stack-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    pg_port = _free_port()
    secrets = tmp / "secrets"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "AGENTFORGE_"))},
        # A compose project of its own, beside whatever else runs on this machine.
        "COMPOSE_PROJECT_NAME": PROJECT,
    }
    stack = Stack(tree, env, secrets, pg_port, vhost, tmp / "stack.log")
    # What this operator writes into docker/.env after copying the example: where the secrets
    # go, a free PostgreSQL port (this machine runs its own on 5432), the engine socket's group.
    stack.decisions = {
        "AGENTFORGE_SECRETS_DIR": str(secrets),
        "DAGSTER_PG_PORT": str(pg_port),
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
    }
    try:
        yield stack
    finally:
        if (tree / "docker" / ".env").exists():
            subprocess.run(
                [*COMPOSE, "logs", "--no-color", "--tail", "200"],
                cwd=tree,
                env=env,
                stdout=stack.log.open("a"),
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
            subprocess.run(
                [*COMPOSE, "down", "-v", "--remove-orphans"],
                cwd=tree,
                env=env,
                capture_output=True,
                timeout=300,
                check=False,
            )
        for container_id in _run_containers(stack):
            subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)
        if stack.store is not None:
            stack.store.engine.dispose()
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, check=False)
        print(f"\ncompose stack timings (s): {TIMINGS}\nlog: {stack.log}")


def _delivered_matches(stack: Stack, order_id: str) -> None:
    """The order's S3 object is the recorded version, with the recorded SHA-256, and one of it."""
    delivery = stack.business().deliveries.delivery(order_id)
    assert delivery is not None, f"{order_id} has no delivery"
    where = parse_s3_location(delivery.location)
    bucket, key = where.bucket, where.key
    assert where.version_id, delivery.location
    body = stack.bucket().get_object(Bucket=bucket, Key=key, VersionId=where.version_id)
    body = body["Body"].read()
    assert hashlib.sha256(body).hexdigest() == delivery.content_sha256
    versions = stack.bucket().list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    assert len([v for v in versions if v["Key"] == key]) == 1, f"{order_id} delivered twice"


def _new_order(stack: Stack, before: set[str]) -> str:
    """The one order that appeared in the business database since ``before``."""
    found: list[str] = []

    def appeared() -> bool:
        try:
            found[:] = sorted(set(stack.business().orders.order_ids()) - before)
        except Exception:
            return False
        return len(found) == 1

    wait_until(appeared, 120, "the new order to be recorded", stack.log)
    return found[0]


def test_the_readme_commands_bring_the_stack_up_and_every_order_is_delivered(
    stack: Stack,
) -> None:
    readme = (ROOT / "README.md").read_text()
    for path in ("docker/deploy-steps.sh", "docker/order-steps.sh"):
        body = (ROOT / path).read_text()
        assert body.strip() in readme, f"README.md shows {path} as it is"

    passwords = f"{ALICE[1]}\n{BOB[1]}\n"
    for name, text in steps(stack.tree / "docker" / "deploy-steps.sh"):
        if name == "up":
            # Optional in the README, used here: orders from the machine's RabbitMQ, its URL
            # (with the broker's password) a secret file like the others.
            url = f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}"
            stack.run(
                f"AGENTFORGE_RABBITMQ_URL='{url}' bash docker/make-secrets.sh broker",
                "make-secrets broker",
            )
        stack.run(text, f"step {name}", stdin=passwords if name == "secrets" else None)
        if name == "settings":
            written = (stack.tree / "docker" / ".env").read_text()
            stack.images = re.findall(r"^AGENTFORGE_IMAGE=(\S+)$", written, re.MULTILINE)
            pairs = " ".join(f"{key}='{value}'" for key, value in stack.decisions.items())
            stack.run(f"bash docker/set-env.sh {pairs}", "the operator edits docker/.env")
            written = (stack.tree / "docker" / ".env").read_text()
            assert f"AGENTFORGE_SECRETS_DIR={stack.secrets}\n" in written, "never /etc here"

    # (b) from the shell, as the README writes it: a submit in user_code, a take_order launch.
    shell_steps = dict(steps(stack.tree / "docker" / "order-steps.sh"))
    before = set(stack.business().orders.order_ids())
    stack.run(shell_steps["submit"], "order: agentforge submit")
    stack.orders["submit"] = _new_order(stack, before)
    before = set(stack.business().orders.order_ids())
    stack.run(shell_steps["launch"], "order: dagster job launch take_order")
    stack.orders["take_order"] = _new_order(stack, before)
    # (c) from a broker: the operator's RabbitMQ, its URL a secret file.
    broker_order = f"ord-broker-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(
        pika.URLParameters(f"amqp://guest:guest@127.0.0.1:5672/{stack.vhost}")
    )
    try:
        channel = connection.channel()
        wait_until(
            lambda: _queue_exists(connection, "agentforge.orders"),
            180,
            "the intake sensor to declare its queue",
            stack.log,
        )
        channel.basic_publish(
            exchange="",
            routing_key="agentforge.orders",
            body=json.dumps(
                {
                    "order_id": broker_order,
                    "customer": "Katherine Johnson Co",
                    "service": "email_campaign",
                    "brief": "Three emails announcing our spring opening hours",
                    "price": "60.00",
                }
            ).encode(),
            properties=pika.BasicProperties(message_id=broker_order, delivery_mode=2),
        )
    finally:
        connection.close()
    stack.orders["broker"] = broker_order

    started = time.monotonic()
    for order_id in stack.orders.values():
        stack.wait_status(order_id, OrderStatus.COMPLETED)
        _delivered_matches(stack, order_id)
    TIMINGS["three orders delivered, after the last was taken"] = round(
        time.monotonic() - started, 1
    )
    # Each run's container is removed once the daemon has read how it ended.
    wait_until(
        lambda: not _run_containers(stack),
        120,
        "the runs' containers to be removed",
        stack.log,
    )


def _run_containers(stack: Stack) -> list[str]:
    """Run containers of this stack's images still on the engine."""
    found: list[str] = []
    for image in stack.images:
        found += subprocess.run(
            [
                "docker", "ps", "-aq", "--filter", "label=agentforge/role=run",
                "--filter", f"ancestor={image}",
            ],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    return found


def _queue_exists(connection: Any, queue: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    channel.close()
    return True


def test_the_front_door_lets_in_only_the_right_logins(stack: Stack) -> None:
    assert stack.door("/")[0] == 401
    assert stack.door("/", ("alice", "wrong"))[0] == 401
    assert stack.door("/", ALICE)[0] == 200
    assert stack.door("/", BOB)[0] == 200
    status, body = stack.door("/graphql", BOB, {"query": LAUNCH})
    assert status == 200 and b"UnauthorizedError" in body, body[:300]


def test_nothing_but_the_front_door_listens_beyond_loopback(stack: Stack) -> None:
    ids = stack.compose("ps", "-q").split()
    pids = set()
    for container_id in ids:
        state = json.loads(
            subprocess.run(
                ["docker", "inspect", "--format", "{{json .State}}", container_id],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        if state.get("Pid"):
            pids.add(int(state["Pid"]))
    listening: dict[str, set[int]] = {}
    for line in subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        ours = {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & _descendants(pids)
        if ours:
            listening.setdefault(line.split()[3], set()).update(ours)
    exposed = {
        address
        for address in listening
        if not address.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))
    }
    assert exposed == {"0.0.0.0:8443"}, listening
    ports = {address.rsplit(":", 1)[1] for address in listening}
    assert {"3000", "3001", "4000", "9000", str(stack.pg_port)} <= ports, listening


def test_a_daemon_restarted_mid_order_delivers_it_once(stack: Stack) -> None:
    before = set(stack.business().orders.order_ids())
    stack.compose(
        "exec", "-T", "user_code", "agentforge", "submit", "--customer", "Mary Jackson LLC",
        "--service", "press_release", "--price", "200.00",
        "--brief", "We open a second workshop in the old rope factory",
        what="order: submit (restart)",
    )  # fmt: skip
    order_id = _new_order(stack, before)
    # Restart once the queue sensor has claimed the order for a launch: between that claim and
    # the order's end (a run in containers can be through processing in a second or two, too
    # fast to catch by polling the status, as a CI run showed).
    wait_until(
        lambda: any(
            row["event"] == "launch_requested"
            for row in stack.business().audit.audit_rows(order_id)
        ),
        300,
        f"the queue sensor to claim {order_id}",
        stack.log,
    )
    stack.compose("restart", "daemon", what="docker-compose restart daemon")
    stack.wait_status(order_id, OrderStatus.COMPLETED)
    _delivered_matches(stack, order_id)


def test_agentforge_deploy_of_a_second_image_serves_the_next_order(stack: Stack) -> None:
    """README "Deploy and roll back" under compose: stop user_code, deploy an image, order."""
    image_b = stack.run("REVISION=stack-b bash docker/build-image.sh", "build image B")
    image_b = image_b.strip().splitlines()[-1]
    stack.images.append(image_b)
    stack.compose("stop", "user_code")
    agentforge = ROOT / ".venv" / "bin" / "agentforge"  # the operator's, on the host
    try:
        stack.run(
            f"set -a; . docker/.env; set +a; {agentforge} deploy --image {image_b}",
            "agentforge deploy (image B)",
        )
        before = set(stack.business().orders.order_ids())
        stack.compose(
            "exec", "-T", "daemon", "agentforge", "submit", "--customer", "Hedy Lamarr",
            "--service", "blog_post", "--price", "70.00", "--brief", "Frequency hopping, simply",
            what="order: submit (image B)",
        )  # fmt: skip
        order_id = _new_order(stack, before)
        stack.wait_status(order_id, OrderStatus.COMPLETED)
        _delivered_matches(stack, order_id)
        images = {
            row["detail"]["image"]
            for row in stack.business().audit.audit_rows(order_id)
            if row["event"] == "step_started"
        }
        assert images == {image_b}, images
        # The restarted daemon's watch began at its first launch (this order's run) and took
        # over what the daemon before it launched: every run container is gone once read.
        wait_until(
            lambda: not _run_containers(stack), 300, "the runs' containers to be removed", stack.log
        )
    finally:
        subprocess.run(
            "docker ps -aq --filter label=agentforge/role=code-server "
            "--filter label=agentforge/port=4000 | xargs -r docker rm -f",
            shell=True,
            check=False,
            capture_output=True,
        )
        stack.compose("start", "user_code")


def test_a_run_container_that_cannot_resolve_a_host_is_dead_lettered_naming_it(
    stack: Stack,
) -> None:
    """The daemon without its host entries copied: run containers cannot resolve 'postgres'."""
    docker_dir = stack.tree / "docker"
    config = (docker_dir / "dagster.docker.yaml").read_text()
    assert "copy_host_entries: true" in config
    (docker_dir / "dagster.unresolvable.yaml").write_text(
        config.replace("copy_host_entries: true", "copy_host_entries: false")
    )
    (docker_dir / "compose.unresolvable.yaml").write_text(
        "services:\n  daemon:\n    volumes:\n"
        "      - ./dagster.unresolvable.yaml:/opt/dagster/dagster_home/dagster.yaml:ro\n"
    )
    override = [*COMPOSE, "-f", "docker/compose.unresolvable.yaml"]
    stack.run([*override, "up", "-d", "--no-deps", "daemon"], "daemon without host entries")
    before = set(stack.business().orders.order_ids())
    stack.compose(
        "exec", "-T", "user_code", "agentforge", "submit", "--customer", "Dorothy Vaughan",
        "--service", "blog_post", "--price", "90.00", "--brief", "Learning a new language at 50",
        what="order: submit (unresolvable)",
    )  # fmt: skip
    order_id = _new_order(stack, before)
    stack.wait_status(order_id, OrderStatus.DEAD_LETTERED)
    letter = stack.business().dead_letters.dead_letter_of(order_id)
    assert letter is not None and letter["error_class"] == "infrastructure", letter
    assert "'postgres'" in letter["message"] and "DAGSTER_PG_HOST" in letter["message"], letter
    assert "timed out" not in letter["message"], "failed at once, not at the start timeout"
    assert "host 'postgres' (DAGSTER_PG_HOST) does not resolve" in (letter["worker_output"] or "")
    stack.run([*COMPOSE, "up", "-d", "--no-deps", "daemon"], "daemon back as shipped")


def test_idle_memory_per_service_is_written_down(stack: Stack) -> None:
    """``docker stats --no-stream`` of the stack at rest, with the steps' times (README figures)."""
    names = stack.compose("ps", "--services").split()
    time.sleep(20)  # not a wait for anything: the figure is of a stack left alone a moment
    stats = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ours = [line for line in stats if line.startswith(PROJECT)]
    assert len(ours) >= 6, stats  # postgres, minio, user_code, two webservers, daemon, proxies
    results = os.environ.get("AGENTFORGE_STACK_RESULTS")
    if results:
        rows = [
            "| service | memory | CPU |",
            "| --- | --- | --- |",
            *(
                "| {} | {} | {} |".format(*line.removeprefix(f"{PROJECT}_").split("\t"))
                for line in ours
            ),
        ]
        steps_rows = ["| step | seconds |", "| --- | --- |"]
        steps_rows += [f"| {what} | {seconds} |" for what, seconds in TIMINGS.items()]
        Path(results).write_text(
            "# The compose deployment on this machine (make test-deploy)\n\n"
            "Written by tests/stack/test_compose_stack.py with AGENTFORGE_STACK_RESULTS set. "
            f"Services: {', '.join(names)}.\n\n## Each step, as run\n\n"
            + "\n".join(steps_rows)
            + "\n\n## Idle memory per service (`docker stats --no-stream`)\n\n"
            + "\n".join(rows)
            + "\n"
        )


def test_down_removes_everything(stack: Stack) -> None:
    stack.compose("down", "-v", what="docker-compose down -v")
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not left
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not volumes
