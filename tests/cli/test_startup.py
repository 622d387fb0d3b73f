"""The CLI answers at once: its help, and ``submit``, import none of the heavy libraries.

Each case runs in a fresh interpreter (a real process, as a user's shell starts one) and reports
what got imported; the times themselves are a benchmark (``docs/cli.md``), not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentforge_dagster.cli import COMMANDS

# Never imported for a command's help; never by a command that does not use them.
HEAVY = ("dagster", "dagster_aws", "dagster_docker", "dagster_postgres", "docker", "boto3",
         "botocore", "pandas", "openai", "anthropic", "rich")  # fmt: skip
# Not needed to show help either (the settings, the store): what keeps --help under 0.3 s.
FOR_WORK = ("pydantic", "pydantic_settings", "sqlalchemy", "alembic")

PROBE = """
import json, sys
from agentforge_dagster.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("\\nMODULES " + json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _imported(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, timeout=120, env=env or dict(os.environ),
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_importing_the_cli_package_imports_nothing_heavy() -> None:
    modules = _imported(["--help"])
    assert modules.isdisjoint(HEAVY + FOR_WORK), sorted(modules & set(HEAVY + FOR_WORK))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_s_help_imports_nothing_heavy(command: str) -> None:
    modules = _imported([command, "--help"])
    assert modules.isdisjoint(HEAVY + FOR_WORK), sorted(modules & set(HEAVY + FOR_WORK))


def test_submit_queues_an_order_without_importing_dagster(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTFORGE_HOME": str(tmp_path / "af"), "DAGSTER_HOME": str(tmp_path)}
    env.pop("AGENTFORGE_DATABASE_URL", None)
    modules = _imported(
        ["submit", "--customer", "Ada", "--service", "blog_post", "--price", "90.00",
         "--brief", "Why small shops should care about retries"],
        env,
    )  # fmt: skip
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))
    assert (tmp_path / "af" / "agentforge.db").exists()


def test_the_help_lists_every_command_with_its_own_summary() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agentforge"), "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for name, (_, _, summary) in COMMANDS.items():
        assert name in done.stdout and summary.split()[0] in done.stdout, name
