"""A runner that dies, is interrupted, runs twice or runs out of disk loses no order.

Every test drives real ``agentforge run`` processes on one embedded home (SQLite, local files),
with the model behind a real HTTP server where the test needs it to hang or refuse.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from agentforge_dagster.domain.runs import PARTITION_TAG
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order
from tests.fakes.brain import offline_brain
from tests.fakes.llm_server import FakeLLMServer, hang, status

AGENTFORGE = str(Path(sys.executable).parent / "agentforge")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 180) -> None:
    """A precondition the test needs before it acts (never a deadline under test)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what} within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class Home:
    """One embedded home, as the user's shell sees it."""

    root: Path
    env: dict[str, str]

    @property
    def store(self) -> BusinessStore:
        return BusinessStore.opened(f"sqlite:///{self.root / 'af' / 'agentforge.db'}")

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.root / "dh"))

    def submit(self, count: int) -> list[str]:
        store = self.store
        try:
            return [store.orders.submit(make_order(index)).order_id for index in range(count)]
        finally:
            store.engine.dispose()

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [AGENTFORGE, "run", *args],
            env=self.env,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AGENTFORGE, "run"], env=self.env, cwd=self.root, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip

    def statuses(self, order_ids: list[str]) -> dict[str, OrderStatus]:
        store = self.store
        try:
            return {order_id: store.orders.status(order_id) for order_id in order_ids}
        finally:
            store.engine.dispose()

    def events(self, order_id: str) -> list[dict[str, object]]:
        store = self.store
        try:
            return store.audit.audit_rows(order_id)
        finally:
            store.engine.dispose()


