"""What the commands share: the store and the Dagster instance they open, errors, the actor.

Imports nothing heavy at module level: each helper imports what it opens when it is called.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from agentforge_dagster.persistence.store import BusinessStore
    from agentforge_dagster.settings import AgentForgeSettings

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REJECTED = 2
EXIT_FAILED = 1
QUIET_LOGGING = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DISK_FULL = (
    "; the disk is full: free some space and run the command again (orders in flight are taken "
    "up by the next `agentforge run`)"
)


def open_store(settings: AgentForgeSettings) -> BusinessStore:
    """The business store, its tables brought up to date."""
    from agentforge_dagster.persistence.store import BusinessStore

    return BusinessStore.opened(settings.storage.resolved_database_url())


def open_instance(settings: AgentForgeSettings) -> DagsterInstance:
    """The Dagster instance in ``$DAGSTER_HOME`` — the one ``dagster`` and the UI use.

    Without ``DAGSTER_HOME`` it is ``./.dagster_home`` (SQLite), and the command says so: export
    the variable to make ``dagster job launch`` or ``dagster dev`` see the same runs and orders.
    """
    from dagster import DagsterInstance

    home = settings.storage.dagster_home.resolve()
    if "DAGSTER_HOME" not in os.environ:
        click.echo(
            f"DAGSTER_HOME is not set: using the Dagster instance in {home} "
            f"(export DAGSTER_HOME={home} so dagster commands and the UI use it too)",
            err=True,
        )
        os.environ["DAGSTER_HOME"] = str(home)  # say it once per command
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # Two commands opening a new home at once would both create its SQLite storage, and Dagster
    # would then find two schema heads: the first to open it does, the other waits.
    with (home / ".opening.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not config.exists():  # the embedded default: SQLite storage in this folder
            config.write_text("telemetry:\n  enabled: false\n")
        return DagsterInstance.from_config(str(home))


def user_errors(fn: F) -> F:
    """Our own errors end the command with their message, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from agentforge_dagster.domain.errors import AgentForgeError

        try:
            return fn(*args, **kwargs)
        except AgentForgeError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def safe_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def default_actor() -> str:
    """Who a person's decision is recorded as: the OS user, or ``cli`` when there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "cli"


def explain_failure(exc: BaseException, settings: Any) -> click.ClickException | None:
    """One line for a database that cannot be used or a full disk; None for anything else."""
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    database = (sqlite3.Error,) + (
        (sqlalchemy_errors.SQLAlchemyError,) if sqlalchemy_errors is not None else ()
    )
    if isinstance(exc, database):
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        full = "full" in reason or _disk_full(settings)  # SQLite may call it an I/O error
        return click.ClickException(
            f"the database cannot be used ({reason}); nothing could be recorded there "
            f"(business database: {safe_url(settings.storage.resolved_database_url())})"
            + (DISK_FULL if full else "")
        )
    if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or _disk_full(settings)):
        return click.ClickException(f"{exc.strerror} ({exc.filename or 'a write'})" + DISK_FULL)
    return None


# Less free space than this where the embedded default writes is a full disk.
_NEARLY_FULL_BYTES = 4 * 1024 * 1024


def _disk_full(settings: Any) -> bool:
    """Whether the disk under the home or the Dagster home is (nearly) full."""
    for folder in (settings.storage.home, settings.storage.dagster_home):
        try:
            if shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES:
                return True
        except OSError:
            continue
    return False
