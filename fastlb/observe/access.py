"""The access log: one line per request, built on the request path only when it is switched on,
and written from a buffer by a timer, so a request never waits on a write.

    127.0.0.1 GET /home Server2 200 60 0.412 -
    127.0.0.1 GET /big Server1 200 - 812.305 replica-closed

client address, method, target ("-" "-" when no request head could be read), replica ("-" when
fastlb answered itself), status fastlb sent ("-" when none), response body bytes ("-" when
unknown in advance), duration in milliseconds, and how the exchange ended: "-" when cleanly,
else a short code (HAProxy's termination state, in words):

    refused          the request broke fastlb's acceptance policy (a 4xx, then the close)
    timeout          the request head or an admin body did not come in time (408)
    client-aborted   the client reset the connection before its answer was whole
    replica-closed   the replica closed mid-response: the client saw a cut
    bad-chunk        the replica's chunked body was malformed: cut
    response-stalled the response stopped within backend_timeout: cut
    body-stalled     the request body stopped before a replica connection opened: cut
"""

from __future__ import annotations

import asyncio
import os

FLUSH_INTERVAL = 0.2  # seconds a line may wait in the buffer
FLUSH_LINES = 2048  # or this many lines, whichever comes first


class AccessLog:
    def __init__(self, path: str) -> None:
        self._own_fd = bool(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, line: bytes) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data = b"".join(self._lines)
            self._lines.clear()
            while data:
                written = os.write(self._fd, data)
                data = data[written:]

    def close(self) -> None:
        self.flush()
        if self._own_fd:
            os.close(self._fd)
