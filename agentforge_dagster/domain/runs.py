"""How a run of the order pipeline is recognised: the run tags every layer reads, in one place.

Plain strings (the domain imports no Dagster); the ``dagster/`` ones are Dagster's own tag names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PARTITION_TAG = "dagster/partition"  # the order id: orders are the pipeline's partitions
WILL_RETRY_TAG = "dagster/will_retry"  # written by Dagster just after a run's failure event
PIPELINE_TAG = "agentforge/pipeline"
ORDER_PIPELINE_TAG_VALUE = "orders"  # PIPELINE_TAG's value on every run of the order pipeline
ORDER_TAG = "agentforge/order_id"
TRACE_TAG = "agentforge/trace_id"  # the order's trace, on its runs when the deployment traces
PARENT_RUN_TAG = "dagster/parent_run_id"  # a retry or re-execution names the run it repeats
ROOT_RUN_TAG = "dagster/root_run_id"
REPLAY_OF_TAG = "agentforge/replay_of"  # the failed run a replay run starts over from
REPLAY_FROM_TAG = "agentforge/replay_from"  # the step a replay run starts at

ORDER_PIPELINE = "order_pipeline"
ORDERS_PARTITIONS_NAME = "orders"
LAUNCH_STEP = "launch"  # where a run that failed before any step started is said to have failed
# Metadata of the engine event in which the run launcher reports how a run's container ended.
CONTAINER_EXIT_CODE_KEY = "container_exit_code"
CONTAINER_OOM_KEY = "container_oom_killed"
CONTAINER_HEADLINE_KEY = "container_report"
CONTAINER_OUTPUT_KEY = "container_output"


def order_of_run(tags: Mapping[str, str]) -> str | None:
    """The order a run of the order pipeline is for; None for any other run."""
    if tags.get(PIPELINE_TAG) != ORDER_PIPELINE_TAG_VALUE:
        return None
    return tags.get(PARTITION_TAG)


# Exceptions Dagster wraps around what a step raised: the step's own error is their cause.
DAGSTER_WRAPPERS = frozenset({"RetryRequestedFromPolicy", "RetryRequested", "Failure"})


def root_error(error: Any) -> tuple[str, str] | None:
    """The class name and message (on one line) of what the code raised, under Dagster's wrappers.

    ``error`` is Dagster's serialised error (``cls_name``, ``message``, ``cause``), read by duck
    typing: the domain imports no Dagster. Dagster writes ``module.Class: message``; this keeps the
    message alone.
    """
    if error is None:
        return None
    while error.cause is not None and (
        not error.cls_name
        or error.cls_name in DAGSTER_WRAPPERS
        or error.cls_name.startswith("Dagster")
    ):
        error = error.cause
    cls_name = error.cls_name or "Exception"
    line = " ".join((error.message or "").split())
    head, separator, text = line.partition(": ")
    return cls_name, (text if separator and head.rsplit(".", 1)[-1] == cls_name else line)
