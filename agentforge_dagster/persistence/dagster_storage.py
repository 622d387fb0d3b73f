"""Moved to :mod:`agentforge_dagster.instance.storage`; this name is kept for one release.

Dagster writes a storage's module path into every serialized instance reference (the
``module:`` entry of ``dagster.yaml``, carried by each run launched): a run launched by a daemon
of the previous release, or an instance configured with the old path, still loads from here.
"""

from agentforge_dagster.instance.storage import (
    AgentForgePostgresStorage,
    PooledPostgresRunStorage,
    PoolSafePostgresEventLogStorage,
)

__all__ = [
    "AgentForgePostgresStorage",
    "PoolSafePostgresEventLogStorage",
    "PooledPostgresRunStorage",
]
