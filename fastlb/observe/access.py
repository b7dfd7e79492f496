"""The access log: one entry per request, recorded on the request path only when it is switched
on, and formatted and written from a buffer by a timer, so a request never waits on a write and
pays only for a tuple: the line itself is made in `flush`, a batch at a time.

`[log] access_format = "combined"` (the default) is nginx's combined format, which log tools
(goaccess, fail2ban, awstats) read as it is, with fastlb's own three fields appended:

    127.0.0.1 - - [04/Dec/2026:19:10:00 +0000] "GET /home HTTP/1.1" 200 60 "-" "curl/8.1" \
        Server2 0.412 -

(one line, cut here to fit): client address, two "-" (identd and user: nginx's), local time of
the exchange's end, the request line, the status fastlb sent, the response body's bytes,
Referer, User-Agent; then the replica, the duration in milliseconds, and how the exchange
ended. `"json"` writes one object a line:

    {"time": "2026-12-04T19:10:00.123Z", "client": "127.0.0.1", "method": "GET", "target": "/home",
     "status": 200, "bytes": 60, "duration": 0.412, "replica": "Server2", "code": null}

("time" in UTC, "duration" in milliseconds). A field fastlb does not know is "-" in combined and
null in JSON: the request line when no request head could be read, the replica when fastlb
answered itself, the status when none was sent, the bytes when the length was not known in
advance (chunked or close-delimited). The code is "-" (null) when the exchange ended cleanly,
else a short word (HAProxy's termination state, in words; fastlb/proxy/exchange.py OUTCOMES
has them all), among them:

    refused          the request broke fastlb's acceptance policy (a 4xx, then the close)
    timeout          the request head or an admin body did not come in time (408)
    client-aborted   the client reset the connection before its answer was whole
    replica-closed   the replica closed mid-response: the client saw a cut
    bad-chunk        the replica's chunked body was malformed: cut
    response-stalled the response stopped within backend_timeout: cut
    body-stalled     the request body stopped before a replica connection opened: cut

Quoted fields are escaped as nginx does: `"`, `\\` and bytes outside printable ASCII as `\\xHH`,
so a hostile User-Agent cannot forge a line. The file is reopened on SIGHUP (`reopen`): after
logrotate moves it, its postrotate `kill -HUP` makes fastlb write to a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Final

from fastlb.limits import ACCESS_FORMATS

if TYPE_CHECKING:
    from fastlb.http.head import RequestHead

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds a line may wait in the buffer
FLUSH_LINES = 2048  # or this many lines, whichever comes first

FORMATS: Final = ACCESS_FORMATS

#: What the data path records per exchange (exchange.py `_log_access`): the monotonic time of
#: its end, client address, request head (None: none was read), replica name (b"-": fastlb's
#: own answer), status sent (0: none), body length (< 0: unknown), duration in seconds, and the
#: termination code (b"-": clean).
Entry = tuple[float, bytes, "RequestHead | None", bytes, int, int, float, bytes]

_UNSAFE: Final = re.compile(rb'[^\x20-\x7e]|["\\]')
#: The bytes a quoted field keeps as they are: printable ASCII but `"` and `\\`.
_SAFE: Final = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def _escape(value: bytes) -> bytes:
    """`value` safe inside a quoted field (nginx's escaping)."""
    if not value.translate(None, _SAFE):  # the common case: nothing to escape
        return value
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value)


def _field(lower: bytes, raw: bytes, name: bytes) -> bytes:
    """The raw value of field `name` (lower case, with CRLF before and colon after) in the
    head `raw`, or "-". Plain finds in the lower-cased head rather than a regex: this runs for
    every line. No whitespace can precede the colon in a head fastlb accepted (RFC 9112
    section 5.1), so the name is found as written."""
    at = lower.find(name)
    if at < 0:
        return b"-"
    start = at + len(name)
    return raw[start : raw.find(b"\r\n", start)].strip(b" \t") or b"-"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


class AccessLog:
    def __init__(self, path: str, fmt: str = "combined") -> None:
        self.path = path
        self.format = fmt
        self._fd = self._open(path)
        self._entries: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._stamp_second = -1
        self._stamp = b""
        self._utc_second = -1
        self._utc = ""

    @staticmethod
    def _open(path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else 2

    def add(self, entry: Entry) -> None:
        entries = self._entries
        entries.append(entry)
        if len(entries) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._entries:
            return
        # Monotonic end times to wall-clock ones: one offset for the batch.
        offset = time.time() - time.monotonic()
        line = self._json if self.format == "json" else self._combined
        data = b"".join([line(entry, offset) for entry in self._entries])
        self._entries.clear()
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def _local_time(self, wall: float) -> bytes:
        """nginx's $time_local, made once a second."""
        second = int(wall)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second)).encode()
        return self._stamp

    def _combined(self, entry: Entry, offset: float) -> bytes:
        end, ip, head, replica, status, length, elapsed, code = entry
        if head is not None:
            raw = head.raw
            eol = raw.find(b"\r\n")
            request = raw[:eol] if eol >= 0 else raw
            lower = raw.lower()
            referer = _field(lower, raw, b"\r\nreferer:")
            agent = _field(lower, raw, b"\r\nuser-agent:")
            # One look at the three for a byte to escape; most lines have none.
            if (request + referer + agent).translate(None, _SAFE):
                request, referer, agent = _escape(request), _escape(referer), _escape(agent)
        else:
            request = referer = agent = b"-"
        return b'%s - - [%s] "%s" %s %s "%s" "%s" %s %.3f %s\n' % (
            ip,
            self._local_time(end + offset),
            request,
            b"%d" % status if status else b"-",
            b"%d" % length if length >= 0 else b"-",
            referer,
            agent,
            replica,
            elapsed * 1e3,
            code,
        )

    def _utc_time(self, wall: float) -> str:
        """ISO 8601 in UTC to the millisecond; the seconds part made once a second."""
        second = int(wall)
        if second != self._utc_second:
            self._utc_second = second
            self._utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._utc}.{int(wall * 1000) % 1000:03d}Z"

    def _json(self, entry: Entry, offset: float) -> bytes:
        end, ip, head, replica, status, length, elapsed, code = entry
        record = {
            "time": self._utc_time(end + offset),
            "client": _text(ip),
            "method": _text(head.method) if head is not None else None,
            "target": _text(head.target) if head is not None else None,
            "status": status or None,
            "bytes": length if length >= 0 else None,
            "duration": round(elapsed * 1e3, 3),
            "replica": None if replica == b"-" else _text(replica),
            "code": None if code == b"-" else _text(code),
        }
        return json.dumps(record).encode() + b"\n"  # default separators: the cached encoder

    def reopen(self, path: str | None = None) -> None:
        """Write what is buffered, then open the file again (logrotate moved it) or another
        one (a reload changed access_file). A file that cannot be opened keeps the old one."""
        self.flush()
        path = self.path if path is None else path
        try:
            fd = self._open(path)
        except OSError as exc:
            log.error("access log: cannot open %s (%s); still writing to the old file", path, exc)
            return
        if self.path:
            os.close(self._fd)
        self._fd, self.path = fd, path

    def close(self) -> None:
        self.flush()
        if self.path:
            os.close(self._fd)
            self._fd = 2
            self.path = ""
