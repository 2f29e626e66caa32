"""Per-layer progress bars on a terminal (rich), silent otherwise.

Refreshed from the calling thread only (no background thread), so worker processes can be
forked safely while it is shown.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any


class LayerProgress:
    def __init__(self, *, enabled: bool, verb: str) -> None:
        self.enabled = enabled
        self.verb = verb
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._last = 0.0

    def __enter__(self) -> LayerProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                console=Console(stderr=True),
                auto_refresh=False,
                transient=False,
            )
            self._progress.start()
        return self

    def update(self, key: str, done: int, total: int | None) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(key)
        if task is None:
            short = key.split(":")[-1][:12]
            task = self._progress.add_task(f"{short}: {self.verb}", total=total)
            self._tasks[key] = task
        self._progress.update(task, completed=done)
        now = time.monotonic()
        if now - self._last > 0.1:
            self._last = now
            self._progress.refresh()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            if t is None:
                for task in self._tasks.values():
                    tt = self._progress.tasks[task]
                    self._progress.update(task, completed=tt.total or tt.completed)
            self._progress.refresh()
            self._progress.stop()
