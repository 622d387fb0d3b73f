"""mkdocs hooks: the pages generated from the code, written before the site is built.

* ``reference/settings.md`` from the settings model (``agentforge_dagster/settings.py``): every
  environment variable, its default and what it does — never a second, hand-kept copy;
* ``reference/cli.md`` from the click commands (``agentforge_dagster/cli/``);
* ``benchmarks/``: the results files of ``bench/`` and their figures, as they are.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import click

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
MODULE_PATH = re.compile(r"\b(?:[a-z_]+\.)+(?=[A-Za-z])")  # typing.Literal → Literal


def _settings_page() -> str:
    """A section per group of settings: each variable, its type, default and meaning."""
    from pydantic_core import PydanticUndefined

    from agentforge_dagster.settings import AgentForgeSettings, all_settings

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    def shown_type(annotation: Any) -> str:
        text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        return f"`{cell(MODULE_PATH.sub('', text))}`"

    lines = [
        "# Settings reference",
        "",
        "Generated from `agentforge_dagster/settings.py` when the site is built. See "
        "[Configuration](../configuration.md) for how they fit together. Each section is a group "
        "of the settings (`settings.<group>.<name>` in the code); a variable sets one setting.",
    ]
    group = None
    for setting in all_settings():
        if setting.group != group:
            group = setting.group
            field = AgentForgeSettings.model_fields[group]
            cls = field.annotation
            lines += ["", f"## {group}", "", cell((cls.__doc__ or "").split("\n\n")[0]), ""]
            lines += [
                "| variable | setting | type | default | meaning |",
                "| --- | --- | --- | --- | --- |",
            ]
        default = setting.field.default
        if default is PydanticUndefined or default is None:
            shown = "none"
        elif setting.field.default_factory is not None:
            shown = "computed"
        else:
            shown = f"`{cell(str(default))}`" if default != "" else "empty"
        lines.append(
            f"| `{setting.variable}` | `{setting.name}` | {shown_type(setting.field.annotation)} "
            f"| {shown} | {cell(setting.field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


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

    lines = [
        "# Command reference",
        "",
        "Generated from the click commands when the site is built.",
        "",
    ]
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
