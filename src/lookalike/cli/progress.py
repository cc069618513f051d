"""Progress for long work: a rich bar on a terminal, plain lines in a log or a pipe."""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lookalike.cli.output import console


class LogProgress(Progress):
    """Progress where there is no terminal to draw a bar on (a log, a pipe, CI): a plain line on stderr every
    ``PERIOD`` seconds and at the end, so long work never runs silent."""

    PERIOD = 10.0

    def __init__(self, description: str) -> None:
        super().__init__(console=console, disable=True)  # the tasks are kept; nothing is drawn
        self.description, self.last = description, time.monotonic()

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._due(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._due(task_id)

    def _due(self, task_id: TaskID) -> None:
        if time.monotonic() - self.last >= self.PERIOD:
            self.report(task_id)

    def report(self, task_id: TaskID) -> None:
        self.last = time.monotonic()
        task = self._tasks[task_id]
        done, total, elapsed = int(task.completed), task.total, task.elapsed or 0.0
        share = f" ({done / total:.0%})" if total else ""
        rate = f", {done / elapsed:.1f}/s" if elapsed > 0 and done else ""
        left = f", about {task.time_remaining:.0f} s left" if task.time_remaining else ""
        what = self.description
        if task.description not in ("", self.description):
            what += f", {task.description}"
        console.print(f"{what}: {done}{f'/{int(total)}' if total else ''}{share}{rate}, {elapsed:.0f} s{left}",
                      highlight=False, soft_wrap=True)  # fmt: skip

    def stop(self) -> None:
        super().stop()
        for task_id in self.task_ids:  # where the work was long enough to have said something: how it ended
            task = self._tasks[task_id]
            if task.completed and (task.elapsed or 0.0) >= self.PERIOD:
                self.report(task_id)


def progress_bar(description: str) -> Progress:
    if not console.is_terminal:
        return LogProgress(description)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=False,
    )
