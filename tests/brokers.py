"""The machine's real brokers, each test in its own corner of them.

RabbitMQ (127.0.0.1:5672): a vhost of its own per test, made and deleted with ``rabbitmqctl``.
Redis (127.0.0.1:6379): a database of its own per test, flushed before and after. A test that
restarts Redis starts its own ``redis-server`` on a free port, with append-only persistence
fsynced on every write: the machine's shared brokers are never restarted.
Not reachable is a failure (run ``make services``), never a skip.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import redis

RABBITMQ_PORT = 5672
REDIS_PORT = 6379
# Databases 1-15 of the shared Redis, split between pytest-xdist workers (gw0, gw1, ...) so that
# two workers never flush each other's database.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_REDIS_DBS = itertools.cycle(
    [db for db in range(1, 16) if (db - 1) % max(1, min(_WORKERS, 15)) == _WORKER % 15]
)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@pytest.fixture
def rabbit_url() -> Iterator[str]:
    """amqp:// URL of a vhost made for this test on the machine's RabbitMQ."""
    if not _listening(RABBITMQ_PORT):
        pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672: run `make services`")
    vhost = f"agentforge-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@127.0.0.1:{RABBITMQ_PORT}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def publish(url: str, queue: str, messages: list[tuple[bytes, str | None]]) -> None:
    """Publish persistent messages (body, message_id) to ``queue`` through the default exchange,
    each confirmed by the broker. The queue must exist (the intake declares it)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body, message_id in messages:
            channel.basic_publish(
                "",
                queue,
                body,
                pika.BasicProperties(delivery_mode=2, message_id=message_id),
                mandatory=True,
            )
    finally:
        connection.close()


def queue_counts(url: str) -> dict[str, tuple[int, int]]:
    """Per queue of the vhost: (ready, unacknowledged), as the broker counts them."""
    out = rabbitmqctl(
        "list_queues",
        "-p",
        vhost_of(url),
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--no-table-headers",
        "-q",
    )
    counts = {}
    for line in out.splitlines():
        name, ready, unacked = line.split()
        counts[name] = (int(ready), int(unacked))
    return counts


@pytest.fixture
def redis_url() -> Iterator[str]:
    """redis:// URL of a database of the machine's Redis, empty, for this test."""
    if not _listening(REDIS_PORT):
        pytest.fail("Redis is not listening on 127.0.0.1:6379: run `make services`")
    db = next(_REDIS_DBS)
    url = f"redis://127.0.0.1:{REDIS_PORT}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


class OwnRedis:
    """A redis-server of the test's own, append-only (fsync always), that it may kill and restart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what it acknowledged is in the append-only file."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
