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
