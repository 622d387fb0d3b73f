"""Moved to :mod:`agentforge_dagster.instance.ecs_launcher`; this name is kept for one release.

The run launcher's module path travels in serialized instance references (``dagster.yaml``
``module:``): an instance or a run of the previous release that names this path still loads.
"""

from agentforge_dagster.instance.ecs_launcher import CappedEcsRunLauncher

__all__ = ["CappedEcsRunLauncher"]
