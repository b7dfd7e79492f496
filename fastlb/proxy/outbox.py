"""The sends of one event-loop round, made together when the round's events are handled.

Why: each send on loopback wakes the process reading the other end (the client, or the
replica). Sent as soon as each request or response was read, the sends of a round trickle out
a few microseconds apart, each often finding its reader asleep again: each wakeup of a
sleeping reader on another CPU costs the sender an interprocessor interrupt inside send(),
and the reader, woken for one message, comes back to epoll for each next one. HAProxy
receives for every ready connection first and sends afterwards; this does the same.

Measured at 64 connections, in rounds of 4 s wrk runs of this build, the build without it and
HAProxy in turn against the same nginx replicas (12 rounds; the wakeups in another run of 10
rounds, counted with perf's sched:sched_waking): fastlb woke a sleeping peer 0.08 times per
request instead of 0.14-0.18 (HAProxy: 0.06), wrk called epoll_wait 0.24 times per request
instead of 0.42, and fastlb served 0.98x HAProxy's requests per second instead of 0.96x, with
1.02x its CPU per request instead of 1.05x and a lower p99 (1.41 ms against 1.54). On a
slower interpreter (pyenv's CPython run from libpython.so, 20% more CPU in fastlb's own code)
the same change did not pay: fastlb, busier, was left idle while its peers answered a whole
round at once. The Makefile now builds the venv on Debian's CPython (README, "Which Python").

Order is kept: writes leave in the order they were queued, and a connection that closes has
every queued write sent first (`flush`), as the transport would for writes it had buffered.
A write can find its transport closed: a peer that reset is force-closed by uvloop, and its
handle is freed when `connection_lost` runs, which the loop may do after a write to it was
queued and before the flush. uvloop then raises RuntimeError. That write is dropped (its peer
is gone) and counted; the writes after it, for other connections, still go out. Nothing raises
out of `send` or `flush`, which run inside protocol callbacks. The `try` costs nothing until
something raises (CPython 3.11's zero-cost exceptions; mypyc checks the error flag it checks
anyway).

Only small writes wait: a large one is a bulk transfer, where the wakeup saved is nothing next
to the copy, and where the transport must see the bytes at once to apply flow control (pause
the side that feeds it) before the next read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

#: Writes larger than this go out at once (after what is queued before them).
MAX_QUEUED: Final = 16 * 1024


class Outbox:
    """Writes queued during a round of the event loop, written by `flush` at its end."""

    __slots__ = ("_data", "_loop", "_writes", "dropped")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        #: Writes dropped because their transport was already closed (a plain-int counter).
        self.dropped = 0
        # Two parallel lists rather than a list of pairs: no tuple made per write.
        self._writes: list[Callable[[bytes], object]] = []
        self._data: list[bytes] = []

    def send(self, write: Callable[[bytes], object], data: bytes) -> None:
        """Queue `data` for a transport's bound `write` (or write it now, if large)."""
        if len(data) > MAX_QUEUED:
            self.flush()
            try:
                write(data)
            except Exception:  # a closed transport: its peer is gone
                self.dropped += 1
            return
        if not self._data:
            # call_soon callbacks run when the loop turns: after every event it has read.
            self._loop.call_soon(self.flush)
        self._writes.append(write)
        self._data.append(data)

    def flush(self) -> None:
        """Write everything queued, in order (also called before a connection closes)."""
        data = self._data
        if not data:
            return
        writes = self._writes
        self._writes = []
        self._data = []
        for i in range(len(data)):
            try:
                writes[i](data[i])
            except Exception:  # a closed transport: its peer is gone
                self.dropped += 1
