"""Where backups and audit anchors are kept: a local folder or an S3 prefix, behind one protocol.

Its own module so that both the backups (:mod:`.backup`) and the audit anchors (:mod:`.anchors`)
use it without importing each other.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

from agentforge_dagster.domain.errors import PermanentError

MANIFEST = "manifest.json"


class BackupError(PermanentError):
    """A backup could not be made or restored; the message says what to do."""


class BackupCorrupted(BackupError):
    """The backup file is not the one its manifest describes."""


class BackupLocation(Protocol):
    """Where backups live: one folder (or prefix) per backup id."""

    def put(self, backup_id: str, name: str, source: Path) -> None: ...
    def get(self, backup_id: str, name: str, target: Path) -> None: ...
    def backup_ids(self) -> list[str]: ...
    def names(self, folder: str) -> list[str]: ...
    def delete(self, backup_id: str) -> None: ...
    def remove(self, folder: str, name: str) -> None: ...
    def describe(self) -> str: ...


class LocalBackupLocation:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, backup_id: str, name: str, source: Path) -> None:
        folder = self.root / backup_id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)

    def get(self, backup_id: str, name: str, target: Path) -> None:
        source = self.root / backup_id / name
        if not source.exists():
            raise BackupError(f"backup {backup_id!r} has no {name} in {self.root}")
        shutil.copyfile(source, target)

    def backup_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).exists())

    def names(self, folder: str) -> list[str]:
        path = self.root / folder
        return sorted(p.name for p in path.iterdir() if p.is_file()) if path.is_dir() else []

    def delete(self, backup_id: str) -> None:
        shutil.rmtree(self.root / backup_id)

    def remove(self, folder: str, name: str) -> None:
        (self.root / folder / name).unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.root)


class S3BackupLocation:
    def __init__(self, client: Any, bucket: str, prefix: str = "backups") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def _key(self, backup_id: str, name: str) -> str:
        return f"{self.prefix}/{backup_id}/{name}"

    def put(self, backup_id: str, name: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(backup_id, name))

    def get(self, backup_id: str, name: str, target: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(backup_id, name), str(target))
        except self.client.exceptions.ClientError as exc:
            raise BackupError(
                f"backup {backup_id!r} has no {name} in s3://{self.bucket}/{self.prefix}"
            ) from exc

    def _keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def backup_ids(self) -> list[str]:
        return sorted(
            key.split("/")[-2] for key in self._keys(f"{self.prefix}/") if key.endswith(MANIFEST)
        )

    def names(self, folder: str) -> list[str]:
        return sorted(key.rsplit("/", 1)[-1] for key in self._keys(f"{self.prefix}/{folder}/"))

    def delete(self, backup_id: str) -> None:
        for key in self._keys(f"{self.prefix}/{backup_id}/"):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def remove(self, folder: str, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(folder, name))

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"
