"""Dagster resources for the persistence layer."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from agentforge_dagster.domain.errors import UnknownOrder
from agentforge_dagster.domain.runs import order_of_run
from agentforge_dagster.persistence.anchors import load_anchor_key
from agentforge_dagster.persistence.backup_locations import (
    BackupLocation,
    LocalBackupLocation,
    S3BackupLocation,
)
from agentforge_dagster.persistence.deliverables import (
    Deliverables,
    LocalDeliverables,
    S3Deliverables,
)
from agentforge_dagster.persistence.leases import DEFAULT_LEASE_SECONDS, LeaseKeeper
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import S3Settings, StorageSettings, defaults

# The settings' defaults (settings.py), where each is written once.
_S3, _STORAGE = defaults(S3Settings), defaults(StorageSettings)


class BusinessStoreResource(ConfigurableResource):
    """The business database; one engine per process, opened when a run starts using it."""

    database_url: str
    lease_seconds: float = Field(
        default=DEFAULT_LEASE_SECONDS,
        ge=5,
        description="How long a run's claim on its order holds unless renewed (persistence/"
        "leases.py).",
    )

    _store: BusinessStore | None = PrivateAttr(default=None)
    _keeper: LeaseKeeper | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Open the store; refuse, before any step runs, a run for an order never submitted.

        An order's run keeps its lease on the order renewed while it runs, and gives it up when
        it ends (:class:`~agentforge_dagster.persistence.leases.LeaseKeeper`).
        """
        self._store = BusinessStore.from_url(self.database_url)
        run = context.run
        order_id = order_of_run(run.tags) if run is not None else None
        if order_id is None or run is None:
            return
        try:
            self._store.orders.status(order_id)
        except UnknownOrder as exc:
            self._store.engine.dispose()
            raise UnknownOrder(
                f"order {order_id!r} was never submitted, so this run changes nothing: submit it "
                "first (agentforge submit, or the drop folder), then launch the run"
            ) from exc
        self._keeper = LeaseKeeper(self._store.leases, run.run_id, seconds=self.lease_seconds)
        self._keeper.start()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        if self._store is not None:
            self._store.engine.dispose()

    def get_store(self) -> BusinessStore:
        if self._store is None:
            self._store = BusinessStore.from_url(self.database_url)
        return self._store


class BackupTargetResource(ConfigurableResource):
    """Where backups go: an S3 bucket when ``bucket`` is set, else the local folder ``local_dir``."""

    local_dir: str
    bucket: str | None = None
    endpoint_url: str | None = None
    region_name: str = _S3.region
    prefix: str = "backups"
    keep: int = _STORAGE.backup_keep
    # The audit anchors' HMAC key: a file's path, or the key itself (given as an EnvVar).
    anchor_key_file: str | None = None
    anchor_key: str | None = None

    def anchor_signing_key(self) -> bytes | None:
        return load_anchor_key(self.anchor_key, self.anchor_key_file)

    def location(self) -> BackupLocation:
        if self.bucket:
            from dagster_aws.s3 import S3Resource

            from agentforge_dagster.persistence.io_managers_s3 import ensure_bucket

            client = S3Resource(endpoint_url=self.endpoint_url, region_name=self.region_name)
            s3 = client.get_client()
            ensure_bucket(s3, self.bucket)
            return S3BackupLocation(s3, self.bucket, self.prefix)
        return LocalBackupLocation(Path(self.local_dir))


class DeliverablesResource(ConfigurableResource):
    """Where deliverables go: a versioned S3 bucket when ``bucket`` is set, else ``local_dir``.

    The S3 client is built once per run (set-up) and shared by the delivery step and its check.
    """

    local_dir: str
    bucket: str | None = None
    endpoint_url: str | None = None
    region_name: str = _S3.region
    prefix: str = "deliveries"

    _target: Deliverables | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._target = self._build()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._target = None

    def _build(self) -> Deliverables:
        if not self.bucket:
            return LocalDeliverables(Path(self.local_dir))
        from dagster_aws.s3 import S3Resource

        from agentforge_dagster.persistence.io_managers_s3 import ensure_bucket

        s3 = S3Resource(endpoint_url=self.endpoint_url, region_name=self.region_name).get_client()
        ensure_bucket(s3, self.bucket)
        return S3Deliverables(s3, self.bucket, self.prefix)

    def target(self) -> Deliverables:
        if self._target is None:
            self._target = self._build()
        return self._target
