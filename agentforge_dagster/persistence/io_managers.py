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

from dagster import ConfigurableIOManager, InitResourceContext, InputContext, OutputContext
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from agentforge_dagster.domain.models import ARTIFACT_TYPES, Artifact


def dump_artifact(artifact: Artifact) -> bytes:
    document = {"type": type(artifact).__name__, "data": artifact.model_dump(mode="json")}
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


def load_artifact(raw: bytes) -> Artifact:
    document = json.loads(raw)
    return ARTIFACT_TYPES[document["type"]].model_validate(document["data"])


def artifact_key(context: InputContext | OutputContext) -> str:
    """``<asset>/<order>.json``: one object per step and order."""
    asset = "/".join(context.asset_key.path)
    partition = context.asset_partition_key if context.has_asset_partitions else "_unpartitioned"
    return f"{asset}/{partition}.json"


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
        return load_artifact(self._path(context).read_bytes())


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create the bucket if missing and keep every version of every object."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


class S3ArtifactIOManager(ConfigurableIOManager):
    """Artifacts as JSON objects ``s3://bucket/prefix/<asset>/<order>.json`` in a versioned bucket.

    Works with any S3 API (AWS, MinIO, moto) through ``dagster-aws``'s ``S3Resource``.
    """

    s3: S3Resource
    bucket: str
    prefix: str = "artifacts"

    _client: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._client = self.s3.get_client()
        ensure_bucket(self._client, self.bucket)

    def _key(self, context: InputContext | OutputContext) -> str:
        return f"{self.prefix.strip('/')}/{artifact_key(context)}"

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        key = self._key(context)
        put = self._client.put_object(
            Bucket=self.bucket, Key=key, Body=dump_artifact(obj), ContentType="application/json"
        )
        context.add_output_metadata(
            {"uri": f"s3://{self.bucket}/{key}", "s3_version_id": put.get("VersionId") or "none"}
        )

    def load_input(self, context: InputContext) -> Any:
        body = self._client.get_object(Bucket=self.bucket, Key=self._key(context))["Body"]
        return load_artifact(body.read())
