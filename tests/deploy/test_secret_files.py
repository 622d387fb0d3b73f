"""Every Python process of the project image turns NAME_FILE into NAME, entrypoint or not.

`docker-compose exec daemon dagster job launch ...` does not run the image's entrypoint; the
image's .pth (agentforge_dagster/secret_files.py) does the entrypoint's work at each interpreter
start. Here: `--entrypoint python|dagster|agentforge` and `docker exec`, each with a secret
mounted as a file, as compose mounts them; the entrypoint's rules (missing file: unset; both set
to different values: refused; unreadable: an error naming file and uid); and what it costs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.deploy.conftest import IMAGE_UID

pytestmark = [pytest.mark.service, pytest.mark.xdist_group("deploy")]
SHOW = "import os; print(repr(os.environ.get('DAGSTER_PG_PASSWORD')))"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:6])} ... exit {done.returncode}:\n{done.stderr}")
    return done


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """A secrets folder as make-secrets.sh makes it: owner 10001, mode 0500, files 0400."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name, value in {"dagster_pg_password": "pg-from-file", "unreadable": "x"}.items():
        (folder / name).write_text(value + "\n\n")
        os.chown(folder / name, IMAGE_UID, IMAGE_UID)
        (folder / name).chmod(0o400)
    os.chown(folder / "unreadable", 0, 0)  # root's: uid 10001 cannot read it
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    folder.chmod(0o500)
    return folder


