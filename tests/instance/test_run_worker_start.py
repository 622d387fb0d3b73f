"""Run workers forked from a preloaded forkserver: only in a code server, and a real run in one.

The daemon test (test_daemon.py) checks the forkserver under the real daemon; here a worker is
started the way the code server starts it (``DagsterApiServer._mp_ctx.Process``) and runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip()


def test_outside_a_code_server_nothing_changes() -> None:
    assert (
        run(
            """
        import sys
        from agentforge_dagster.instance.run_worker_start import preload_run_workers
        print(preload_run_workers([]), "dagster._grpc.server" in sys.modules)
        """
        )
        == "False False"
    )


WORKER = """
import os, sys

def report(queue):
    queue.put((os.getppid(), "agentforge_dagster.definitions" in sys.modules))
"""


def test_in_a_code_server_workers_are_forks_of_one_preloaded_process(tmp_path: Path) -> None:
    """The server's context is the forkserver: two workers share one parent, not the server,
    and find the code location imported there without importing it themselves."""
    (tmp_path / "bench_worker.py").write_text(WORKER)
    out = run(
        f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import dagster._grpc.server as server
        from agentforge_dagster.instance.run_worker_start import preload_run_workers
        import bench_worker

        assert preload_run_workers(["agentforge_dagster.definitions"])
        assert "agentforge_dagster.definitions" not in sys.modules  # only the forkserver has it
        ctx = server.DagsterApiServer._mp_ctx.fget(None)
        queue = ctx.Queue()
        workers = [ctx.Process(target=bench_worker.report, args=[queue]) for _ in range(2)]
        for w in workers:
            w.start()
        answers = [queue.get(timeout=60) for _ in workers]
        for w in workers:
            w.join(timeout=60)
        parents = {{parent for parent, _ in answers}}
        print(len(parents), os.getpid() in parents, all(preloaded for _, preloaded in answers),
              [w.exitcode for w in workers])
        """
    )
    assert out == "1 False True [0, 0]"
