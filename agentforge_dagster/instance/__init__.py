"""What plugs into Dagster's instance, and the one package allowed Dagster's private modules.

The instance files (``dagster.yaml``, ``docker/dagster.docker.yaml``, ``docker/ecs/dagster.yaml``)
name these classes, and Dagster builds them; nothing else in the project imports this package
but :mod:`agentforge_dagster.definitions`, which installs the run-worker start method when the
code location loads. ruff's ``banned-api`` refuses ``dagster._*`` (and the non-public modules of
dagster-docker and dagster-postgres) anywhere else, and ``tests/instance/test_boundaries.py``
greps the package and the instance files for them.

Each module lists the internals it touches, the public alternative that was checked and why it
does not do, and ``tests/instance/test_internals.py`` pins every patched behaviour against the
pinned Dagster release (``pyproject.toml``), so an upgrade fails there, loudly, before it fails
anywhere else:

* :mod:`.storage` — dagster-postgres's storage with a pool's row written in one statement and
  one kept connection per storage;
* :mod:`.docker_launcher` — ``DockerRunLauncher`` with per-run caps, the code server's current
  image, secrets as files, host entries, and a container watch;
* :mod:`.ecs_launcher` — ``EcsRunLauncher`` with the same per-run caps;
* :mod:`.run_worker_start` — run workers forked from a preloaded forkserver.

The modules' old paths (``persistence/dagster_storage.py``, ``execution/launcher.py``,
``execution/ecs_launcher.py``) re-export the classes for one release: Dagster writes a class's
module path into every serialized instance reference a run carries.
"""
