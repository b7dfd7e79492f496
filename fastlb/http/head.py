"""A parsed request head and the framing rules every parser must agree on.

The two parsers (httptools, h11) differ in how they read bytes, not in what a request means:
the decisions that make request smuggling possible when two hops disagree (RFC 9112 section
6.3) are taken here, once, from the header values the parser collected. The rules are those
of RFC 9112, applied as strictly as HAProxy does: Content-Length together with
Transfer-Encoding, differing Content-Length values, or a Transfer-Encoding whose final coding
is not `chunked` are refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastlb.http.errors import HttpError

#: Body framing: a length >= 0 counts bytes; CHUNKED scans chunks; UNTIL_CLOSE (responses only)
#: runs to the end of the connection.
CHUNKED = -1
UNTIL_CLOSE = -2

#: Hop-by-hop headers (RFC 9110 section 7.6.1) that a proxy must not forward. Transfer-Encoding
#: is hop-by-hop too, but fastlb relays the chunked framing unchanged, so it keeps the header
#: that describes it.
HOP_BY_HOP = frozenset(
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
REWRITE = HOP_BY_HOP | {b"x-forwarded-for", b"x-forwarded-proto"}

_DIGITS = frozenset(b"0123456789")


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
