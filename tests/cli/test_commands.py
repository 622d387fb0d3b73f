"""The ``agentforge`` console script, run as a user runs it (a real subprocess each time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from agentforge_dagster.persistence.store import BusinessStore

AGENTFORGE = str(Path(sys.executable).parent / "agentforge")


@pytest.fixture
def cli(tmp_path: Path):
    env = {
        **os.environ,
        "AGENTFORGE_HOME": str(tmp_path / "af"),
        "DAGSTER_HOME": str(tmp_path / "dh"),
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.001",
    }
    env.pop("AGENTFORGE_DATABASE_URL", None)

    def invoke(
        *args: str, stdin: bytes | None = None, database_url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [AGENTFORGE, *args],
            env={**env, "AGENTFORGE_DATABASE_URL": database_url} if database_url else env,
            cwd=tmp_path,
            input=stdin,
            capture_output=True,
            timeout=300,
        )
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    return invoke


def rejections(tmp_path: Path) -> list[tuple[str, str]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'af' / 'agentforge.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("select source, errors from rejected_orders")).all()
        audited = conn.execute(
            text("select count(*) from audit_log where event = 'order_rejected'")
        ).scalar()
    assert audited == len(rows)
    return [(row.source, row.errors) for row in rows]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"customer": "caf\xe9", "service": "blog_post"}', "not UTF-8 text"),
        (
            json.dumps(
                {"customer": "A", "service": "blog_post", "brief": "b" * 1_000_000, "price": "10"}
            ).encode(),
            "brief: too long",
        ),
        (
            json.dumps(
                {
                    "customer": "A",
                    "service": "yachts",
                    "brief": "A decent brief here",
                    "price": "-3",
                }
            ).encode(),
            "service: Input should be",
        ),
        (b"", "order: not valid JSON"),
    ],
)
def test_bad_order_files_are_refused_clearly_and_recorded(
    cli, tmp_path: Path, content: bytes, expected: str
) -> None:
    order_file = tmp_path / "order.json"
    order_file.write_bytes(content)
    done = cli("submit", "--file", str(order_file))
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    [(source, errors)] = rejections(tmp_path)
    assert source == f"file:{order_file}" and expected.split(":")[0] in errors
    assert "queued             0" in cli("status").stdout


def test_missing_flags_and_files_are_explained(cli, tmp_path: Path) -> None:
    done = cli("submit", "--customer", "Acme")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for field in ("service", "brief", "price"):
        assert f"{field}: field required" in done.stderr
    missing = cli("submit", "--file", str(tmp_path / "absent.json"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "absent.json" in missing.stderr


SUBMIT_CLI_1 = (
    "submit",
    "--order-id",
    "cli-1",
    "--customer",
    "Acme",
    "--service",
    "blog_post",
    "--brief",
    "Write about retries in small online shops",
    "--price",
    "99.00",
)


def test_submit_run_status_report_and_audit(cli, tmp_path: Path) -> None:
    done = cli(*SUBMIT_CLI_1)
    assert done.returncode == 0 and "queued cli-1" in done.stdout
    again = cli(*SUBMIT_CLI_1)  # the same order again: nothing to do, and that is a success
    assert again.returncode == 0 and "already queued cli-1" in again.stdout
    other = cli(*SUBMIT_CLI_1[:-1], "98.00")  # the same id for a different order: refused
    assert other.returncode == 2 and "order_id: 'cli-1' is already used" in other.stderr
    assert [source for source, _ in rejections(tmp_path)] == ["cli-flags"]
    ran = cli("run", "--fault-rate", "0.3", "--seed", "3")
    assert ran.returncode == 0, ran.stderr
    assert "[1/1] cli-1 completed" in ran.stdout
    assert "completed          1" in cli("status").stdout
    report = cli("report").stdout
    assert "orders accepted:       1  (completed 1, dead lettered 0, quarantined 0" in report
    assert "orders run:            1" in report and "refused at intake:     1" in report
    assert "at injected fault rate f = 0.30" in report
    verified = cli("audit", "verify")
    assert verified.returncode == 0 and "audit chain intact" in verified.stdout


def submit_flags(order_id: str) -> tuple[str, ...]:
    return (
        "submit",
        "--order-id",
        order_id,
        "--customer",
        "Entry Co",
        "--service",
        "blog_post",
        "--brief",
        "Write about every way an order can be started",
        "--price",
        "30.00",
    )


def test_a_failed_order_is_dead_lettered_and_recovered_without_a_daemon(cli) -> None:
    """The embedded default has the daemon's dead-letter queue: list, replay, run."""
    assert cli(*submit_flags("doomed-1")).returncode == 0
    ran = cli("run", "--fault-rate", "0.9", "--seed", "1")  # seeded: this order fails for good
    assert ran.returncode == 1 and "doomed-1 dead_lettered" in ran.stdout, ran.stdout
    listed = cli("dlq", "list").stdout.splitlines()
    assert len(listed) == 1 and listed[0].startswith("doomed-1  step=")
    assert "transient/InjectedFault  attempts=7  replays=0" in listed[0]
    assert "dead letters: 1" in cli("status").stdout
    assert cli("dlq", "replay", "doomed-1").returncode == 0
    again = cli("run")
    assert again.returncode == 0 and "replay doomed-1 completed" in again.stdout, again.stdout
    assert cli("dlq", "list").stdout.strip() == "the dead-letter queue is empty"


