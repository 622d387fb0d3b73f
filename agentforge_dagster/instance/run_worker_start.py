"""Run workers forked from a process that has imported Dagster and this code location once.

With the default run launcher, the code server starts each run in a child process, and Dagster
1.13.27 starts it with ``multiprocessing``'s *spawn* method (``DagsterApiServer._mp_ctx``,
``dagster/_grpc/server.py``): a new interpreter that imports Dagster, dagster-postgres, the AWS and
model SDKs and this code location again, for every order. Measured under the daemon
(bench/suite.py), those imports were half of a run worker's CPU.

In a code server, this module has the server start run workers with the *forkserver* method
instead: one server process imports those modules once (``set_forkserver_preload``), and each run
worker is a fork of it that unpickles its run and executes it as before: same function, same
arguments, same queue and termination event, one process per run. Nothing else changes: the code
server still watches each worker (``is_alive()``, its exit code), Dagster still records the
worker's pid, and a crash still ends only that run.

``AGENTFORGE_RUN_WORKER_START=spawn`` keeps Dagster's own method. The forkserver is forked from
once per run and holds no connection, thread or file of its own; if it dies, ``multiprocessing``
starts a new one at the next run.

Dagster internals used here (pinned by ``tests/instance/test_internals.py``): the API server's
``_mp_ctx`` (set to ``multiprocessing.get_context("spawn")`` in ``DagsterApiServer.__init__``) is
replaced by a property returning a forkserver context; ``dagster._grpc.server`` is found in
``sys.modules`` (only a code server has imported it), and ``dagster._grpc.impl`` and
``dagster._core.execution.api`` are preloaded in the forkserver. Dagster has no public setting for
the start method of run workers (``dagster code-server start`` takes none, and
``DefaultRunLauncher`` always asks the server).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterable

# What every run worker imports, whatever its code location needs besides.
RUN_WORKER_MODULES = (
    "dagster",
    "dagster._grpc.impl",
    "dagster._core.execution.api",
    "dagster_postgres",
    "sqlalchemy.dialects.postgresql.psycopg2",
)


def preload_run_workers(modules: Iterable[str]) -> bool:
    """In a Dagster code server, start run workers from a forkserver preloaded with ``modules``.

    Returns whether it did: only a process that runs Dagster's gRPC server is changed (the
    module is imported there before the code location is loaded).
    """
    server_module = sys.modules.get("dagster._grpc.server")
    if server_module is None:
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*RUN_WORKER_MODULES, *modules])
    # ``_mp_ctx`` is set in the server's __init__, which has run by the time the code location
    # loads; a data descriptor on the class takes precedence over that instance attribute.
    server_module.DagsterApiServer._mp_ctx = property(lambda _server: context)
    return True