def _home(root: Path, **extra: str) -> Home:
    env = {
        **os.environ,
        "AGENTFORGE_HOME": str(root / "af"),
        "DAGSTER_HOME": str(root / "dh"),
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.001",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("AGENTFORGE_DATABASE_URL", None)
    (root / "dh").mkdir(parents=True, exist_ok=True)
    (root / "dh" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return Home(root, env)


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(answer=offline_brain) as server:
        yield server


def _model_home(tmp_path: Path, llm: FakeLLMServer) -> Home:
    return _home(
        tmp_path,
        AGENTFORGE_MODELS=f"openai:gpt-test@{llm.openai_base_url}",
        OPENAI_API_KEY="sk-test-key-for-the-fake",
        AGENTFORGE_MODEL_TIMEOUT_SECONDS="900",
    )


def _delivered_once(home: Home, order_ids: list[str]) -> None:
    store = home.store
    try:
        for order_id in order_ids:
            assert store.deliveries.delivery(order_id) is not None, order_id
        with store.engine.connect() as conn:
            from sqlalchemy import func, select

            from agentforge_dagster.persistence.schema import ledger

            entries = dict(
                conn.execute(
                    select(ledger.c.order_id, func.count()).group_by(ledger.c.order_id)
                ).all()
            )
        assert entries == dict.fromkeys(order_ids, 1), entries
    finally:
        store.engine.dispose()


def test_a_killed_runner_leaves_nothing_stranded_the_next_run_takes_its_order_up(
    tmp_path: Path, llm: FakeLLMServer
) -> None:
    home = _model_home(tmp_path, llm)
    order_ids = home.submit(2)
    llm.script(hang(600))  # the first model call never answers
    runner = home.start()
    wait_until(lambda: len(llm.requests) >= 1, "the first model call")
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)
    assert home.statuses(order_ids)[order_ids[0]] is OrderStatus.PROCESSING  # as it was left
    [lost] = home.instance().get_runs(RunsFilter(tags={PARTITION_TAG: order_ids[0]}))
    assert lost.status is DagsterRunStatus.STARTED

    again = home.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stopped renewing its lease" in again.stdout, again.stdout
    assert set(home.statuses(order_ids).values()) == {OrderStatus.COMPLETED}
    _delivered_once(home, order_ids)
    instance = home.instance()
    lost = instance.get_run_by_id(lost.run_id)
    assert lost is not None and lost.status is DagsterRunStatus.FAILURE  # the UI tells the truth
    [failure] = [
        entry for entry in instance.all_logs(lost.run_id) if entry.dagster_event
        and entry.dagster_event.event_type_value == "PIPELINE_FAILURE"
    ]  # fmt: skip
    assert "lease on the order ran out" in (failure.dagster_event.message or "")
    trail = home.events(order_ids[0])
    assert [row["event"] for row in trail].count("lease_expired") == 1
    moves = [row["detail"]["to"] for row in trail if row["event"] == "transition"]  # type: ignore[index]
    assert moves == ["processing", "failed", "dead_lettered", "replayed", "processing", "completed"]


@pytest.mark.parametrize(
    ("signum", "wait"),
    [(signal.SIGTERM, "back-off"), (signal.SIGINT, "model call")],
    ids=["sigterm-in-back-off", "sigint-in-model-call"],
)
def test_an_interrupted_runner_stops_at_once_and_the_next_run_finishes_the_order(
    tmp_path: Path, llm: FakeLLMServer, signum: int, wait: str
) -> None:
    home = _model_home(tmp_path, llm)
    [order_id] = home.submit(1)
    if wait == "back-off":  # a 429 asking for five minutes: the step sleeps in its back-off
        llm.script(status(429, retry_after=300))
    else:
        llm.script(hang(600))
    runner = home.start()
    if wait == "back-off":
        wait_until(
            lambda: any(row["event"] == "step_failed" for row in home.events(order_id)),
            "the step's failed attempt",
        )
    else:
        wait_until(lambda: len(llm.requests) >= 1, "the model call")
    time.sleep(1)  # well inside the wait, which lasts minutes
    sent = time.monotonic()
    runner.send_signal(signum)
    out, err = runner.communicate(timeout=120)
    took = time.monotonic() - sent
    assert runner.returncode == 128 + signum, (out, err)
    assert took < 60, f"the runner took {took:.0f} s to stop in a wait of minutes"
    assert f"interrupted ({signal.Signals(signum).name})" in err, err
    assert "Traceback" not in err + out, err
    [interrupted] = [row for row in home.events(order_id) if row["event"] == "run_interrupted"]
    assert interrupted["step"] == "plan"

    again = home.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert home.statuses([order_id]) == {order_id: OrderStatus.COMPLETED}
    _delivered_once(home, [order_id])


def test_two_runners_on_one_home_run_every_order_once(tmp_path: Path) -> None:
    home = _home(tmp_path)
    order_ids = home.submit(8)
    runners = [home.start(), home.start()]
    outputs = [runner.communicate(timeout=600) for runner in runners]
    for runner, (out, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, out + err
        assert "completed → completed" not in out + err
    assert set(home.statuses(order_ids).values()) == {OrderStatus.COMPLETED}
    _delivered_once(home, order_ids)
    instance = home.instance()
    for order_id in order_ids:
        runs = instance.get_runs(RunsFilter(tags={PARTITION_TAG: order_id}))
        assert len(runs) == 1, (order_id, [run.status for run in runs])
        steps = Counter(
            row["step"] for row in home.events(order_id) if row["event"] == "step_started"
        )
        assert set(steps.values()) == {1}, (order_id, steps)
    said = "\n".join(out for out, _ in outputs)
    for order_id in order_ids:  # each order: completed by one runner, skipped by the other
        lines = [line for line in said.splitlines() if order_id in line]
        assert sum("completed" in line and "skipped" not in line for line in lines) == 1, lines


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 MB tmpfs of the test's own (the suite runs as root on CI: no tmpfs, no test)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)], capture_output=True
    )
    assert done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.decode()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the disk but for ``leave_bytes``."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with filler.open("wb") as out:
        out.truncate(0)
        remaining = free - leave_bytes
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            try:
                remaining -= out.write(chunk[: min(len(chunk), remaining)])
                out.flush()
            except OSError:
                break
    return filler


def test_a_full_disk_mid_run_loses_no_order_once_space_returns(small_disk: Path) -> None:
    home = _home(small_disk)
    order_ids = home.submit(6)
    runner = home.start()
    wait_until(
        lambda: OrderStatus.COMPLETED in home.statuses(order_ids).values(), "a first order done"
    )
    filler = _fill(small_disk, leave_bytes=256 * 1024)
    out, err = runner.communicate(timeout=600)
    assert runner.returncode != 0 and "the disk is full" in err, (out, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    left = home.statuses(order_ids)
    assert OrderStatus.PROCESSING in left.values(), left  # the order in flight, stranded
    filler.unlink()

    again = home.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(home.statuses(order_ids).values()) == {OrderStatus.COMPLETED}, (
        out, err[-2000:], again.stdout, again.stderr[-2000:]
    )  # fmt: skip
    _delivered_once(home, order_ids)


def test_under_the_daemon_the_expired_leases_sensor_takes_a_dead_worker_s_order_back(
    tmp_path: Path, llm: FakeLLMServer
) -> None:
    """A run worker killed mid-step: the sensor fails its run and dead-letters the order (the
    replay sensor replays it from its step after the cool-down), once, however often it ticks."""
    from dagster import build_sensor_context

    from agentforge_dagster.definitions import build_definitions
    from agentforge_dagster.persistence.resources import BusinessStoreResource
    from agentforge_dagster.settings import AgentForgeSettings

    home = _model_home(tmp_path, llm)
    [order_id] = home.submit(1)
    llm.script(hang(600))
    worker = home.start()  # stands in for a run worker: the same run, leased the same way
    wait_until(lambda: len(llm.requests) >= 1, "the model call")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)

    settings = AgentForgeSettings(
        storage={"home": tmp_path / "af", "dagster_home": tmp_path / "dh"}
    )
    defs = build_definitions(settings)
    url = settings.storage.resolved_database_url()
    instance = home.instance()
    sensor = defs.resolve_sensor_def("expired_leases")
    for _ in range(2):  # a second tick finds nothing more to do
        with build_sensor_context(
            instance=instance,
            resources={"store": BusinessStoreResource(database_url=url)},
            definitions=defs,
        ) as context:
            sensor(context)
    [run] = instance.get_runs(RunsFilter(tags={PARTITION_TAG: order_id}))
    assert run.status is DagsterRunStatus.FAILURE
    assert home.statuses([order_id]) == {order_id: OrderStatus.DEAD_LETTERED}
    store = home.store
    try:
        letter = store.dead_letters.dead_letter_of(order_id)
        assert letter is not None and letter["error_class"] == "infrastructure", letter
        assert letter["failed_step"] == "plan" and "lease" in letter["message"], letter
    finally:
        store.engine.dispose()
    assert [row["event"] for row in home.events(order_id)].count("lease_expired") == 1
