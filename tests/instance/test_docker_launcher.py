"""Per-run caps of the Docker run launcher: parsing and clamping (plain functions)."""

from __future__ import annotations

from typing import Any

import pytest
from dagster._core.errors import DagsterInvariantViolationError

from agentforge_dagster.execution.containers import (
    HARDENING,
    decide_cap,
    parse_memory,
    with_volumes,
)
from agentforge_dagster.instance.docker_launcher import CappedDockerRunLauncher

GiB = 1024**3


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("2g", 2 * GiB), ("2G", 2 * GiB), ("64k", 65536), ("1000", 1000)],
)
def test_memory_sizes_are_read_as_docker_reads_them(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_a_memory_size_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory("lots")


def test_a_request_above_the_max_is_clamped_and_said_so() -> None:
    cap = decide_cap("mem_limit", "8g", 2 * GiB, 4 * GiB, parse_memory)
    assert cap.value == 4 * GiB
    assert cap.note is not None and "clamped" in cap.note


def test_a_request_within_the_max_is_granted_even_above_the_default() -> None:
    assert decide_cap("mem_limit", "3g", 2 * GiB, 4 * GiB, parse_memory).value == 3 * GiB
    assert decide_cap("nano_cpus", "500000000", 10**9, None, int).value == 500_000_000


def test_without_a_max_the_default_is_the_ceiling() -> None:
    assert decide_cap("nano_cpus", "4000000000", 10**9, None, int).value == 10**9


def test_without_any_cap_a_request_only_lowers_the_unlimited_container() -> None:
    assert decide_cap("mem_limit", "1g", None, None, parse_memory).value == GiB


def test_no_request_or_a_bad_one_gets_the_default() -> None:
    assert decide_cap("mem_limit", None, GiB, None, parse_memory).note is None
    bad = decide_cap("mem_limit", "lots", GiB, None, parse_memory)
    assert bad.value == GiB and bad.note is not None and "ignored" in bad.note
    assert decide_cap("nano_cpus", "-5", 10**9, None, int).value == 10**9


def test_the_dagster_internals_the_launcher_extends_are_still_there() -> None:
    """The launcher is the one module importing ``dagster._…``; this pins what it relies on."""
    import inspect

    from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
    from dagster._core.storage.tags import DOCKER_IMAGE_TAG
    from dagster._core.utils import parse_env_var
    from dagster._utils.merger import merge_dicts
    from dagster_docker import DockerRunLauncher

    assert {"RUNNING", "NOT_FOUND", "FAILED", "SUCCESS"} <= set(WorkerStatus.__members__)
    result = CheckRunHealthResult(WorkerStatus.NOT_FOUND, msg="gone")
    assert (result.status, result.msg) == (WorkerStatus.NOT_FOUND, "gone")
    assert DOCKER_IMAGE_TAG == "dagster/image"
    assert parse_env_var("KEY=a=b") == ("KEY", "a=b")
    assert merge_dicts({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    # The base-class methods the launcher overrides or calls, with the parameters it passes.
    for name, params in {
        "_launch_container_with_command": ["run", "docker_image", "command"],
        "check_run_worker_health": ["run"],
        "from_config_value": ["inst_data", "config_value"],
        "get_container_context": ["dagster_run"],
        "_get_client": ["container_context"],
    }.items():
        signature = inspect.signature(getattr(DockerRunLauncher, name))
        assert params == [p for p in signature.parameters if p not in ("self", "cls")]
    # Asking the code server which image it serves now (launch-time image resolution).
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import GetCurrentImageResult

    assert callable(GrpcServerCodeLocationOrigin.create_client)
    assert callable(DagsterGrpcClient.get_current_image)
    answer = GetCurrentImageResult(current_image="agentforge:x", serializable_error_info=None)
    assert answer.current_image == "agentforge:x"


def _launcher(**config: Any) -> CappedDockerRunLauncher:
    return CappedDockerRunLauncher(image="agentforge:test", **config)


def test_secrets_go_to_run_containers_as_files_never_as_values() -> None:
    launcher = _launcher(
        env_vars=["DAGSTER_PG_HOST=127.0.0.1"],
        secrets_dir="/etc/agentforge/secrets",
        secrets=["DAGSTER_PG_PASSWORD", "OPENAI_API_KEY"],
    )
    files, volumes = launcher.secret_mounts()
    assert files == {
        "DAGSTER_PG_PASSWORD_FILE": "/run/secrets/dagster_pg_password",
        "OPENAI_API_KEY_FILE": "/run/secrets/openai_api_key",
    }
    assert volumes == ["/etc/agentforge/secrets:/run/secrets:ro"]
    with pytest.raises(DagsterInvariantViolationError, match="both in env_vars and in secrets"):
        _launcher(
            env_vars=["DAGSTER_PG_PASSWORD"], secrets_dir="/s", secrets=["DAGSTER_PG_PASSWORD"]
        )
    with pytest.raises(DagsterInvariantViolationError, match="secrets_dir"):
        _launcher(secrets=["DAGSTER_PG_PASSWORD"])


def test_the_secrets_volume_joins_the_operators_volumes_in_either_form() -> None:
    extra = ["/s:/run/secrets:ro"]
    assert with_volumes(None, extra) == extra
    assert with_volumes(["/data:/data"], extra) == ["/data:/data", *extra]
    assert with_volumes({"/data": {"bind": "/data", "mode": "rw"}}, extra) == {
        "/data": {"bind": "/data", "mode": "rw"},
        "/s": {"bind": "/run/secrets", "mode": "ro"},
    }


def test_run_containers_are_hardened_unless_the_operator_says_otherwise() -> None:
    assert HARDENING["read_only"] is True and HARDENING["cap_drop"] == ["ALL"]
    assert "/tmp" in HARDENING["tmpfs"] and HARDENING["security_opt"] == ["no-new-privileges"]


def test_the_allowlist_of_the_socket_proxy_parses_and_every_client_has_calls() -> None:
    """The file the proxy image bakes in, read by its own parser (docker/proxy/agentforge-proxy)."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "docker" / "proxy"
    loader = importlib.machinery.SourceFileLoader(
        "agentforge_proxy", str(root / "agentforge-proxy")
    )
    spec = importlib.util.spec_from_loader("agentforge_proxy", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    rules = module.allowlist(root / "docker-api.allowlist")
    assert set(rules) == {"daemon", "webserver"}
    assert rules["daemon"]["/containers/create"] == {"POST"}
    assert "/containers/create" not in rules["webserver"], "the webserver only stops runs"
    assert rules["webserver"]["/containers/[A-Za-z0-9_.-]+/stop"] == {"POST"}
