"""Progress of a long command: a bar on a terminal, a log line every few seconds elsewhere.

One reporter, used as a context manager and called like the pipeline's ``progress(done, total)``
callback. On a terminal it draws a rich progress bar (transient). When stderr is not a terminal
(CI, Airflow, a pipe) it logs ``label: done/total unit (share), rate/s, ETA`` on the
``rag.progress`` logger every ``interval`` seconds, from a heartbeat thread, so a phase that
reports nothing for a while (listing a bucket, an evaluation without hooks) still shows it is
alive; a command that ends before the first interval logs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

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

log = logging.getLogger("rag.progress")

DEFAULT_INTERVAL: Final = 5.0


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class ProgressReporter:
    """Reports ``(done, total)`` updates of one long command. ``total`` may be None (unknown)."""

    def __init__(
        self,
        label: str,
        *,
        unit: str = "documents",
        console: Console | None = None,
        interactive: bool | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
        heartbeat: bool = True,
    ) -> None:
        """``interactive``: draw a bar (default: when the console is a terminal); else log a
        line every ``interval`` seconds, from a ``heartbeat`` thread too while nothing reports."""
        self.label = label
        self.unit = unit
        self._console = console if console is not None else Console(stderr=True)
        self._interactive = interactive
        self._interval = interval
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()
        self._done = 0
        self._total: int | None = None
        self._started = 0.0
        self._first: tuple[float, int] | None = None  # (when, done) of the first update
        self._last_line = 0.0
        self._lines = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._heartbeat_on = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interactive(self) -> bool:
        """Whether a bar is drawn (stderr is a terminal) rather than lines logged."""
        if self._interactive is None:
            self._interactive = self._console.is_terminal
        return self._interactive

    def __enter__(self) -> ProgressReporter:
        self._started = self._last_line = self._clock()
        if self.interactive:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, rate="")
        elif self._heartbeat_on:
            self._thread = threading.Thread(
                target=self._heartbeat, name=f"progress {self.label}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.stop()
        elif self._lines and kind is None:  # a long command: say that it ended
            self._log.info("%s: finished %s", self.label, self._counts(final=True))

    def __call__(self, done: int, total: int | None) -> None:
        """The pipeline's ``progress(done, total)`` callback."""
        now = self._clock()
        with self._lock:
            self._done, self._total = done, total
            if self._first is None:
                self._first = (now, done)
        if self._bar is not None and self._task is not None:
            rate = self.rate()
            shown = f"{rate:.1f}/s" if rate is not None else ""
            self._bar.update(self._task, completed=done, total=total, rate=shown)
        else:
            self.emit_due()

    def rate(self) -> float | None:
        """Units per second since the first update (None until there are two points in time)."""
        with self._lock:
            if self._first is None:
                return None
            since, base = self._first
            elapsed = self._clock() - since
            return (self._done - base) / elapsed if elapsed > 0 and self._done > base else None

    def eta(self) -> float | None:
        """Seconds left at the current rate (None when the total or the rate is unknown)."""
        rate = self.rate()
        if rate is None or self._total is None:
            return None
        return max(0, self._total - self._done) / rate

    def _counts(self, final: bool = False) -> str:
        elapsed = duration(self._clock() - self._started)
        if self._first is None:
            return f"after {elapsed}" if final else f"running, {elapsed} elapsed"
        counts = f"{self._done}/{self._total}" if self._total is not None else str(self._done)
        return f"{counts} {self.unit} in {elapsed}" if final else f"{counts} {self.unit}"

    def line(self) -> str:
        """The progress line logged when stderr is not a terminal."""
        if self._first is None:
            return f"{self.label}: {self._counts()}"
        parts = [f"{self.label}: {self._counts()}"]
        if self._total:
            parts[0] += f" ({self._done / self._total:.0%})"
        rate = self.rate()
        parts.append(f"{rate:.1f}/s" if rate is not None else "rate unknown")
        eta = self.eta()
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA unknown")
        parts.append(f"{duration(self._clock() - self._started)} elapsed")
        return ", ".join(parts)

    def emit_due(self) -> bool:
        """Log the progress line if ``interval`` seconds passed since the last one."""
        now = self._clock()
        with self._lock:
            if now - self._last_line < self._interval:
                return False
            self._last_line = now
            self._lines += 1
        self._log.info("%s", self.line())
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self._interval, 1.0)):
            self.emit_due()
