"""A local replica's stdout and stderr, read on the event loop (no thread: fastlb stays
single-threaded).

Both streams of a child go into one pipe, so the lines keep the order the child wrote them in
(a traceback between two log lines stays between them). fastlb reads the pipe whenever the
loop says it is readable, cuts what came into lines, and hands each line to a sink: fastlb's
own log, prefixed with the replica's name, or the replica's file in `[replicas] log_dir`. The
last lines are kept, so that a replica that died or never came up can be explained by what it
said last (its `died` event, the start error) rather than by "exit code 1".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, Final

log = logging.getLogger("fastlb.replica")

#: Lines of a replica's output kept for its `died` event and its start error.
TAIL_LINES: Final = 20
#: A line longer than this is cut (and the rest starts a new line): a child that writes
#: megabytes without a newline must not grow fastlb's memory.
MAX_LINE: Final = 16384
_READ: Final = 65536

Sink = Callable[[str], None]


class Lines:
    """Bytes in, complete lines out, the last `keep` of them remembered (sans-IO)."""

    __slots__ = ("_partial", "tail")

    def __init__(self, keep: int = TAIL_LINES) -> None:
        self._partial = bytearray()
        self.tail: deque[str] = deque(maxlen=keep)

    def feed(self, data: bytes) -> list[str]:
        """The lines `data` completes, decoded (UTF-8, undecodable bytes replaced)."""
        self._partial += data
        lines: list[str] = []
        while True:
            end = self._partial.find(b"\n")
            if end < 0:
                if len(self._partial) < MAX_LINE:
                    break
                end = MAX_LINE  # cut: the rest goes on in the next line
                line, rest = self._partial[:end], self._partial[end:]
            else:
                line, rest = self._partial[:end], self._partial[end + 1 :]
            self._partial = bytearray(rest)
            lines.append(self._decode(line))
        return lines

    def flush(self) -> list[str]:
        """The last line if it had no newline (the child ended mid-line)."""
        if not self._partial:
            return []
        line, self._partial = self._decode(self._partial), bytearray()
        return [line]

    def _decode(self, raw: bytes | bytearray) -> str:
        line = bytes(raw).rstrip(b"\r").decode("utf-8", "replace")
        self.tail.append(line)
        return line


def log_sink(name: str) -> Sink:
    """Each line into fastlb's log, as `[NAME] line`."""

    def write(line: str) -> None:
        log.info("[%s] %s", name, line)

    return write


def file_sink(file: BinaryIO) -> Sink:
    """Each line appended to the replica's own file. Written at once (a line buffer): a file
    that trails what the replica said is no help when it has just crashed. A failed write (a
    full disk) is logged once and the lines are dropped, never fastlb's problem."""
    failed = False

    def write(line: str) -> None:
        nonlocal failed
        try:
            file.write(line.encode("utf-8", "replace") + b"\n")
            file.flush()
        except OSError as exc:
            if not failed:
                failed = True
                log.warning("cannot write replica output to %s: %s; dropping it",
                            file.name, exc.strerror or exc)

    return write


class Output:
    """The read end of one child's output pipe, watched by the loop until end of file."""

    def __init__(self, fd: int, sink: Sink, on_close: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self.lines = Lines()
        self._sink = sink
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self.read)
        self.closed = False

    def read(self) -> None:
        """Everything the pipe holds now; at end of file (every writer gone), close."""
        while not self.closed:
            try:
                data = os.read(self.fd, _READ)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    log.warning("reading replica output: %s", exc.strerror or exc)
                data = b""
            if not data:
                self.close()
                return
            for line in self.lines.feed(data):
                self._sink(line)

    def tail(self) -> list[str]:
        """The last lines, after reading what is still in the pipe (a child that just exited
        wrote its traceback there before the loop saw it end)."""
        self.read()
        return list(self.lines.tail)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for line in self.lines.flush():
            self._sink(line)
        self._loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self._on_close is not None:
            self._on_close()


def last_words(lines: list[str]) -> str:
    """`lines` for a message: '; its last output:' and the lines indented, or ''."""
    if not lines:
        return ""
    return "; its last output:\n" + "\n".join(f"  {line}" for line in lines)
