"""Artifacts in S3 (any S3 API: AWS, MinIO, moto), apart from the local IO manager so that only
a deployment with a bucket imports the AWS SDK (``dagster-aws``, boto3, botocore)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from dagster import ConfigurableIOManager, InitResourceContext, InputContext, OutputContext
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from agentforge_dagster.domain.models import Artifact
from agentforge_dagster.domain.steps import STEP_NAMES
from agentforge_dagster.persistence.io_managers import (
    artifact_key,
    dump_artifact,
    load_artifact,
    missing_input,
    not_retried,
    step_artifact_key,
)


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
        key = self._key(context)
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if not _not_found(exc):
                raise
            missing = missing_input(context, f"s3://{self.bucket}/{key}", exc)
            raise not_retried(missing) from missing
        return load_artifact(body.read())

    def existing_steps(self, order_id: str) -> set[str]:
        """The steps whose output for ``order_id`` is stored: one HEAD request per step."""
        client = self._client or self.s3.get_client()
        present = set()
        for step in STEP_NAMES:
            key = f"{self.prefix.strip('/')}/{step_artifact_key(order_id, step)}"
            try:
                client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if not _not_found(exc):
                    raise
                continue
            present.add(step)
        return present


def _not_found(error: ClientError) -> bool:
    """S3 says NoSuchKey to a GET and a bare 404 to a HEAD; a missing bucket is also "not there"."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
