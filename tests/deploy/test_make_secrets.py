"""docker/make-secrets.sh: settings from docker/.env as compose reads them, logins from stdin.

The script is run as root (no sudo), as on a host without sudo; ENV_FILE points it at a
temporary .env. Logins are made by the proxy image's htpasswd (bcrypt cost 10) and checked with
it; the front door's own tests (test_front_door.py) log in with logins made the same way.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import IMAGE_UID, PROXY_UID, ROOT

pytestmark = [pytest.mark.service, pytest.mark.xdist_group("deploy")]


def make_secrets(
    *args: str, env_file: Path, stdin: str = "", check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    # The test session's own DAGSTER_*/AGENTFORGE_* (the deployment fixture sets some) stay out.
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "AGENTFORGE_", "PROXY_IMAGE", "BCRYPT_"))
    }
    done = subprocess.run(
        ["bash", "docker/make-secrets.sh", *args],
        input=stdin,
        env={**clean, "ENV_FILE": str(env_file), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def owned(path: Path, uid: int, mode: int) -> bool:
    info = path.stat()
    return info.st_uid == uid and info.st_gid == uid and stat.S_IMODE(info.st_mode) == mode


def test_the_database_url_takes_its_settings_from_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# as compose reads it: comments, blanks, quotes, export, inline comments\n\n"
        "DAGSTER_PG_HOST=db.internal   # the database server\n"
        'export DAGSTER_PG_PORT="6543"\n'
        "DAGSTER_PG_USERNAME='shop_user'\n"
        "AGENTFORGE_DB=shop_business\n"
        f"AGENTFORGE_SECRETS_DIR={tmp_path / 'from-env-file'}\n"
        f"NOT_RUN=$(touch {tmp_path / 'executed'})\n"
    )
    make_secrets(str(tmp_path / "secrets"), env_file=env_file)
    secrets = tmp_path / "secrets"
    url = (secrets / "agentforge_database_url").read_text().strip()
    password = (secrets / "dagster_pg_password").read_text().strip()
    assert url == f"postgresql+psycopg2://shop_user:{password}@db.internal:6543/shop_business"
    assert len(password) == 32
    assert not (tmp_path / "executed").exists(), "the .env file is parsed, never run"
    assert owned(secrets, IMAGE_UID, 0o500)
    for name in ("dagster_pg_password", "agentforge_database_url", "aws_secret_access_key"):
        assert owned(secrets / name, IMAGE_UID, 0o400), name
    # No DIR: AGENTFORGE_SECRETS_DIR of the .env file.
    make_secrets(env_file=env_file)
    assert (tmp_path / "from-env-file" / "agentforge_database_url").exists()
    # init twice is refused; rotate replaces.
    again = make_secrets(str(secrets), env_file=env_file, check=False)
    assert again.returncode == 1 and "rotate" in again.stderr
    make_secrets(str(secrets), "rotate", env_file=env_file)
    assert (secrets / "dagster_pg_password").read_text().strip() != password


def test_the_shell_environment_wins_over_the_env_file_and_defaults_are_composes(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DAGSTER_PG_HOST=from-file\nDAGSTER_PG_PORT=6543\n")
    make_secrets(str(tmp_path / "a"), env_file=env_file, DAGSTER_PG_HOST="from-shell")
    url = (tmp_path / "a" / "agentforge_database_url").read_text()
    assert "@from-shell:6543/agentforge" in url and "://agentforge:" in url
    # No .env at all: compose.yaml's defaults.
    make_secrets(str(tmp_path / "b"), env_file=tmp_path / "absent")
    url = (tmp_path / "b" / "agentforge_database_url").read_text()
    assert (
        url.startswith("postgresql+psycopg2://agentforge:") and "@postgres:5432/agentforge" in url
    )
    # What would break the URL is refused.
    refused = make_secrets(
        str(tmp_path / "c"), env_file=env_file, check=False, DAGSTER_PG_USERNAME="a@b"
    )
    assert refused.returncode == 1 and "DAGSTER_PG_USERNAME" in refused.stderr
    assert not (tmp_path / "c" / "agentforge_database_url").exists()


def _verify(proxy_image: str, folder: Path, file: str, user: str, password: str) -> bool:
    """htpasswd -v of the proxy image: does the password match the line?"""
    done = subprocess.run(
        [
            *("docker", "run", "--rm", "-i", "--network", "none", "--user", str(PROXY_UID)),
            *("-v", f"{folder}:/users:ro", "--entrypoint", "htpasswd", proxy_image),
            *("-vi", f"/users/{file}", user),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def test_logins_from_stdin_bcrypt_cost_10_viewers_apart(tmp_path: Path, proxy_image: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"PROXY_IMAGE={proxy_image}\nAGENTFORGE_SECRETS_DIR={tmp_path / 's'}\n")
    make_secrets("user", "alice", env_file=env_file, stdin="alice-pw\n")  # not a terminal
    make_secrets("user", "bob", "viewer", "--password-stdin", env_file=env_file, stdin="bob-pw\n")
    folder = tmp_path / "s" / "front-door"
    operators = (folder / "operators.htpasswd").read_text().splitlines()
    viewers = (folder / "viewers.htpasswd").read_text().splitlines()
    assert [line.split(":")[0] for line in operators] == ["alice"]
    assert [line.split(":")[0] for line in viewers] == ["bob"]
    for line in operators + viewers:
        cost = int(line.split(":", 1)[1].split("$")[2])
        assert line.split(":", 1)[1].startswith("$2y$") and cost >= 10, line
    assert owned(folder, PROXY_UID, 0o500)
    for name in ("operators.htpasswd", "viewers.htpasswd"):
        assert owned(folder / name, PROXY_UID, 0o400), name
    assert _verify(proxy_image, folder, "operators.htpasswd", "alice", "alice-pw")
    assert not _verify(proxy_image, folder, "operators.htpasswd", "alice", "wrong")
    assert _verify(proxy_image, folder, "viewers.htpasswd", "bob", "bob-pw")
    # alice becomes a viewer: out of the operators' file, or she would keep launching runs.
    make_secrets("user", "alice", "viewer", env_file=env_file, stdin="alice-new\n")
    assert (folder / "operators.htpasswd").read_text() == ""
    viewers = (folder / "viewers.htpasswd").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in viewers) == ["alice", "bob"]
    assert _verify(proxy_image, folder, "viewers.htpasswd", "alice", "alice-new")
    # Refused: an empty password, a bad name, a cost below 10, no PROXY_IMAGE.
    for args, stdin, env in [
        (("user", "carol"), "\n", {}),
        (("user", "ca:rol"), "pw\n", {}),
        (("user", "carol"), "pw\n", {"BCRYPT_COST": "5"}),
    ]:
        done = make_secrets(*args, env_file=env_file, stdin=stdin, check=False, **env)
        assert done.returncode == 1, (args, done.stderr)
    no_image = tmp_path / "no-image.env"
    no_image.write_text(f"AGENTFORGE_SECRETS_DIR={tmp_path / 's'}\n")
    done = make_secrets("user", "carol", env_file=no_image, stdin="pw\n", check=False)
    assert done.returncode == 1 and "PROXY_IMAGE" in done.stderr


def test_the_traces_collector_headers_are_a_secret_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("")
    secrets = tmp_path / "secrets"
    refused = make_secrets(str(secrets), "otel", env_file=env_file, check=False)
    assert refused.returncode != 0 and "OTEL_EXPORTER_OTLP_HEADERS" in refused.stderr
    headers = "Authorization=Basic dG9rZW4=,x-tenant=shop"
    done = make_secrets(str(secrets), "otel", env_file=env_file, OTEL_EXPORTER_OTLP_HEADERS=headers)
    assert headers not in done.stderr + done.stdout
    assert (secrets / "otel_exporter_otlp_headers").read_text().strip() == headers
    assert owned(secrets / "otel_exporter_otlp_headers", IMAGE_UID, 0o400)
