"""IO managers that keep every step's output as readable JSON, one object per order and step.

The files are what an operator or auditor reads, and what a re-executed run loads instead of
redoing earlier steps.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableIOManager,
    Failure,
    InputContext,
    OutputContext,
)

from agentforge_dagster.domain.errors import MissingArtifact
from agentforge_dagster.domain.models import ARTIFACT_TYPES, Artifact
from agentforge_dagster.domain.steps import STEP_NAMES, step_asset_name


def dump_artifact(artifact: Artifact) -> bytes:
    document = {"type": type(artifact).__name__, "data": artifact.model_dump(mode="json")}
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


def load_artifact(raw: bytes) -> Artifact:
    document = json.loads(raw)
    return ARTIFACT_TYPES[document["type"]].model_validate(document["data"])


def artifact_key(context: InputContext | OutputContext) -> str:
    """``<asset>/<order>.json``: one object per step and order."""
    asset = "/".join(context.asset_key.path)
    return f"{asset}/{_partition(context)}.json"


def step_artifact_key(order_id: str, step: str) -> str:
    """The same key named by order and step: ``order_plan/<order>.json``."""
    return f"{step_asset_name(step)}/{order_id}.json"


def _partition(context: InputContext | OutputContext) -> str:
    return context.asset_partition_key if context.has_asset_partitions else "_unpartitioned"


def missing_input(context: InputContext, location: str, cause: Exception) -> MissingArtifact:
    """The error for an input whose artifact is gone, caused by the store's own error."""
    step = context.asset_key.path[-1].removeprefix("order_")
    missing = MissingArtifact(_partition(context), step, location)
    missing.__cause__ = cause
    return missing


def not_retried(error: MissingArtifact) -> Failure:
    """A permanent failure of the step: no step retry is spent on it.

    Dagster applies the step's retry policy to any error raised while loading inputs except a
    ``Failure(allow_retries=False)``; raised ``from error``, the dead letter names ``error``.
    """
    return Failure(
        description=str(error),
        metadata={"error_class": error.error_class, "error_type": type(error).__name__},
        allow_retries=False,
    )


class LocalArtifactIOManager(ConfigurableIOManager):
    """Artifacts as JSON files under ``base_dir`` (the embedded default)."""

    base_dir: str

    def _path(self, context: InputContext | OutputContext) -> Path:
        return Path(self.base_dir) / artifact_key(context)

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(dump_artifact(obj))
        os.replace(tmp, path)
        context.add_output_metadata({"path": str(path)})

    def load_input(self, context: InputContext) -> Any:
        path = self._path(context)
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            missing = missing_input(context, str(path), exc)
            raise not_retried(missing) from missing
        return load_artifact(raw)

    def existing_steps(self, order_id: str) -> set[str]:
        """The steps whose output for ``order_id`` is stored (what a replay can start after)."""
        base = Path(self.base_dir)
        return {step for step in STEP_NAMES if (base / step_artifact_key(order_id, step)).is_file()}
