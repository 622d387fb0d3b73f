"""Secrets given as files become variables, in every Python process of the project image.

The image's Dockerfile copies this file into the venv's site-packages as the top-level module
``agentforge_secret_files`` and writes ``agentforge-secret-files.pth`` there, whose one line runs
:func:`startup` when any interpreter of the venv starts (``python``, ``dagster``,
``dagster-daemon``, ``agentforge``...), also under ``docker exec``, which skips the image's
entrypoint. Developers' venvs have no such ``.pth``: there, this module does nothing unless called.

For every ``NAME_FILE`` in the environment, ``NAME`` is set from the file's content, with the
rules of ``docker/entrypoint.sh`` (which does the same for non-Python commands):

- a missing or empty file leaves ``NAME`` unset (an optional key that is not configured);
- trailing newlines are dropped;
- ``NAME`` set by someone else as well, to another value, is refused (exit status 64, the message
  names the variable): one source for each secret. The same value is accepted (a wrapper that
  exported it from the file already);
- a file that cannot be read is an error (exit status 66, the message names the file and uid).

Names set from a file are listed (names only) in ``AGENTFORGE_SECRET_FILES_EXPORTED``; a child
process that inherits them reads the files again instead of refusing what its parent set, so a
rotated file reaches processes started after the rotation (the code server's gRPC child on a
reload, for instance), and a file since removed unsets the name.

This runs at every interpreter start: it imports nothing beyond ``os`` and ``sys`` (both loaded
already by then) and costs a few file reads.
"""

import os
import sys

TYPE_CHECKING = False  # typing and collections.abc are not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import MutableMapping

EXPORTED = "AGENTFORGE_SECRET_FILES_EXPORTED"
SUFFIX = "_FILE"
BOTH_SET = 64  # the entrypoint's exit statuses
UNREADABLE = 66


class SecretFileError(Exception):
    """A secret that cannot be exported: what to fix, and the exit status to stop with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _is_name(name: str) -> bool:
    """[A-Za-z_][A-Za-z0-9_]*, as the entrypoint's sed expression (no ``re``: start-up cost)."""
    return bool(name) and name.isascii() and name.isidentifier()


def export_secret_files(environ: "MutableMapping[str, str]") -> list[str]:
    """Set NAME from the file NAME_FILE names, for every NAME_FILE in ``environ``.

    Returns the names set from files. Raises :class:`SecretFileError` (nothing changed) on a
    conflict or an unreadable file.
    """
    inherited = set(environ.get(EXPORTED, "").split())
    values: dict[str, str | None] = {}
    for key, path in list(environ.items()):
        if not key.endswith(SUFFIX):
            continue
        name = key[: -len(SUFFIX)]
        if not _is_name(name):
            continue
        value = _read(name, path)
        current = environ.get(name, "")
        if current and name not in inherited and current != value:
            differs = "to another value than" if value is not None else "and there is no secret in"
            raise SecretFileError(
                f"both {name} and {key} are set, {name} {differs} the file {path}; "
                f"keep one (unset {name} to use the file)",
                BOTH_SET,
            )
        values[name] = value
    for name, value in values.items():
        if value is not None:
            environ[name] = value
        elif name in inherited:
            environ.pop(name, None)  # exported by a parent from a file that is gone or empty now
    exported = sorted(name for name, value in values.items() if value is not None)
    if exported:
        environ[EXPORTED] = " ".join(exported)
    else:
        environ.pop(EXPORTED, None)
    return exported


def _read(name: str, path: str) -> str | None:
    """The file's content without trailing newlines; None when absent or empty."""
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            content = file.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SecretFileError(
            f"cannot read {path} ({name}{SUFFIX}) as uid {os.getuid()}: {exc.strerror}; "
            "the file must be readable by this uid (owner 10001, mode 0400)",
            UNREADABLE,
        ) from None
    value = os.fsdecode(content).rstrip("\n")
    return value or None


def startup() -> None:
    """What the ``.pth`` runs: export into ``os.environ``, or stop the interpreter with a message.

    An exception in a ``.pth`` line would only be printed and ignored by ``site``, so a refusal
    ends the process here, with the entrypoint's exit status.
    """
    try:
        export_secret_files(os.environ)
    except SecretFileError as exc:
        try:
            sys.stderr.write(f"agentforge secret files: {exc}\n")
            sys.stderr.flush()
        finally:
            os._exit(exc.status)
