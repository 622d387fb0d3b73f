"""mkdocs hooks: the pages generated from the code, written before the site is built.

* ``reference/settings.md`` from the settings model (``agentforge_dagster/settings.py``): every
  environment variable, its default and what it does — never a second, hand-kept copy;
* ``reference/cli.md`` from the click commands (``agentforge_dagster/cli/``);
* ``benchmarks/``: the results files of ``bench/`` and their figures, as they are.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def _settings_page() -> str:
    from pydantic_core import PydanticUndefined

    from agentforge_dagster.settings import AgentForgeSettings

    prefix = AgentForgeSettings.model_config.get("env_prefix", "")
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in AgentForgeSettings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        variable = alias or f"{prefix}{name}".upper()
        default = field.default
        if default is PydanticUndefined or default is None:
            shown = "none"
        elif field.default_factory is not None:
            shown = "computed"
        else:
            shown = f"`{default}`"
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{variable}` | {shown} | {meaning} |")
    return (
        "# Settings reference\n\nGenerated from `agentforge_dagster/settings.py` when the site is "
        "built. See [Configuration](../configuration.md) for how they fit together.\n\n"
        + "\n".join(rows)
        + "\n"
    )


def _command_lines(command: click.Command, path: str, depth: int) -> list[str]:
    context = click.Context(command, info_name=path)
    usage = command.get_usage(context).removeprefix("Usage: ")
    lines = [f"{'#' * depth} `{path}`", "", command.help or "", "", "```text", usage, ""]
    for param in command.get_params(context):
        record = param.get_help_record(context)
        if record:
            lines.append(f"  {record[0]}  {' '.join(record[1].split())}")
    lines += ["```", ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None:
                lines += _command_lines(sub, f"{path} {name}", min(depth + 1, 4))
    return lines


def _cli_page() -> str:
    from agentforge_dagster.cli import main

    lines = ["# Command reference", "", "Generated from the click commands when the site is built.", ""]
    return "\n".join(lines + _command_lines(main, "agentforge", 2))


def on_pre_build(config: Any) -> None:
    (DOCS / "reference").mkdir(exist_ok=True)
    (DOCS / "reference" / "settings.md").write_text(_settings_page())
    (DOCS / "reference" / "cli.md").write_text(_cli_page())
    benchmarks = DOCS / "benchmarks"
    if benchmarks.exists():
        shutil.rmtree(benchmarks)
    benchmarks.mkdir()
    for results in sorted((ROOT / "bench").glob("*.md")):
        shutil.copy(results, benchmarks / results.name)
    if (ROOT / "bench" / "figures").exists():
        shutil.copytree(ROOT / "bench" / "figures", benchmarks / "figures")