def run(
    image: str, secrets: Path, entrypoint: str | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`docker run` of the image with the secrets folder at /run/secrets, as compose runs it."""
    options = ["--rm", "--network", "host", "-v", f"{secrets}:/run/secrets:ro", "--read-only"]
    options += [f"-e{key}={value}" for key, value in env.items()]
    if entrypoint is not None:
        options += ["--entrypoint", entrypoint]
    return docker("run", *options, image, *args, check=False)


PG_FILE = {"DAGSTER_PG_PASSWORD_FILE": "/run/secrets/dagster_pg_password"}


def test_python_without_the_entrypoint_reads_the_secret_file(
    images: dict[str, str], secrets: Path
) -> None:
    done = run(images["A"], secrets, "python", "-c", SHOW, **PG_FILE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "'pg-from-file'", "the file's value, trailing newlines dropped"
    # Through the entrypoint: it exported the value already; Python accepts the same value.
    done = run(images["A"], secrets, None, "python", "-c", SHOW, **PG_FILE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "'pg-from-file'"


def test_docker_exec_gets_the_secret_too(images: dict[str, str], secrets: Path) -> None:
    """The issue's case: `docker-compose exec` into a running service skips the entrypoint."""
    name = f"agentforge-secret-files-{uuid.uuid4().hex[:8]}"
    docker(
        *("run", "-d", "--rm", "--name", name, "--network", "host", "--read-only"),
        *(
            "-v",
            f"{secrets}:/run/secrets:ro",
            f"-eDAGSTER_PG_PASSWORD_FILE={PG_FILE['DAGSTER_PG_PASSWORD_FILE']}",
        ),
        *(images["A"], "sleep", "120"),
    )
    try:
        done = docker("exec", name, "python", "-c", SHOW)
        assert done.stdout.strip() == "'pg-from-file'"
        # And a shell command, through the entrypoint script (documented for non-Python tools).
        done = docker(
            "exec", name, "agentforge-entrypoint", "sh", "-c", 'echo "[$DAGSTER_PG_PASSWORD]"'
        )
        assert done.stdout.strip() == "[pg-from-file]"
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture
def dagster_home(tmp_path: Path, pg_admin: Engine) -> Iterator[Path]:
    """A DAGSTER_HOME whose dagster.yaml takes the PostgreSQL password from `env:` only."""
    db = f"agentforge_secret_files_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"""storage:
  postgres:
    postgres_db:
      username: postgres
      password: {{env: DAGSTER_PG_PASSWORD}}
      hostname: 127.0.0.1
      db_name: {db}
      port: 5432
      scheme: postgresql+psycopg2
"""
    )
    home.chmod(0o755)
    (home / "dagster.yaml").chmod(0o644)
    yield home
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def test_the_dagster_command_resolves_its_env_password_from_the_file(
    images: dict[str, str], secrets: Path, dagster_home: Path
) -> None:
    """`dagster instance info` builds the PostgreSQL storage: its password is `{env: ...}`."""

    def instance_info(**env: str) -> subprocess.CompletedProcess[str]:
        return docker(
            *("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp"),
            *("-v", f"{secrets}:/run/secrets:ro"),
            *("-v", f"{dagster_home}:/opt/dagster/dagster_home:ro"),
            *[f"-e{key}={value}" for key, value in env.items()],
            *("--entrypoint", "dagster", images["A"], "instance", "info"),
            check=False,
        )

    done = instance_info(**PG_FILE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PostgresRunStorage" in done.stdout
    # The file absent: the variable stays unset, and Dagster says so.
    missing = instance_info(DAGSTER_PG_PASSWORD_FILE="/run/secrets/absent")
    assert missing.returncode != 0
    assert "DAGSTER_PG_PASSWORD" in missing.stderr and "not set" in missing.stderr


def test_the_agentforge_command_submits_into_the_database_the_secret_file_names(
    images: dict[str, str], secrets: Path, tmp_path: Path
) -> None:
    """`agentforge submit` with AGENTFORGE_DATABASE_URL only as a file (a SQLite file here)."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, IMAGE_UID, IMAGE_UID)
    secrets.chmod(0o700)
    url = secrets / "agentforge_database_url"
    url.write_text("sqlite:////data/business.db\n")
    os.chown(url, IMAGE_UID, IMAGE_UID)
    url.chmod(0o400)
    secrets.chmod(0o500)
    done = docker(
        *("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp"),
        *("--tmpfs", "/opt/dagster/dagster_home:rw,uid=10001,gid=10001"),
        *("-v", f"{secrets}:/run/secrets:ro", "-v", f"{data}:/data"),
        "-eAGENTFORGE_DATABASE_URL_FILE=/run/secrets/agentforge_database_url",
        *("--entrypoint", "agentforge", images["A"], "submit", "--order-id", "secret-files-1"),
        *(
            "--customer",
            "c",
            "--service",
            "blog_post",
            "--brief",
            "a brief long enough",
            "--price",
            "10.00",
        ),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(data / "business.db") as conn:
        rows = conn.execute("SELECT order_id FROM orders").fetchall()
    assert rows == [("secret-files-1",)]


@pytest.mark.parametrize("entrypoint", ["python", "dagster", "agentforge"])
def test_both_set_to_different_values_is_refused(
    images: dict[str, str], secrets: Path, entrypoint: str
) -> None:
    args = ["-c", SHOW] if entrypoint == "python" else ["--help"]
    done = run(images["A"], secrets, entrypoint, *args, DAGSTER_PG_PASSWORD="typed", **PG_FILE)
    assert done.returncode == 64, (done.stdout, done.stderr)
    assert "both DAGSTER_PG_PASSWORD and DAGSTER_PG_PASSWORD_FILE are set" in done.stderr
    assert done.stdout == ""


def test_a_missing_file_leaves_the_variable_unset(images: dict[str, str], secrets: Path) -> None:
    done = run(
        images["A"], secrets, "python", "-c", SHOW, DAGSTER_PG_PASSWORD_FILE="/run/secrets/absent"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


def test_an_unreadable_file_stops_with_the_file_and_the_uid(
    images: dict[str, str], secrets: Path
) -> None:
    for entrypoint in ("python", None):  # the .pth, and the entrypoint script
        args = ["-c", SHOW] if entrypoint else ["python", "-c", SHOW]
        done = run(
            images["A"], secrets, entrypoint, *args, OPENAI_API_KEY_FILE="/run/secrets/unreadable"
        )
        assert done.returncode == 66, done.stderr
        assert "cannot read /run/secrets/unreadable (OPENAI_API_KEY_FILE) as uid 10001" in (
            done.stderr
        )


def test_what_the_pth_costs_at_start_up(images: dict[str, str], secrets: Path) -> None:
    """The module's import at interpreter start (python -X importtime), seven NAME_FILEs set."""
    names = ["DAGSTER_PG_PASSWORD", "AGENTFORGE_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"]
    names += ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENTFORGE_RABBITMQ_URL"]
    names += ["AGENTFORGE_REDIS_URL"]
    env = {f"{n}_FILE": f"/run/secrets/{n.lower()}" for n in names}
    env["DAGSTER_PG_PASSWORD_FILE"] = PG_FILE["DAGSTER_PG_PASSWORD_FILE"]
    loop = (
        "for i in $(seq 20); do python -X importtime -c pass 2>&1 | grep agentforge_secret_files;"
        " done"
    )
    done = run(images["A"], secrets, "sh", "-c", loop, **env)
    assert done.returncode == 0, done.stderr
    cumulative = sorted(int(line.split("|")[1]) for line in done.stdout.splitlines())
    assert len(cumulative) == 20, done.stdout
    median = cumulative[len(cumulative) // 2]
    print(f"\nagentforge_secret_files import at start-up: median {median} us (20 starts)")
    assert median < 5000, cumulative
