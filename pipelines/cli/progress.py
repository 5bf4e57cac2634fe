"""Progress bars for long commands (replay, rebuild): rich, on stderr, only for a person watching.

Shown when stderr is a terminal, so pipes, logs and scripts get only the
result line on stdout; --progress forces it (e.g. under a CI log viewer),
--quiet turns it off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipelines.archive.progress import NoProgress
from pipelines.archive.progress import Progress as ProgressReport

F = TypeVar("F", bound=Callable[..., Any])


def progress_options(command: F) -> F:
    """--progress/--no-progress (default: when stderr is a terminal) and --quiet."""
    command = click.option(
        "--quiet",
        "-q",
        envvar="TYKPULSE_QUIET",
        show_envvar=True,
        is_flag=True,
        help="No progress display (the result line is still printed).",
    )(command)
    return click.option(
        "--progress/--no-progress",
        envvar="TYKPULSE_PROGRESS",
        show_envvar=True,
        default=None,
        help="Show progress and ETA on stderr [default: when stderr is a terminal].",
    )(command)


class RichProgress:
    """One bar per phase: a finished phase stays on screen with its time."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def phase(self, description: str, total: int | None = None) -> None:
        if self.task is not None:
            self._finish(self.task)
        self.task = self.progress.add_task(description, total=total)

    def advance(self, units: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, units)

    def close(self) -> None:
        if self.task is not None:
            self._finish(self.task)

    def _finish(self, task: TaskID) -> None:
        # A total counted before the work (duplicates, rows added meanwhile) may be off: show it done.
        done = self.progress.tasks[task].completed
        self.progress.update(task, total=done or 1, completed=done or 1)


@contextmanager
def progress_shown(progress: bool | None, quiet: bool) -> Iterator[ProgressReport]:
    enabled = not quiet and (sys.stderr.isatty() if progress is None else progress)
    if not enabled:
        yield NoProgress()
        return
    console = Console(stderr=True, force_terminal=True if progress else None)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bars:
        report = RichProgress(bars)
        try:
            yield report
        finally:
            report.close()
