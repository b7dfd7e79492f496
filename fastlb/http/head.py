"""A parsed request head and the framing rules every parser must agree on.

The two parsers (httptools, h11) differ in how they validate bytes, not in what a request
means: once a parser has accepted a head, `read_request_head` reads what fastlb needs from the
same bytes for both, so they cannot disagree. The decisions that make request smuggling
possible when two hops disagree (RFC 9112 section 6.3) are taken here, once. The rules are
those of RFC 9112, applied as strictly as HAProxy does: Content-Length together with
Transfer-Encoding, differing Content-Length values, or a Transfer-Encoding whose final coding
is not `chunked` are refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from fastlb.http.errors import HttpError

#: Body framing: a length >= 0 counts bytes; CHUNKED scans chunks; UNTIL_CLOSE (responses only)
#: runs to the end of the connection.
CHUNKED: Final = -1
UNTIL_CLOSE: Final = -2

#: Hop-by-hop headers (RFC 9110 section 7.6.1) that a proxy must not forward. Transfer-Encoding
#: is hop-by-hop too, but fastlb relays the chunked framing unchanged, so it keeps the header
#: that describes it.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: Headers whose presence sends a request down the slower rewriting path: the hop-by-hop ones,
#: and the X-Forwarded-* that fastlb extends or replaces.
REWRITE: Final = HOP_BY_HOP | {b"x-forwarded-for", b"x-forwarded-proto"}

_DIGITS: Final = frozenset(b"0123456789")

#: The fields that change what a request means to fastlb: its framing, and those it drops or
#: rewrites. Matched on the lower-cased head; most requests carry none of them, and a head
#: without them is read with no Python work per field.
_NOTABLE: Final = REWRITE | {b"content-length", b"transfer-encoding"}
_NOTABLE_NAMES: Final = b"|".join(re.escape(n) for n in sorted(_NOTABLE))
_ANY_NOTABLE: Final = re.compile(rb"\r\n(?:" + _NOTABLE_NAMES + rb"):")
#: Each notable field with its value (optional whitespace trimmed), in order.
_NOTABLE_FIELDS: Final = re.compile(
    rb"\r\n(" + _NOTABLE_NAMES + rb"):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.I
)


class RequestHead:
    """What the proxy needs to know about one request, and its head bytes as received."""

    __slots__ = (
        "http11",
        "keep_alive",
        "key_value",
        "length",
        "method",
        "raw",
        "rewrite",
        "target",
    )

    def __init__(
        self,
        raw: bytes,
        method: bytes,
        target: bytes,
        http11: bool,
        keep_alive: bool,
        length: int,
        rewrite: bool,
        key_value: bytes | None,
    ) -> None:
        self.raw = raw
        self.method = method
        self.target = target
        self.http11 = http11
        self.keep_alive = keep_alive
        self.length = length
        #: True when a header must be dropped or edited before forwarding (see REWRITE).
        self.rewrite = rewrite
        #: The value of the header the routing key reads, if the request carries it.
        self.key_value = key_value

    @property
    def path(self) -> bytes:
        """The target without its query: what the replica-path check and `path` keys see."""
        return self.target.split(b"?", 1)[0]


def body_length(content_length: list[bytes], transfer_encoding: list[bytes], http11: bool) -> int:
    """The request body framing from the raw header values, or HttpError(400).

    `content_length` and `transfer_encoding` hold every value of those headers in order.
    """
    if transfer_encoding:
        if content_length:
            raise HttpError(400, "Content-Length and Transfer-Encoding together are ambiguous")
        if not http11:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [
            c.strip().lower() for value in transfer_encoding for c in value.split(b",") if c.strip()
        ]
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            shown = b", ".join(transfer_encoding).decode("latin-1")
            raise HttpError(400, f"Transfer-Encoding {shown!r} does not end in a single chunked")
        return CHUNKED
    if content_length:
        values = {v.strip() for value in content_length for v in value.split(b",")}
        if len(values) != 1:
            raise HttpError(400, "conflicting Content-Length values")
        (value,) = values
        if not value or len(value) > 18 or not _DIGITS.issuperset(value):
            raise HttpError(400, f"invalid Content-Length {value.decode('latin-1')!r}")
        return int(value)
    return 0


def comma_tokens(values: Iterable[bytes]) -> set[bytes]:
    """The lower-cased members of comma-separated header values (Connection's, say)."""
    return {t for value in values for t in (p.strip().lower() for p in value.split(b",")) if t}


def wants_keep_alive(connection: list[bytes], http11: bool) -> bool:
    """HTTP/1.1 stays open unless told `close`; HTTP/1.0 closes unless told `keep-alive`."""
    tokens = comma_tokens(connection)
    if http11:
        return b"close" not in tokens
    return b"keep-alive" in tokens and b"close" not in tokens


def read_request_head(raw: bytes, key_field: bytes | None, max_fields: int) -> RequestHead:
    """What a head means, read from `raw` once a parser has validated it (its request line,
    field syntax and line ends): method, target and version from the request line, and the
    fields that matter to fastlb. `key_field` is `key_field_needle(name)` of the field the
    routing key reads, if any.

    Every step is a C-level bytes or regex operation: a Python step per field would cost more
    than reading the whole head this way."""
    parts = raw.split(b" ", 2)
    method = parts[0]
    version = parts[2][:10] if len(parts) == 3 else b""
    if version == b"HTTP/1.1\r\n":
        target, http11 = parts[1], True
    elif version == b"HTTP/1.0\r\n":
        target, http11 = parts[1], False
    else:
        target, http11 = _odd_request_line(raw, method)
    if method == b"CONNECT":
        raise HttpError(405, "CONNECT is not supported by this proxy")
    # A field line takes at least 4 bytes ("a:" CRLF): a short head cannot hold too many.
    if len(raw) > 4 * max_fields and raw.count(b"\r\n") - 2 > max_fields:
        raise HttpError(431, f"more than {max_fields} header fields")
    lower = raw.lower()
    key_value: bytes | None = None
    if key_field is not None:
        at = lower.find(key_field)
        if at >= 0:
            start = at + len(key_field)
            key_value = raw[start : raw.find(b"\r\n", start)].strip(b" \t")
    if _ANY_NOTABLE.search(lower) is None:
        return RequestHead(raw, method, target, http11, http11, 0, False, key_value)
    content_length: list[bytes] = []
    transfer_encoding: list[bytes] = []
    connection: list[bytes] = []
    rewrite = False
    for name, value in _NOTABLE_FIELDS.findall(raw):
        name = name.lower()
        if name == b"content-length":
            content_length.append(value)
        elif name == b"transfer-encoding":
            transfer_encoding.append(value)
        else:
            rewrite = True
            if name == b"connection":
                connection.append(value)
    length = body_length(content_length, transfer_encoding, http11)
    keep_alive = wants_keep_alive(connection, http11)
    return RequestHead(raw, method, target, http11, keep_alive, length, rewrite, key_value)


def key_field_needle(name: bytes) -> bytes:
    """What `read_request_head` looks for to find the field `name` (lower-cased)."""
    return b"\r\n" + name + b":"


def _odd_request_line(raw: bytes, method: bytes) -> tuple[bytes, bool]:
    """(target, http11) of a request line with extra spaces, or HttpError(400) for a version
    other than HTTP/1.0 and 1.1."""
    line = raw[: raw.find(b"\r\n")]
    version = line[-8:]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or line[-9:-8] != b" ":
        shown = line.rpartition(b" ")[2].decode("latin-1")
        raise HttpError(400, f"malformed request: unsupported HTTP version {shown!r}")
    return line[len(method) : -9].strip(b" "), version == b"HTTP/1.1"
