"""A real ``dagster-daemon`` for tests: PostgreSQL instance from the repo's dagster.yaml, S3 logs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


class Daemon:
    """Starts, kills (SIGKILL) and restarts the daemon; cleans up every process it started."""

    def __init__(self, home: Path, env: dict[str, str], log: Path) -> None:
        self.home, self.env, self.log = home, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.groups: list[int] = []

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [DAEMON, "run", "-w", str(ROOT / "workspace.yaml")],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.groups.append(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the daemon process alone: its code server and run workers are left running."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def session_commands(self) -> list[str]:
        """The command lines of the processes the running daemon started (its session)."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            try:
                session = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[3])
                if entry.name.isdigit() and session == self.process.pid:
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, IndexError, ValueError):
                continue
        return found

    def stop_everything(self) -> None:
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)


def daemon_environment(
    tmp_path: Path,
    *,
    dagster_url: str,
    business_url: str,
    s3_endpoint: str,
    bucket: str,
    extra: dict[str, str] | None = None,
) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    # The repository's instance, with the model pool at 2: few orders still meet the cap.
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["concurrency"]["pools"]["default_limit"] = 2
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_url,
        "AGENTFORGE_DATABASE_URL": business_url,
        "AGENTFORGE_S3_BUCKET": bucket,
        "AGENTFORGE_S3_ENDPOINT_URL": s3_endpoint,
        "AGENTFORGE_HOME": str(tmp_path / "agentforge"),
        "AGENTFORGE_SENSOR_INTERVAL_SECONDS": "2",
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.05",
        "PYTHONPATH": str(ROOT),
        **(extra or {}),
    }
    return home, env


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
