"""The replica's response head: its status, where its body ends, and what the client gets.

Written by hand rather than with a second parser object because a response head is read on
every request and needs little: the status, Content-Length, Transfer-Encoding and Connection.
It is strict (a replica that answers garbage gets the client a 502, not a guess) and returns the
head to send on: the bytes as received when nothing needs changing, which is the common case.
"""

from __future__ import annotations

from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED, HOP_BY_HOP, UNTIL_CLOSE

_DIGITS = frozenset(b"0123456789")
_TOKEN_BAD = frozenset(b' \t"(),/:;<=>?@[\\]{}')


class ResponseHead:
    __slots__ = ("keep_alive", "length", "out", "status")

    def __init__(self, status: int, length: int, keep_alive: bool, out: bytes) -> None:
        self.status = status
        #: Body framing for the relay: >= 0 bytes, CHUNKED, or UNTIL_CLOSE.
        self.length = length
        #: Whether the replica lets fastlb reuse its connection after this response.
        self.keep_alive = keep_alive
        #: The head to send to the client.
        self.out = out


def _bad(why: str) -> HttpError:
    return HttpError(502, f"replica sent an invalid response: {why}")


def parse_response_head(
    raw: bytes, head_request: bool, client_keep_alive: bool, client_http11: bool
) -> ResponseHead:
    """Parse `raw` (up to and including the blank line) for the request described.

    `client_keep_alive` is what the client asked for; the client connection stays open only if
    it asked and the response is self-delimiting. The head sent on drops hop-by-hop fields and
    says `Connection: close` (or `keep-alive` to an HTTP/1.0 client) when that is the outcome.
    """
    lines = raw[:-4].split(b"\r\n")
    status_line = lines[0]
    if (
        len(status_line) < 12
        or status_line[:7] != b"HTTP/1."
        or status_line[7:8] not in (b"0", b"1")
        or status_line[8:9] != b" "
        or not _DIGITS.issuperset(status_line[9:12])
        or status_line[12:13] not in (b"", b" ")
    ):
        raise _bad(f"status line {status_line[:60]!r}")
    status = int(status_line[9:12])
    if status < 100:
        raise _bad(f"status {status}")
    replica_http11 = status_line[7:8] == b"1"

    content_length: bytes | None = None
    chunked = False
    has_te = False
    connection: set[bytes] = set()
    hop = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN_BAD.isdisjoint(name):
            raise _bad(f"header line {line[:60]!r}")
        lname = name.lower()
        if lname == b"content-length":
            value = value.strip()
            if not value or not _DIGITS.issuperset(value) or len(value) > 18:
                raise _bad(f"Content-Length {value[:30]!r}")
            if content_length is not None and content_length != value:
                raise _bad("conflicting Content-Length values")
            content_length = value
        elif lname == b"transfer-encoding":
            has_te = True
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        elif lname in HOP_BY_HOP:
            hop = True
            if lname == b"connection":
                connection.update(t.strip().lower() for t in value.split(b","))

    if head_request or status < 200 or status in (204, 304):
        length = 0
    elif has_te:
        length = CHUNKED if chunked else UNTIL_CLOSE
    elif content_length is not None:
        length = int(content_length)
    else:
        length = UNTIL_CLOSE

    keep_alive = b"close" not in connection if replica_http11 else b"keep-alive" in connection
    # Both framings at once is a smuggling vector: honour chunked (RFC 9112 6.3) but never
    # reuse the connection, whose next bytes can no longer be trusted.
    keep_alive = keep_alive and length != UNTIL_CLOSE and not (has_te and content_length)

    client_open = client_keep_alive and length != UNTIL_CLOSE
    if 100 <= status < 200:
        # An interim response (100 Continue): relayed as is, the real one follows.
        return ResponseHead(status, 0, keep_alive, raw)

    add = b""
    if client_http11 and not client_open:
        add = b"Connection: close\r\n"
    elif not client_http11 and client_open:
        add = b"Connection: keep-alive\r\n"
    if not hop and not add:
        return ResponseHead(status, length, keep_alive, raw)
    drop = HOP_BY_HOP | connection
    kept = [status_line]
    kept.extend(line for line in lines[1:] if line.partition(b":")[0].lower() not in drop)
    return ResponseHead(status, length, keep_alive, b"\r\n".join(kept) + b"\r\n" + add + b"\r\n")
