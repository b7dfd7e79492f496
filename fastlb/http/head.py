"""A parsed request head, read the same way whichever parser accepted it.

The two parsers (httptools, h11) differ in how they validate bytes, not in what a request
means: once a parser has accepted a head, `read_request_head` reads what fastlb needs from the
same bytes for both and applies the acceptance policy's rules that neither parser applies
(fastlb/http/accept.py has the whole table), so they cannot disagree. The decisions that make
request smuggling possible when two hops disagree (RFC 9112 §6.3) are taken here, once, as
strictly as HAProxy takes them: Content-Length together with Transfer-Encoding, a repeated or
listed Content-Length, or a Transfer-Encoding other than a single `chunked` are refused rather
than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from fastlb.http.accept import (
    ORIGIN_CHARS,
    REG_NAME_CHARS,
    TCHAR,
    check_head,
    expect_drops,
    host_value,
    normalise,
    request_line,
    same_authority,
    scheme_port,
    transfer_coding_is_chunked,
)
from fastlb.http.accept import content_length as parse_content_length
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

#: The fields that change what a request means to fastlb: its framing, and those it drops or
#: rewrites. Matched on the lower-cased head; most requests carry none of them, and a head
#: without them is read with no Python work per field.
_NOTABLE: Final = REWRITE | {b"content-length", b"transfer-encoding", b"expect"}
_NOTABLE_NAMES: Final = b"|".join(re.escape(n) for n in sorted(_NOTABLE))
_ANY_NOTABLE: Final = re.compile(rb"\r\n(?:" + _NOTABLE_NAMES + rb"):")
#: Each notable field with its value (optional whitespace trimmed), in order.
_NOTABLE_FIELDS: Final = re.compile(
    rb"\r\n(" + _NOTABLE_NAMES + rb"):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.I
)
#: The common request line: a token method, an origin-form target of plain characters (no
#: pct-encoding: those take the slow path), HTTP/1.1 or HTTP/1.0, single spaces, at the very
#: start of the head. Group 3 is "1" for HTTP/1.1 and empty for HTTP/1.0.
_FAST_LINE: Final = re.compile(
    rb"([" + TCHAR + rb"]+) (/[" + ORIGIN_CHARS + rb"]*) HTTP/1\.(?:(1)|0)\r\n"
)
#: The common Host value (after "host:"): a reg-name (or IPv4) of plain characters, maybe a
#: port, OWS around it. Anything else (IP literals, pct-encoding) takes the slow path.
_FAST_HOST: Final = re.compile(rb"[ \t]*[" + REG_NAME_CHARS + rb"]+(?::[0-9]*)?[ \t]*\r\n")


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
        "upgrade",
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
        upgrade: bool = False,
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
        #: The request asks for a WebSocket tunnel (`websocket_upgrade`): forwarded with
        #: `Connection: upgrade` and `Upgrade: websocket`, and a 101 answer makes the
        #: connection a byte tunnel. Set only on the slow (notable-field) path.
        self.upgrade = upgrade

    @property
    def path(self) -> bytes:
        """The target without its query: what the replica-path check and `path` keys see."""
        return self.target.split(b"?", 1)[0]


def body_length(content_length: list[bytes], transfer_encoding: list[bytes], http11: bool) -> int:
    """The request body framing from the raw header values (RFC 9112 §6.3), or HttpError.

    `content_length` and `transfer_encoding` hold every value of those headers in order.
    """
    if transfer_encoding:
        if content_length:
            raise HttpError(400, "Content-Length and Transfer-Encoding together are ambiguous")
        if not http11:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        transfer_coding_is_chunked(transfer_encoding)
        return CHUNKED
    if content_length:
        return parse_content_length(content_length)
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
    """What a head means, read from `raw` once a parser has accepted it, and the policy's
    rules neither parser applies (fastlb/http/accept.py): the request line's exact shape and
    target, Host, framing, Expect. `key_field` is `key_field_needle(name)` of the field the
    routing key reads, if any.

    Every step of the common request (origin-form, one valid Host, no framing field) is a
    C-level bytes or regex operation: a Python step per field would cost more than reading
    the whole head this way. Anything unusual goes to the slow path, which first reads the
    whole head against the grammar (`accept.check_head`), so that a fault is named the same
    way whichever parser let it through."""
    m = _FAST_LINE.match(raw)
    if m is None:
        return _unusual_head(raw, key_field, max_fields)
    method = m.group(1)
    target = m.group(2)
    http11 = m.start(3) >= 0  # group 3 took part: HTTP/1.1
    if method == b"CONNECT":
        raise HttpError(405, "CONNECT is not supported by this proxy")
    # A field line takes at least 4 bytes ("a:" CRLF): a short head cannot hold too many.
    if len(raw) > 4 * max_fields and raw.count(b"\r\n") - 2 > max_fields:
        raise HttpError(431, f"more than {max_fields} header fields")
    lower = raw.lower()
    host_at = lower.find(b"\r\nhost:")
    if (
        host_at < 0
        or lower.find(b"\r\nhost:", host_at + 7) >= 0
        or _FAST_HOST.match(raw, host_at + 7) is None
    ):
        return _unusual_head(raw, key_field, max_fields)
    key_value = _key_value(raw, lower, key_field)
    if _ANY_NOTABLE.search(lower) is None:
        return RequestHead(raw, method, target, http11, http11, 0, False, key_value)
    return _notable(raw, method, target, http11, None, key_value)


def _key_value(raw: bytes, lower: bytes, key_field: bytes | None) -> bytes | None:
    """The routing key field's value (`key_field` from `key_field_needle`), or None."""
    if key_field is None:
        return None
    at = lower.find(key_field)
    if at < 0:
        return None
    start = at + len(key_field)
    return raw[start : raw.find(b"\r\n", start)].strip(b" \t")


