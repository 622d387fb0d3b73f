"""Deploy history and the code server's environment (plain functions; Docker in tests/deploy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentforge_dagster.orchestration.deploy import (
    DeployError,
    Deployment,
    code_server_environment,
    previous_image,
    secret_files,
)


def entry(image: str, action: str = "deploy") -> Deployment:
    return Deployment(image, f"sha256:{image}", "c", 4000, action, "2026-11-29T00:00:00+00:00")


def test_rollback_goes_to_the_image_before_the_current_one() -> None:
    assert previous_image([entry("a"), entry("b")]) == "a"
    assert previous_image([entry("a"), entry("b"), entry("b")]) == "a"
    # Rolling back twice returns to where the first roll-back started.
    assert previous_image([entry("a"), entry("b"), entry("a", "rollback")]) == "b"


def test_nothing_to_roll_back_to_is_an_error() -> None:
    with pytest.raises(DeployError, match="nothing deployed"):
        previous_image([])
    with pytest.raises(DeployError, match="only a was ever deployed"):
        previous_image([entry("a"), entry("a")])


def test_the_code_server_gets_service_settings_but_no_host_paths() -> None:
    env = code_server_environment(
        {
            "AGENTFORGE_DATABASE_URL": "postgresql+psycopg2://db/x",
            "AGENTFORGE_HOME": "/home/me/.agentforge",
            "DAGSTER_PG_URL": "postgresql+psycopg2://db/d",
            "DAGSTER_HOME": "/home/me/dh",
            "AWS_REGION": "eu-west-1",
            "PATH": "/usr/bin",
        },
        {"AGENTFORGE_MODELS": "offline"},
    )
    assert env == {
        "AGENTFORGE_DATABASE_URL": "postgresql+psycopg2://db/x",
        "DAGSTER_PG_URL": "postgresql+psycopg2://db/d",
        "AWS_REGION": "eu-west-1",
        "AGENTFORGE_MODELS": "offline",
    }


def test_each_file_of_the_secrets_folder_goes_in_as_a_file_variable(tmp_path: Path) -> None:
    (tmp_path / "dagster_pg_password").write_text("pw")
    (tmp_path / "openai_api_key").write_text("sk")
    (tmp_path / ".hidden").write_text("x")
    assert secret_files(tmp_path) == {
        "DAGSTER_PG_PASSWORD_FILE": "/run/secrets/dagster_pg_password",
        "OPENAI_API_KEY_FILE": "/run/secrets/openai_api_key",
    }
    assert secret_files(None) == {}
    with pytest.raises(DeployError, match="does not exist"):
        secret_files(tmp_path / "missing")
