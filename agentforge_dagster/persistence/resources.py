"""Dagster resources for the persistence layer."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from agentforge_dagster.persistence.store import BusinessStore


class BusinessStoreResource(ConfigurableResource):
    """The business database; one engine per process, opened when a run starts using it."""

    database_url: str

    _store: BusinessStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._store = BusinessStore.from_url(self.database_url)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._store is not None:
            self._store.engine.dispose()

    def get_store(self) -> BusinessStore:
        if self._store is None:
            self._store = BusinessStore.from_url(self.database_url)
        return self._store