def _unusual_head(raw: bytes, key_field: bytes | None, max_fields: int) -> RequestHead:
    """The slow path: the whole head against the grammar, then each rule in turn."""
    check_head(raw, max_fields)
    lines = raw[:-4].split(b"\r\n")
    method, target, http11, authority = request_line(lines[0])
    lower = raw.lower()
    hosts = [line[5:] for line in lower.split(b"\r\n") if line.startswith(b"host:")]
    if len(hosts) > 1:
        raise HttpError(400, "more than one Host field (RFC 9112 §3.2)")
    host: bytes | None = None
    if hosts:
        at = lower.find(b"\r\nhost:") + 7
        host = host_value(raw[at : raw.find(b"\r\n", at)])
    elif http11:
        raise HttpError(400, "an HTTP/1.1 request without Host (RFC 9112 §3.2)")
    new_host: bytes | None = None
    if authority is not None:
        port = scheme_port(lines[0].split(b" ")[1])
        if host is not None and not same_authority(host, authority, port):
            raise HttpError(
                400, "Host does not match the absolute-form request-target (RFC 9112 §3.2.2)"
            )
        new_host = authority
    key_value = _key_value(raw, lower, key_field)
    return _notable(raw, method, target, http11, new_host, key_value)


def _notable(
    raw: bytes,
    method: bytes,
    target: bytes,
    http11: bool,
    new_host: bytes | None,
    key_value: bytes | None,
) -> RequestHead:
    """A head with fields that frame, drop or rewrite (see _NOTABLE), or one to normalise
    (`new_host`: an absolute-form target's authority)."""
    content_length: list[bytes] = []
    transfer_encoding: list[bytes] = []
    connection: list[bytes] = []
    upgrade: list[bytes] = []
    expect: list[bytes] = []
    rewrite = new_host is not None
    for name, value in _NOTABLE_FIELDS.findall(raw):
        name = name.lower()
        if name == b"content-length":
            content_length.append(value)
        elif name == b"transfer-encoding":
            transfer_encoding.append(value)
        elif name == b"expect":
            expect.append(value)
        else:
            rewrite = True
            if name == b"connection":
                connection.append(value)
            elif name == b"upgrade":
                upgrade.append(value)
    length = body_length(content_length, transfer_encoding, http11)
    tunnel = bool(upgrade) and websocket_upgrade(method, http11, connection, upgrade)
    if tunnel and length != 0:
        # The bytes after the head are the tunnel's once the replica answers 101: a body
        # there could be read as body by one hop and as WebSocket frames by the other.
        raise HttpError(400, "a WebSocket upgrade request with a body (RFC 6455 §4.1)")
    drop_expect = bool(expect) and expect_drops(expect, http11)
    if new_host is not None or drop_expect:
        raw = normalise(raw, method, target, http11, new_host, drop_expect)
    keep_alive = wants_keep_alive(connection, http11)
    return RequestHead(
        raw, method, target, http11, keep_alive, length, rewrite, key_value, tunnel
    )


def websocket_upgrade(
    method: bytes, http11: bool, connection: list[bytes], upgrade: list[bytes]
) -> bool:
    """Whether a request asks to become a WebSocket tunnel: `Connection` has the `upgrade`
    token (RFC 9110 §7.6.1, tokens without case) and `Upgrade` offers `websocket` (RFC 9110
    §7.8, RFC 6455 §4.1), on a GET in HTTP/1.1 (RFC 6455 §4.1; RFC 9110 §7.8: Upgrade in
    HTTP/1.0 is ignored). Every other Upgrade (h2c above all: a request smuggled past the
    proxy inside an HTTP/2 connection the replica opens) is dropped as any hop-by-hop field."""
    return (
        http11
        and method == b"GET"
        and b"upgrade" in comma_tokens(connection)
        and b"websocket" in comma_tokens(upgrade)
    )


def key_field_needle(name: bytes) -> bytes:
    """What `read_request_head` looks for to find the field `name` (lower-cased)."""
    return b"\r\n" + name + b":"
