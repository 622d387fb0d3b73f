"""The code location loads and validates the way the Dagster CLI and UI load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Backoff, Definitions, Jitter

from agentforge_dagster.execution.assets import MODEL_POOL, ORDER_GROUP
from agentforge_dagster.execution.steps import STEPS

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_six_order_assets_with_retry_policy_and_pools(defs: Definitions) -> None:
    job = defs.resolve_job_def("order_pipeline")
    policy = job.op_retry_policy
    assert policy is not None and policy.max_retries >= 1
    # Around a step body: linear, so bounded (Dagster has no cap); inside it run_step asks itself.
    assert policy.backoff is Backoff.LINEAR and policy.jitter is Jitter.PLUS_MINUS
    graph = defs.resolve_asset_graph()
    keys = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    assert keys == sorted(
        [
            *(spec.asset_name for spec in STEPS),
            "daily_business_figures",
            "daily_reliability",
            "dead_letter_queue",
            "broker/rabbitmq_intake",
            "broker/redis_intake",
            "broker/order_events",
            "model/providers",
        ]
    )
    for spec in STEPS:
        node_def = job.graph.node_named(spec.asset_name).definition
        assert getattr(node_def, "retry_policy", None) is None, "one policy, on the job"
        assert node_def.pool == (MODEL_POOL if spec.uses_model else None)  # type: ignore[union-attr]
        assets_def = defs.resolve_assets_def(spec.asset_name)
        assert assets_def.group_names_by_key[assets_def.key] == ORDER_GROUP
