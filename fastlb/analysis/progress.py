"""A one-line progress bar for each experiment of the analysis.

Why not tqdm: one small class does what the report needs, and fastlb takes no dependency for it.
On a terminal the line is redrawn in place (at most 10 times a second, so drawing costs nothing
next to the requests it counts); when stderr is a file or a pipe (CI, a test), nothing is drawn
while it runs and one plain line per experiment is printed when it ends, so logs stay readable.
"""

from __future__ import annotations

import shutil
import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]

_REDRAW = 0.1  # seconds between redraws
_WIDTH = 28  # characters of the bar itself


class Progress:
    """Progress of one experiment towards `total` (requests, seconds, steps...).

    Use as a context manager, or call `done()`; `advance()`/`update()` move it and `note()`
    sets the short status shown after the bar (e.g. "starting 3 replicas").
    """

    def __init__(
        self,
        label: str,
        total: float,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.total = max(total, 0.0)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.value = 0.0
        self.status = ""
        self.started = time.monotonic()
        self._drawn = 0.0
        self._closed = False
        self._width = 0
        if self.tty:
            self._draw()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done("failed" if kind is not None else "")

    def note(self, status: str) -> None:
        self.status = status
        if self.tty:
            self._draw()

    def advance(self, amount: float = 1.0) -> None:
        self.update(self.value + amount)

    def update(self, value: float) -> None:
        self.value = min(value, self.total) if self.total else value
        if self.tty and time.monotonic() - self._drawn >= _REDRAW:
            self._draw()

    def done(self, summary: str = "") -> None:
        """Finish: the one line for this experiment, `label: summary (elapsed)`, replaces the bar
        on a terminal and is printed alone elsewhere."""
        if self._closed:
            return
        self._closed = True
        elapsed = time.monotonic() - self.started
        if summary != "failed":
            self.value = self.total
        self.status = summary
        tail = f": {summary}" if summary else ""
        line = f"{self.label}{tail} ({elapsed:.1f} s)"
        if self.tty:
            # The finished bar gives way to the same line a log gets: the result, not a full bar.
            self.stream.write("\r" + line + " " * max(0, self._width - len(line)) + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def render(self) -> str:
        """The line as drawn now (without the carriage return)."""
        fraction = self.value / self.total if self.total else 1.0
        filled = round(fraction * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        elapsed = time.monotonic() - self.started
        amount = (
            f"{self.value:.1f}/{self.total:.1f} {self.unit}".rstrip()
            if self.unit
            else f"{int(self.value)}/{int(self.total)}"
        )
        line = f"{self.label:<22} [{bar}] {fraction:4.0%} {amount} {elapsed:5.1f}s"
        return f"{line}  {self.status}" if self.status else line

    def _draw(self) -> None:
        # A line longer than the terminal would wrap, and "\r" would then redraw only its last
        # row.
        line = self.render()[: max(20, shutil.get_terminal_size((100, 24)).columns - 1)]
        # Pad over what a longer previous line left on the terminal.
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._drawn = time.monotonic()
