"""Per-run caps of the Docker run launcher: parsing and clamping (plain functions)."""

from __future__ import annotations

import pytest

from agentforge_dagster.execution.launcher import decide_cap, parse_memory

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
