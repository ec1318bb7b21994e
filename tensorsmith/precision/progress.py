"""Progress for the long steps (calibration, the gate, the fallback search).

``NullProgress`` does nothing (library use, ``--json``); ``rich_progress`` shows a
spinner line for steps and a real bar for counted work on stderr, with warnings
printed above it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class NullProgress:
    def step(self, message: str) -> None:
        pass

    def track(self, description: str, total: int) -> Callable[[], None]:
        return lambda: None

    def done(self, description: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class RichProgress(NullProgress):
    def __init__(self, progress, console):
        self.progress = progress
        self.console = console
        self.spinner = progress.add_task("starting", total=None)
        self.tasks: dict[str, int] = {}

    def step(self, message: str) -> None:
        self.progress.update(self.spinner, description=message)

    def track(self, description: str, total: int) -> Callable[[], None]:
        task = self.progress.add_task(description, total=total)
        self.tasks[description] = task
        return lambda: self.progress.advance(task)

    def done(self, description: str) -> None:
        task = self.tasks.pop(description, None)
        if task is not None:
            self.progress.remove_task(task)

    def warn(self, message: str) -> None:
        from rich.markup import escape

        self.progress.console.print(f"[yellow]warning:[/yellow] {escape(message)}")


@contextlib.contextmanager
def rich_progress(console, enabled: bool = True) -> Iterator[NullProgress]:
    """A Rich progress display on ``console`` (stderr), or a silent one."""
    if not enabled:
        yield NullProgress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield RichProgress(progress, console)
