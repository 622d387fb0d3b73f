"""Progress for long commands: a bar with count, rate and ETA on a terminal, plain lines elsewhere.

``agentforge demo``/``run`` and the benchmarks count orders; ``backup``/``restore`` show a spinner
with the elapsed time. Off a terminal (a pipe, CI, a log file) nothing is redrawn: counted work
prints one line per item, and a spinner prints nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def on_terminal() -> bool:
    return sys.stdout.isatty()


@contextmanager
def counted(
    total: int, what: str, line: Callable[[int, str], str] | None = None
) -> Iterator[Callable[[str], None]]:
    """Yields ``advance(label)``: call it once per item done.

    On a terminal a bar shows done/total, the rate and the time left; elsewhere ``line(done,
    label)`` (if given) is printed per item.
    """
    if not on_terminal():
        done = 0

        def log(label: str) -> None:
            nonlocal done
            done += 1
            if line is not None:
                print(line(done, label), flush=True)

        yield log
        return
    columns = (
        TextColumn(f"{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}"),
    )
    with Progress(*columns, console=Console(), transient=False) as bar:
        task = bar.add_task(what, total=total, rate="", label="")

        def advance(label: str) -> None:
            bar.advance(task)
            elapsed = bar.tasks[task].elapsed or 0.0
            done = bar.tasks[task].completed
            rate = f"{done / elapsed:.2f}/s" if elapsed > 0 else ""
            bar.update(task, rate=rate, label=label)

        yield advance


@contextmanager
def working(what: str) -> Iterator[None]:
    """A spinner with the elapsed time while one long step runs (a terminal only)."""
    if not on_terminal():
        yield
        return
    with Progress(SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), transient=True) as bar:
        bar.add_task(what, total=None)
        yield
