"""A PostgreSQL cluster of one's own (``initdb`` on a free port), to stop, restart or damage.

The machine's shared server is never stopped; a test or a bench that needs an outage or a damaged
data file makes its cluster here. Run as root, the cluster belongs to the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """``init`` it, then ``start``/``stop``/``restart``; ``remove`` stops it and deletes it."""

    def __init__(self, port: int | None = None, prefix: str = "agentforge-pg-") -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.dir / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.bin = Path(
            os.path.realpath(shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb")
        ).parent
        self.options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=300"
        )

    def run(self, tool: str, *args: str, check: bool = True) -> str:
        """A PostgreSQL tool run as the cluster's owner; its standard output."""
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)
        return done.stdout

    def init(self, *databases: str) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        for name in databases:
            self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = str(self.dir / "pg.log")
        self.run("pg_ctl", "-D", str(self.data), "-o", self.options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
