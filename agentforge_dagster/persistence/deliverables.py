"""Where a delivered deliverable lives: a local folder (embedded default) or a versioned S3 bucket.

A run container is removed when its run ends, and any file it wrote with it: in a deployment the
deliverable is an S3 object, ``s3://BUCKET/deliveries/<order>.md``, in a bucket that keeps every
version. The location recorded with the delivery names the exact version
(``s3://BUCKET/KEY?versionId=V``), so a later overwrite can never change what a customer was given;
its SHA-256 is recorded beside it and S3 checks the upload against it (``ChecksumSHA256``).

A customer's link is a presigned GET of that version, made on demand
(``agentforge delivery link ORDER --expires 1h``) and printed, never stored: whoever holds it can
read the object until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from agentforge_dagster.domain.errors import PermanentError

# S3 refuses presigned links valid longer than seven days (SigV4).
MAX_LINK_SECONDS = 7 * 24 * 3600
_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "InvalidArgument", "404"})


class NotLinkable(PermanentError):
    """A delivery that cannot be linked: it is a local file, or the link asked for is too long."""


class Deliverables(Protocol):
    """Where deliverables are written and read back (for the delivery's check)."""

    def put(self, order_id: str, content: bytes) -> str:
        """Store the order's deliverable; returns the location to record."""
        ...

    def read(self, location: str) -> bytes | None:
        """The bytes at a recorded location, or None when nothing is there."""
        ...


@dataclass(frozen=True)
class LocalDeliverables:
    """``<folder>/<order>.md``, written atomically (the embedded default)."""

    folder: Path

    def put(self, order_id: str, content: bytes) -> str:
        path = self.folder / f"{order_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, path)
        return str(path)

    def read(self, location: str) -> bytes | None:
        path = Path(location)
        return path.read_bytes() if path.is_file() else None


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str
    version_id: str | None

    def __str__(self) -> str:
        version = f"?versionId={self.version_id}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{version}"


def parse_s3_location(location: str) -> S3Location | None:
    """``s3://bucket/key?versionId=v`` → its parts; None for anything that is not an S3 URL."""
    parts = urlsplit(location)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        return None
    version = parse_qs(parts.query).get("versionId", [None])[0]
    return S3Location(parts.netloc, parts.path.lstrip("/"), version)


@dataclass(frozen=True)
class S3Deliverables:
    """``s3://bucket/<prefix>/<order>.md`` in a versioned bucket; the location names the version."""

    client: Any
    bucket: str
    prefix: str = "deliveries"

    def put(self, order_id: str, content: bytes) -> str:
        key = f"{self.prefix.strip('/')}/{order_id}.md"
        digest = hashlib.sha256(content).digest()
        answer = self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=content,
            ContentType="text/markdown; charset=utf-8",
            # S3 refuses the upload if the bytes it got do not have this SHA-256.
            ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
            Metadata={"sha256": digest.hex(), "order-id": order_id},
        )
        return str(S3Location(self.bucket, key, answer.get("VersionId")))

    def read(self, location: str) -> bytes | None:
        where = parse_s3_location(location)
        if where is None:
            return None
        from botocore.exceptions import ClientError  # with S3 only: the SDK is a second to import

        extra = {"VersionId": where.version_id} if where.version_id else {}
        try:
            answer = self.client.get_object(Bucket=where.bucket, Key=where.key, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        return bytes(answer["Body"].read())


def presigned_link(client: Any, location: str, expires_seconds: int) -> str:
    """A GET link to exactly the delivered version, valid for ``expires_seconds``."""
    where = parse_s3_location(location)
    if where is None:
        raise NotLinkable(
            f"the delivery is the local file {location}, not an S3 object: links need "
            "AGENTFORGE_S3_BUCKET set when the order is delivered"
        )
    if not 0 < expires_seconds <= MAX_LINK_SECONDS:
        raise NotLinkable(f"a link lasts from 1 s to 7 days, not {expires_seconds} s")
    params = {"Bucket": where.bucket, "Key": where.key}
    if where.version_id:
        params["VersionId"] = where.version_id
    return str(
        client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``15m``, ``1h``, ``7d`` or a plain number of seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit else value
    if not number.isdigit():
        raise ValueError(f"not a duration: {text!r} (use e.g. 15m, 1h, 7d)")
    return int(number) * (unit or 1)
