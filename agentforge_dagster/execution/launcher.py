"""Moved to :mod:`agentforge_dagster.instance.docker_launcher`; this name is kept for one release.

The run launcher's module path travels in serialized instance references (``dagster.yaml``
``module:``): an instance or a run of the previous release that names this path still loads.
"""

from agentforge_dagster.instance.docker_launcher import CappedDockerRunLauncher

__all__ = ["CappedDockerRunLauncher"]
