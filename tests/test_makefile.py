"""The Makefile's entry points that need no services: `make ui` on a fresh checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dagster import DagsterInstance

ROOT = Path(__file__).resolve().parent.parent


def test_make_ui_creates_the_instance_folder_before_starting_the_ui(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / ".dagster_home"  # `make ui` before `make demo`: no folder yet
    dry_run = subprocess.run(
        ["make", "-n", "ui", f"DAGSTER_HOME={home}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert dry_run.index(f'mkdir -p "{home}"') < dry_run.index("dagster dev")
    subprocess.run(["make", "-s", "dagster-home", f"DAGSTER_HOME={home}"], cwd=ROOT, check=True)
    assert "enabled: false" in (home / "dagster.yaml").read_text()
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