def test_dagster_job_execute_runs_a_submitted_order_and_refuses_an_unknown_one(
    cli, tmp_path: Path
) -> None:
    """After ``agentforge submit --partition``, Dagster's own CLI runs the order (same instance,
    same store)."""
    assert cli(*submit_flags("by-dagster-1"), "--partition").returncode == 0
    env = {
        **os.environ,
        "AGENTFORGE_HOME": str(tmp_path / "af"),
        "DAGSTER_HOME": str(tmp_path / "dh"),
    }
    env.pop("AGENTFORGE_DATABASE_URL", None)

    def execute(order_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(Path(sys.executable).parent / "dagster"),
                "job",
                "execute",
                "-m",
                "agentforge_dagster.definitions",
                "-j",
                "order_pipeline",
                "--tags",
                json.dumps({"dagster/partition": order_id}),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = execute("by-dagster-1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "completed          1" in cli("status").stdout
    refused = execute("never-submitted")
    assert refused.returncode != 0
    assert "'never-submitted' was never submitted" in refused.stdout + refused.stderr
    assert "queued             0" in cli("status").stdout, "the refused run changed nothing"


def test_order_from_standard_input(cli) -> None:
    order = {
        "customer": "Stdin Co",
        "service": "email_campaign",
        "brief": "Invite customers to the spring sale",
        "price": "45.50",
    }
    done = cli("submit", "--file", "-", stdin=json.dumps(order).encode())
    assert done.returncode == 0 and done.stdout.startswith("queued ord-")


def test_demo_prints_progress_and_the_report(cli) -> None:
    done = cli("demo", "--orders", "3", "--fault-rate", "0.3", "--seed", "5")
    assert done.returncode == 0, done.stderr
    assert "[3/3]" in done.stdout and "Reliability report" in done.stdout
    assert "(1 - f)^6 at injected fault rate f = 0.30" in done.stdout


def test_backup_list_restore_and_a_corrupted_backup(cli, tmp_path: Path) -> None:
    assert cli("db", "upgrade").returncode == 0
    assert (
        cli(
            "submit",
            "--customer",
            "Acme",
            "--service",
            "blog_post",
            "--brief",
            "Write about backups that are actually tested",
            "--price",
            "10",
        ).returncode
        == 0
    )
    made = cli("backup", "--keep", "2")
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.split()[1].rstrip(":")
    listed = cli("backups")
    assert backup_id in listed.stdout and "orders 1" in listed.stdout

    target = tmp_path / "restored.db"
    restored = cli("restore", backup_id, "--target-url", f"sqlite:///{target}")
    assert restored.returncode == 0, restored.stderr
    assert "orders 1" in restored.stdout and "audit chain verified" in restored.stdout

    refused = cli("restore", backup_id, "--target-url", f"sqlite:///{target}")
    assert refused.returncode == 1 and "not empty" in refused.stderr
    dump = tmp_path / "af" / "backups" / backup_id / "business.sqlite.gz"
    dump.write_bytes(dump.read_bytes()[:-10] + b"0123456789")
    corrupted = cli("restore", backup_id, "--target-url", f"sqlite:///{tmp_path / 'other.db'}")
    assert corrupted.returncode == 1 and "is corrupted" in corrupted.stderr
    assert "Traceback" not in corrupted.stderr


def test_audit_verify_reports_a_tampered_row(cli, tmp_path: Path) -> None:
    cli(
        "submit",
        "--customer",
        "Acme",
        "--service",
        "blog_post",
        "--brief",
        "Write about audit trails nobody can edit",
        "--price",
        "10",
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'af' / 'agentforge.db'}")
    with engine.begin() as conn:
        conn.execute(text("update audit_log set detail = '{}' where seq = 1"))
    engine.dispose()
    verified = cli("audit", "verify")
    assert verified.returncode == 1
    assert "audit chain BROKEN at row 1: content changed" in verified.stderr


def test_hostile_orders_are_refused_in_one_line_per_field_and_recorded(cli, tmp_path: Path) -> None:
    huge_price = tmp_path / "huge.json"
    huge_price.write_text(
        '{"customer": "A", "service": "blog_post", "brief": "A decent brief", "price": '
        + "1" * 5000
        + "}"
    )
    by_file = cli("submit", "--file", str(huge_price))
    by_stdin = cli("submit", "--file", "-", stdin=b"[" * 200_000 + b"]" * 200_000)
    by_flags = cli(*SUBMIT_CLI_1[:6], "yachts", *SUBMIT_CLI_1[7:])  # an unknown --service
    for done, expected in (
        (by_file, "  - price: too many digits"),
        (by_stdin, "  - order: JSON nested too deeply"),
        (by_flags, "  - service: Input should be 'blog_post'"),
    ):
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert expected in done.stderr.splitlines()[1], done.stderr
    assert [source for source, _ in rejections(tmp_path)] == [
        f"file:{huge_price}",
        "stdin",
        "cli-flags",
    ]


def test_an_unusable_database_ends_every_command_with_one_line(cli, tmp_path: Path) -> None:
    order = tmp_path / "order.json"
    order.write_text(
        json.dumps(
            {"customer": "A", "service": "blog_post", "brief": "A decent brief", "price": "5"}
        )
    )
    read_only = tmp_path / "read-only.db"
    BusinessStore.from_url(f"sqlite:///{read_only}").upgrade()
    corrupt = tmp_path / "af" / "agentforge.db"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"this is not a database" * 100)
    for done, reason in (
        (cli("status"), "file is not a database"),
        (
            cli(
                "submit",
                "--file",
                str(order),
                database_url=f"sqlite:///file:{read_only}?mode=ro&uri=true",
            ),
            "readonly database",
        ),
        (
            cli("status", database_url="postgresql+psycopg2://postgres@127.0.0.1:9/none"),
            "127.0.0.1",
        ),
    ):
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert reason in line and "nothing could be recorded there" in line, line


def test_audit_verify_reports_a_damaged_database_in_one_line(cli, tmp_path: Path) -> None:
    database = tmp_path / "af" / "agentforge.db"
    database.parent.mkdir(parents=True)
    store = BusinessStore.from_url(f"sqlite:///{database}")
    store.upgrade()
    for index in range(200):
        store.audit.record_event("drill_event", order_id=f"o-{index}")
    store.engine.dispose()
    data = bytearray(database.read_bytes())
    data[4096 * 2 :] = b"\xa5" * (len(data) - 4096 * 2)
    database.write_bytes(bytes(data))
    verified = cli("audit", "verify")
    assert verified.returncode == 1
    assert "database DAMAGED" in verified.stderr and "Traceback" not in verified.stderr
    assert "audit chain intact" not in verified.stdout


def test_demo_shows_a_progress_bar_with_rate_and_eta_on_a_terminal(tmp_path: Path) -> None:
    """Under a pseudo-terminal the demo draws a bar; the other tests read its plain lines."""
    import pty

    primary, replica = pty.openpty()
    env = {
        **os.environ,
        "AGENTFORGE_HOME": str(tmp_path / "af"),
        "DAGSTER_HOME": str(tmp_path / "dh"),
        "COLUMNS": "160",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agentforge"), "demo", "--orders", "2"],
        stdin=replica, stdout=replica, stderr=replica, env=env, timeout=300, check=False,
    )  # fmt: skip
    os.close(replica)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, screen[-2000:]
    assert "2/2" in screen and "/s" in screen and "ETA" in screen
    assert "[1/2]" not in screen, "no plain per-order lines on a terminal"
