"""The replica's response head: its status, where its body ends, and what the client gets.

Read on every request, so it is shaped for speed: one compiled pattern validates the whole
head in C (status line, then `token: value` lines), a second finds the few fields that matter
(framing, Connection and the other hop-by-hop ones), and the common head passes on as the bytes
received. It is strict all the same: a replica that answers garbage gets the client a 502, not
a guess.
"""

from __future__ import annotations

import re

from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED, HOP_BY_HOP, UNTIL_CLOSE, comma_tokens

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: A whole head: status line (reason optional), field lines, blank line. RFC 9112 sections 4, 5.
_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?\r\n(?:" + _TOKEN + rb":[^\r\n]*\r\n)*\r\n"
)
_NOTABLE_NAMES = b"|".join(
    re.escape(n) for n in sorted(HOP_BY_HOP | {b"content-length", b"transfer-encoding"})
)
#: The fields fastlb reads or removes, with their values (optional whitespace trimmed).
_NOTABLE = re.compile(rb"\r\n(" + _NOTABLE_NAMES + rb"):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.I)
#: Hop-by-hop field lines, removed in one substitution.
_HOP_LINES = re.compile(
    rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(HOP_BY_HOP)) + rb"):[^\r\n]*(?=\r\n)",
    re.I,
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b""})
#: Fields that send a head down the general path: framing other than Content-Length, and the
#: hop-by-hop fields other than Connection. Matched on the lower-cased head.
_RARE = re.compile(
    rb"\r\n(?:transfer-encoding|keep-alive|proxy-connection|proxy-authenticate|"
    rb"proxy-authorization|te|trailer|upgrade)[ \t]*:"
)


class ResponseHead:
    __slots__ = ("keep_alive", "length", "out", "status")

    def __init__(self, status: int, length: int, keep_alive: bool, out: bytes | None) -> None:
        self.status = status
        #: Body framing for the relay: >= 0 bytes, CHUNKED, or UNTIL_CLOSE.
        self.length = length
        #: Whether the replica lets fastlb reuse its connection after this response.
        self.keep_alive = keep_alive
        #: The head to send to the client; None when it is the head as received, which the
        #: caller then relays without copying it.
        self.out = out


def _bad(why: str) -> HttpError:
    return HttpError(502, f"replica sent an invalid response: {why}")


def parse_response_head(
    buf: bytes, end: int, head_request: bool, client_keep_alive: bool, client_http11: bool
) -> ResponseHead:
    """Parse the head `buf[:end]` (up to and including the blank line) for the request described.

    The common head (one Content-Length, maybe one Connection, no other hop-by-hop or framing
    field) is read with a few C-level finds on a lower-cased copy; anything else takes the
    general path, which gives the same answer (a property test holds them to that).
    """
    match = _HEAD.fullmatch(buf, 0, end)
    if match is None:
        raise _bad(_first_bad_line(buf[:end]))
    status = int(match.group(2))
    head = buf[:end]
    lower = head.lower()
    cl_at = lower.find(b"\r\ncontent-length:")
    conn_at = lower.find(b"\r\nconnection:")
    if (
        status < 200
        or status in (204, 304)
        or head_request
        or cl_at < 0
        or _RARE.search(lower) is not None
        or lower.find(b"\r\ncontent-length:", cl_at + 17) >= 0
        or (conn_at >= 0 and lower.find(b"\r\nconnection:", conn_at + 13) >= 0)
    ):
        return _parse_general(buf, end, match, head_request, client_keep_alive, client_http11)
    value = head[cl_at + 17 : head.index(b"\r\n", cl_at + 2)].strip(b" \t")
    if _DIGITS.fullmatch(value) is None:
        raise _bad(f"Content-Length {value[:30]!r}")
    length = int(value)
    replica_http11 = match.group(1) == b"1"
    out: bytes | None = None
    if conn_at >= 0:
        line_end = head.index(b"\r\n", conn_at + 2)
        tokens = lower[conn_at + 13 : line_end].strip(b" \t")
        if b"," in tokens or tokens not in _PLAIN_TOKENS:
            return _parse_general(buf, end, match, head_request, client_keep_alive, client_http11)
        keep_alive = tokens != b"close" if replica_http11 else tokens == b"keep-alive"
        out = head[:conn_at] + head[line_end:]  # the Connection line is hop-by-hop
    else:
        keep_alive = replica_http11
    if client_http11 != client_keep_alive:  # an HTTP/1.1 client closing, or 1.0 keeping
        add = b"Connection: close\r\n" if client_http11 else b"Connection: keep-alive\r\n"
        base = head if out is None else out
        out = base[:-2] + add + b"\r\n"
    return ResponseHead(status, length, keep_alive, out)


def _parse_general(
    buf: bytes,
    end: int,
    match: re.Match[bytes],
    head_request: bool,
    client_keep_alive: bool,
    client_http11: bool,
) -> ResponseHead:
    """Parse the head `buf[:end]` (up to and including the blank line) for the request described.

    The head is read in place: the body bytes that arrived with it are not copied.

    `client_keep_alive` is what the client asked for; the client connection stays open only if
    it asked and the response is self-delimiting. The head sent on drops hop-by-hop fields and
    says `Connection: close` (or `keep-alive` to an HTTP/1.0 client) when that is the outcome.

    `match` is `_HEAD`'s match of the head, already made by the caller.
    """
    status = int(match.group(2))
    if status < 100:
        raise _bad(f"status {status}")
    replica_http11 = match.group(1) == b"1"

    content_length: bytes | None = None
    chunked = has_te = hop = False
    connection_values: list[bytes] = []
    for name, value in _NOTABLE.findall(buf, 0, end):
        name = name.lower()
        if name == b"content-length":
            if _DIGITS.fullmatch(value) is None:
                raise _bad(f"Content-Length {value[:30]!r}")
            if content_length is not None and content_length != value:
                raise _bad("conflicting Content-Length values")
            content_length = value
        elif name == b"transfer-encoding":
            has_te = True
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        else:
            hop = True
            if name == b"connection":
                connection_values.append(value)
    connection = comma_tokens(connection_values)

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
    if status < 200:
        # An interim response (100 Continue): relayed as is, the real one follows.
        return ResponseHead(status, 0, keep_alive, None)

    client_open = client_keep_alive and length != UNTIL_CLOSE
    add = b""
    if client_http11 and not client_open:
        add = b"Connection: close\r\n"
    elif not client_http11 and client_open:
        add = b"Connection: keep-alive\r\n"
    if not hop and not add:
        return ResponseHead(status, length, keep_alive, None)
    raw = buf[:end]
    out = _HOP_LINES.sub(b"", raw) if hop else raw
    if connection and not _PLAIN_TOKENS.issuperset(connection):
        # Connection names further fields as hop-by-hop: drop those too (rare).
        named = [re.escape(t) for t in connection if t not in _PLAIN_TOKENS]
        drop = re.compile(rb"\r\n(?:" + b"|".join(named) + rb"):[^\r\n]*(?=\r\n)", re.I)
        out = drop.sub(b"", out)
    if add:
        out = out[:-2] + add + b"\r\n"
    return ResponseHead(status, length, keep_alive, out)


def _first_bad_line(raw: bytes) -> str:
    """Which line made the head invalid, for the 502's message and the log."""
    lines = raw[:-4].split(b"\r\n")
    if _HEAD.fullmatch(lines[0] + b"\r\n\r\n") is None:
        return f"status line {lines[0][:60]!r}"
    for line in lines[1:]:
        if re.fullmatch(_TOKEN + rb":[^\r\n]*", line) is None:
            return f"header line {line[:60]!r}"
    return "malformed head"
