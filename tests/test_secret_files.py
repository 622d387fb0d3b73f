"""agentforge_dagster/secret_files.py: NAME_FILE -> NAME, the entrypoint's rules, without Docker.

The image runs it from a .pth at every interpreter start (tests/deploy/test_secret_files.py);
here the function on a dict and a temporary folder, and the .pth mechanism in a throw-away venv
of this interpreter (site-packages of its own, so the developer's venv is untouched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from agentforge_dagster import secret_files
from agentforge_dagster.secret_files import EXPORTED, SecretFileError, export_secret_files


def _file(folder: Path, name: str, content: str) -> str:
    path = folder / name
    path.write_text(content)
    return str(path)


def test_the_file_becomes_the_variable_without_its_trailing_newlines(tmp_path: Path) -> None:
    environ = {
        "DAGSTER_PG_PASSWORD_FILE": _file(tmp_path, "pg", "s3cret\n\n"),
        "AGENTFORGE_DATABASE_URL_FILE": _file(tmp_path, "url", "postgresql://u:p@h/db\n"),
        "KEY_FILE": _file(tmp_path, "key", "line one\nline two\n"),
        "PATH": "/usr/bin",
    }
    assert export_secret_files(environ) == ["AGENTFORGE_DATABASE_URL", "DAGSTER_PG_PASSWORD", "KEY"]
    assert environ["DAGSTER_PG_PASSWORD"] == "s3cret"
    assert environ["AGENTFORGE_DATABASE_URL"] == "postgresql://u:p@h/db"
    assert environ["KEY"] == "line one\nline two", "inner newlines are kept"
    assert environ[EXPORTED] == "AGENTFORGE_DATABASE_URL DAGSTER_PG_PASSWORD KEY"
    assert environ["DAGSTER_PG_PASSWORD_FILE"].endswith("pg"), "NAME_FILE stays"


def test_a_missing_or_empty_file_leaves_the_variable_unset(tmp_path: Path) -> None:
    environ = {
        "OPENAI_API_KEY_FILE": str(tmp_path / "absent"),
        "ANTHROPIC_API_KEY_FILE": _file(tmp_path, "empty", "\n"),
        "UNDER_A_FILE_FILE": str(tmp_path / "empty" / "x"),  # a file as a folder: absent
        "EMPTY_PATH_FILE": "",
    }
    assert export_secret_files(environ) == []
    assert set(environ) == {
        "OPENAI_API_KEY_FILE",
        "ANTHROPIC_API_KEY_FILE",
        "UNDER_A_FILE_FILE",
        "EMPTY_PATH_FILE",
    }


def test_both_set_to_different_values_is_refused_naming_the_variable(tmp_path: Path) -> None:
    environ = {
        "A_FILE": _file(tmp_path, "a", "from-file\n"),
        "DAGSTER_PG_PASSWORD": "typed-in",
        "DAGSTER_PG_PASSWORD_FILE": _file(tmp_path, "pg", "from-file\n"),
    }
    before = dict(environ)
    with pytest.raises(
        SecretFileError, match="both DAGSTER_PG_PASSWORD and DAGSTER_PG_PASSWORD_FILE"
    ) as err:
        export_secret_files(environ)
    assert err.value.status == 64
    assert environ == before, "nothing exported when one is refused"
    # Set, and its file missing: two sources as well (the entrypoint refuses this too).
    with pytest.raises(SecretFileError, match="no secret in"):
        export_secret_files({"X": "value", "X_FILE": str(tmp_path / "absent")})


def test_the_same_value_as_the_file_is_accepted(tmp_path: Path) -> None:
    """What the entrypoint exported from the file, seen again by the Python it runs."""
    environ = {
        "DAGSTER_PG_PASSWORD": "same",
        "DAGSTER_PG_PASSWORD_FILE": _file(tmp_path, "p", "same\n"),
    }
    assert export_secret_files(environ) == ["DAGSTER_PG_PASSWORD"]
    assert environ["DAGSTER_PG_PASSWORD"] == "same"
    # An empty NAME counts as unset (as in the entrypoint): the file fills it.
    environ = {"X": "", "X_FILE": _file(tmp_path, "x", "filled\n")}
    export_secret_files(environ)
    assert environ["X"] == "filled"


def test_a_child_reads_a_rotated_file_again_instead_of_refusing_its_parents_value(
    tmp_path: Path,
) -> None:
    key = _file(tmp_path, "key", "old\n")
    parent = {"OPENAI_API_KEY_FILE": key}
    export_secret_files(parent)
    Path(key).write_text("new\n")
    child = dict(parent)  # what a subprocess inherits (the code server's gRPC child, say)
    export_secret_files(child)
    assert child["OPENAI_API_KEY"] == "new"
    Path(key).unlink()
    grandchild = dict(child)
    export_secret_files(grandchild)
    assert "OPENAI_API_KEY" not in grandchild and EXPORTED not in grandchild


def test_an_unreadable_file_is_an_error_naming_the_file_and_the_uid(tmp_path: Path) -> None:
    path = _file(tmp_path, "pg", "x\n")
    os.chmod(path, 0)
    if os.geteuid() != 0:
        with pytest.raises(SecretFileError) as err:
            export_secret_files({"DAGSTER_PG_PASSWORD_FILE": path})
        assert err.value.status == 66
        assert path in str(err.value) and f"uid {os.getuid()}" in str(err.value)
        return
    # Root reads any file: the module's start-up as another uid (nobody), as the .pth runs it.
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin")  # one nobody may run
    if python is None:
        pytest.skip("no system python3 to run as another uid")
    source = Path(secret_files.__file__).read_text()
    done = subprocess.run(
        [python, "-I", "-c", f"{source}\nstartup()\nprint('ran')"],
        env={"DAGSTER_PG_PASSWORD_FILE": path},
        cwd="/",
        user=65534,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 66 and "ran" not in done.stdout, done
    assert f"cannot read {path} (DAGSTER_PG_PASSWORD_FILE) as uid 65534" in done.stderr


def test_a_folder_given_as_the_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=f"cannot read {tmp_path} \\(X_FILE\\)") as err:
        export_secret_files({"X_FILE": str(tmp_path)})
    assert err.value.status == 66


def test_only_names_the_entrypoint_takes(tmp_path: Path) -> None:
    path = _file(tmp_path, "v", "v\n")
    environ = {"_FILE": path, "1X_FILE": path, "X-Y_FILE": path, "É_FILE": path, "_X_FILE": path}
    assert export_secret_files(environ) == ["_X"]


def test_it_imports_nothing_heavy() -> None:
    """It runs at every interpreter start: os and sys only (typing is for the type checker)."""
    source = Path(secret_files.__file__).read_text()
    imports = {
        line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert imports == {"os", "sys"}


def _venv_with_the_pth(folder: Path) -> Path:
    """A venv of this interpreter holding the module and the .pth as the Dockerfile writes them."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "agentforge_secret_files.py").write_text(Path(secret_files.__file__).read_text())
    dockerfile = (Path(__file__).resolve().parents[1] / "docker" / "Dockerfile").read_text()
    line = "import agentforge_secret_files; agentforge_secret_files.startup()"
    assert line in dockerfile, "the .pth line the image gets"
    Path(site, "agentforge-secret-files.pth").write_text(line + "\n")
    return python


def test_the_pth_exports_at_start_and_refuses_with_the_entrypoints_status(tmp_path: Path) -> None:
    python = _venv_with_the_pth(tmp_path / "venv")
    secret = _file(tmp_path, "pg", "from-file\n")
    base = {k: v for k, v in os.environ.items() if not k.endswith("_FILE") and k != EXPORTED}
    base.pop("DAGSTER_PG_PASSWORD", None)
    show = "import os; print(os.environ.get('DAGSTER_PG_PASSWORD'))"
    done = subprocess.run(
        [str(python), "-c", show],
        env={**base, "DAGSTER_PG_PASSWORD_FILE": secret},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "from-file"
    refused = subprocess.run(
        [str(python), "-c", "print('ran')"],
        env={**base, "DAGSTER_PG_PASSWORD_FILE": secret, "DAGSTER_PG_PASSWORD": "other"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 64 and "ran" not in refused.stdout
    assert "both DAGSTER_PG_PASSWORD and DAGSTER_PG_PASSWORD_FILE" in refused.stderr
    # The developer's own interpreter has no such .pth: nothing happens there.
    plain = subprocess.run(
        [sys.executable, "-c", show],
        env={**base, "DAGSTER_PG_PASSWORD_FILE": secret},
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == "None"
