"""The ``agentforge`` console script: one module per command group, loaded when it runs.

``agentforge --help`` and every command's ``--help`` import click and the command's own module
only; a command imports what it needs (the business store, Dagster, docker, boto3, pandas, a
model SDK) inside its body. ``tests/cli/test_startup.py`` fails when importing this package, or
showing any command's help, imports one of those.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name → (module under agentforge_dagster.cli, attribute, one line for agentforge --help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "submit": ("orders", "submit", "Queue one order, from flags or a JSON file."),
    "run": ("orders", "run", "Run every queued order and every requested replay here."),
    "demo": (
        "orders",
        "demo",
        "Submit N generated orders, run them with faults, print the report.",
    ),
    "status": ("reports", "status", "Orders by state, and what waits for a human."),
    "report": (
        "reports",
        "report",
        "Per-step attempts, end-to-end success, the no-retry prediction.",
    ),
    "costs": ("reports", "costs", "Model calls, tokens and cost, grouped."),
    "providers": ("reports", "providers", "The model chain and each provider's circuit breaker."),
    "budget": ("reports", "budget", "The monthly model budget."),
    "dlq": ("dead_letters", "dlq", "The dead-letter queue: list, show, replay."),
    "review": ("review", "review", "What waits for a person, and their decision on it."),
    "delivery": ("delivery", "delivery", "A delivered order's file: where it is, a link to it."),
    "broker": ("broker", "broker", "The message brokers orders come from and events go to."),
    "db": ("db", "db", "The business database."),
    "audit": ("db", "audit", "The tamper-evident audit trail: verify, anchor."),
    "backup": ("db", "backup", "Back up the business database now."),
    "backups": ("db", "backups_list", "List the backups kept, newest last."),
    "restore": ("db", "restore", "Restore a backup into an empty database and verify it."),
    "deploy": ("deploy", "deploy_command", "Serve the code location from another image."),
    "rollback": ("deploy", "rollback_command", "Serve the image deployed before the current one."),
    "deploys": ("deploy", "deploys_command", "The history of deploys and roll-backs."),
}


class LazySettings:
    """The settings, read from the environment the first time a command asks for one."""

    def __init__(self) -> None:
        self._loaded: Any = None

    def get(self) -> Any:
        if self._loaded is None:
            from agentforge_dagster.settings import load_settings

            self._loaded = load_settings()
        return self._loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


class _Commands(click.Group):
    """Commands loaded by name when they run; a database or disk that fails ends in one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from agentforge_dagster.cli.common import explain_failure

            explained = explain_failure(exc, ctx.obj)
            if explained is None:
                raise
            raise explained from exc


@click.group(cls=_Commands)
@click.pass_context
def main(ctx: click.Context) -> None:
    """AgentForge: an AI business's order pipeline on Dagster."""
    ctx.obj = LazySettings()
