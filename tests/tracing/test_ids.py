"""The derived ids: the same in every process, different across deployments and episodes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentforge_dagster.tracing.ids import OrderTrace, parse_traceparent, traceparent


def test_the_same_order_has_the_same_trace_in_another_process() -> None:
    here = OrderTrace("dep-a", "ord-1")
    there = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agentforge_dagster.tracing.ids import OrderTrace as T;"
            "t=T('dep-a','ord-1');print(t.trace_id_hex, f'{t.root_span_id:016x}')",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert there == [here.trace_id_hex, f"{here.root_span_id:016x}"]


def test_two_deployments_never_share_an_order_trace() -> None:
    assert OrderTrace("dep-a", "ord-1").trace_id != OrderTrace("dep-b", "ord-1").trace_id
    assert OrderTrace("dep-a", "ord-1").trace_id != OrderTrace("dep-a", "ord-2").trace_id


def test_each_episode_has_its_own_root_in_the_same_trace() -> None:
    first, second = OrderTrace("d", "o", 0), OrderTrace("d", "o", 1)
    assert first.trace_id == second.trace_id
    assert first.root_span_id != second.root_span_id
    assert first.run_span_id("run-1") == second.run_span_id("run-1") != first.run_span_id("run-2")


def test_ids_are_valid_w3c_ids() -> None:
    trace = OrderTrace("d", "o")
    assert 0 < trace.trace_id < 2**128 and 0 < trace.root_span_id < 2**64
    assert parse_traceparent(trace.traceparent()) == (trace.trace_id, trace.root_span_id, True)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # all-zero trace id
        "00-" + "a" * 32 + "-" + "0" * 16 + "-01",  # all-zero span id
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # version ff is invalid
        "00-" + "A" * 32 + "-" + "b" * 16 + "-01",  # upper case
        "00-" + "a" * 31 + "-" + "b" * 16 + "-01",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01-extra",
        "00-" + "g" * 32 + "-" + "b" * 16 + "-01",
        "x" * 500,
    ],
)
def test_a_malformed_traceparent_is_none(header: str | None) -> None:
    assert parse_traceparent(header) is None


def test_a_not_sampled_traceparent_says_so() -> None:
    assert traceparent(5, 7, sampled=False).endswith("-00")
    assert parse_traceparent(traceparent(5, 7, sampled=False)) == (5, 7, False)
