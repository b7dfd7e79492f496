"""The replica's response head: its status, where its body ends, and what the client gets.

Read on every request, so the work is split by cost:
- llhttp (through httptools, in C) validates the whole head: the status line, every field's
  syntax, Content-Length's digits, a duplicate Content-Length, Content-Length together with
  Transfer-Encoding. A replica that answers garbage gets the client a 502, not a guess. It is
  given no callbacks: a Python call per field would cost more than the whole fast path.
- What fastlb itself needs (the body framing, whether the replica keeps the connection, the
  hop-by-hop fields to drop) is then read with a few C-level finds on a lower-cased copy.
  The common head (one Content-Length, at most one plain Connection field, nothing rarer)
  stops there; anything else takes `_parse_general`, which gives the same answer for the
  common head (a property test holds them to that).

The result is a plain tuple `(status, length, keep_alive, out)`, not an object: it is made
once per response and unpacked at once.
- status: the status code.
- length: the body framing for the relay, >= 0 bytes, CHUNKED or UNTIL_CLOSE.
- keep_alive: whether the replica lets fastlb reuse its connection after this response.
- out: the head to send to the client, or None when it is the head as received, which the
  caller then relays without copying it.

A `101 Switching Protocols` (llhttp stops at it: HttpParserUpgrade, the head validated whole)
is read by `_switch_head`: only a switch to `websocket` is one fastlb can relay, since that is
the only upgrade it forwards (the relay machine also checks the request asked for it).
"""

from __future__ import annotations

import re
from typing import Final

from httptools import HttpParserError, HttpParserUpgrade

from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED, HOP_BY_HOP, UNTIL_CLOSE, comma_tokens
from fastlb.http.llhttp import response_validator

#: (status, length, keep_alive, out): see the module docstring.
ResponseHead = tuple[int, int, bool, bytes | None]

_NOTABLE_NAMES: Final = b"|".join(
    re.escape(n) for n in sorted(HOP_BY_HOP | {b"content-length", b"transfer-encoding"})
)
#: The fields fastlb reads or removes, with their values (optional whitespace trimmed).
_NOTABLE: Final = re.compile(
    rb"\r\n(" + _NOTABLE_NAMES + rb"):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.I
)
#: Hop-by-hop field lines, removed in one substitution.
_HOP_LINES: Final = re.compile(
    rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(HOP_BY_HOP)) + rb"):[^\r\n]*(?=\r\n)",
    re.I,
)
_PLAIN_TOKENS: Final = frozenset({b"close", b"keep-alive", b""})
#: One pass over the lower-cased head for `_plain_length`. A plain head has exactly one match:
#: its Content-Length, whose digits are the group. Anything else that matches keeps the head
#: off the fast path, its group empty: framing other than Content-Length, a hop-by-hop field,
#: a Connection field other than a plain `keep-alive` (which, when fastlb keeps the client
#: connection open too, stands as fastlb's own option: RFC 9110 section 7.6.1 lets an
#: intermediary replace Connection with its own options), or a Content-Length not all digits.
_PLAIN_FIELDS: Final = re.compile(
    rb"\r\n(?:content-length:[ \t]*([0-9]+)[ \t]*(?=\r)|t(?:ransfer-encoding|e:|railer)"
    rb"|keep-alive|proxy-|upgrade|connection:(?![ \t]*keep-alive[ \t]*\r\n)|content-length:)"
)
_CR: Final = b"\r"


def _bad(why: str) -> HttpError:
    return HttpError(502, f"replica sent an invalid response: {why}")


def parse_response_head(
    head: bytes, head_request: bool, client_keep_alive: bool, client_http11: bool
) -> ResponseHead:
    """Read the head `head` (through its blank line) of the response to the request described.

    `client_keep_alive` is what the client asked for (and fastlb allows); the client
    connection stays open only if it asked and the response is self-delimiting. The head sent
    on drops hop-by-hop fields and says `Connection: close` (or `keep-alive` to an HTTP/1.0
    client) when that is the outcome.
    """
    parser = response_validator()
    try:
        parser.feed_data(head)
    except HttpParserUpgrade:
        if parser.get_status_code() == 101 and head.startswith(b"HTTP/1.1 "):
            return _switch_head(head)
        raise _bad("a protocol switch fastlb did not ask for") from None
    except HttpParserError as exc:
        if parser.get_status_code() == 101:  # llhttp's "Pause on CONNECT/Upgrade"
            raise _bad("a 101 without Upgrade") from None
        raise _bad(str(exc)) from None
    status = parser.get_status_code()
    if status < 100 or not head.startswith(b"HTTP/1."):  # llhttp also speaks RTSP and ICE
        raise _bad(f"status line {head[: head.find(_CR)][:60]!r}")
    if (
        client_keep_alive
        and client_http11
        and status >= 200
        and status != 204
        and status != 304
        and not head_request
    ):
        lower = head.lower()
        length = _plain_length(lower)
        if length >= 0:
            return status, length, _plain_keep_alive(lower), None
    return _parse_general(head, status, head_request, client_keep_alive, client_http11)


def _plain_length(lower: bytes) -> int:
    """The Content-Length of a plain head (see `_PLAIN_FIELDS`; `lower` is the lower-cased
    head), or -1 if it is not plain or has none.

    The common response: framed by one Content-Length, relayed as received. One pattern pass:
    on a head this size each C call costs about as much as its work. llhttp checks the value
    (and that there is one field) before the result is used.
    """
    found = _PLAIN_FIELDS.findall(lower)
    if len(found) != 1 or not found[0]:
        return -1
    return int(found[0])


def _plain_keep_alive(lower: bytes) -> bool:
    """Whether the replica keeps the connection after a plain response (lower-cased head).

    Its Connection field, if any, says `keep-alive`: an HTTP/1.1 replica keeps the connection
    unless told otherwise, an HTTP/1.0 one only when it says so. (llhttp's own answer is gone
    once it completes a message: it resets its flags for the next one.)
    """
    return lower[7] == 49 or b"\r\nconnection:" in lower  # 49: b"1", HTTP/1.1


class ResponseReader:
    """Reads the response heads of one replica connection.

    Nearly every response arrives whole in one read and is framed by Content-Length. Those go
    to one llhttp parser kept for the connection: it is given exactly one whole response, so
    it ends each in its initial state, ready for the next (creating a parser costs about as
    much as parsing a head with it). Every other response is read by `parse_response_head`
    with a parser of its own, and the kept one, not given a byte of it, stays clean.
    """

    __slots__ = ("_llhttp",)

    def __init__(self) -> None:
        self._llhttp = response_validator()

    def read(
        self,
        data: bytes,
        end: int,
        head_request: bool,
        client_keep_alive: bool,
        client_http11: bool,
    ) -> ResponseHead:
        """Read the head `data[:end]`; `parse_response_head` says what the arguments are."""
        head = data[:end] if end < len(data) else data
        # The status's first digit, read before llhttp has checked it (llhttp refuses the
        # response if it is not a status): 2 to 5 is final, and 204 and 304 have no body.
        digit = data[9] if end > 12 else 0
        if (
            client_keep_alive
            and client_http11
            and not head_request
            and 50 <= digit <= 53  # b"2" to b"5"
            and (digit > 51 or data[10:12] != b"04")
            and data.startswith(b"HTTP/1.")
        ):
            lower = head.lower()
            length = _plain_length(lower)
            if length >= 0 and end + length == len(data):
                llhttp = self._llhttp
                try:
                    llhttp.feed_data(data)
                except (HttpParserError, HttpParserUpgrade) as exc:
                    self._llhttp = response_validator()
                    raise _bad(str(exc)) from None
                return llhttp.get_status_code(), length, _plain_keep_alive(lower), None
        return parse_response_head(head, head_request, client_keep_alive, client_http11)


def _parse_general(
    head: bytes,
    status: int,
    head_request: bool,
    client_keep_alive: bool,
    client_http11: bool,
) -> ResponseHead:
    """Every response head llhttp accepted, field by field (see `parse_response_head`)."""
    replica_http11 = head[7] == 49  # b"1"
    content_length: bytes | None = None
    chunked = has_te = hop = False
    connection_values: list[bytes] = []
    for name, value in _NOTABLE.findall(head):
        name = name.lower()
        if name == b"content-length":
            content_length = value  # llhttp refused a second one and a malformed one
        elif name == b"transfer-encoding":
            has_te = True
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        elif name == b"connection":
            connection_values.append(value)
        else:
            hop = True
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
    keep_alive = keep_alive and length != UNTIL_CLOSE
    if status < 200:
        # An interim response (100 Continue): relayed as is, the real one follows.
        return status, 0, keep_alive, None

    client_open = client_keep_alive and length != UNTIL_CLOSE
    # fastlb's own Connection option for the client: `close` to an HTTP/1.1 client it will
    # close, `keep-alive` to an HTTP/1.0 client it keeps; none otherwise.
    own = b""
    if client_http11 and not client_open:
        own = b"close"
    elif not client_http11 and client_open:
        own = b"keep-alive"
    plain_keep_alive = bool(connection_values) and all(
        value.lower() == b"keep-alive" for value in connection_values
    )
    if not hop and (
        not connection_values
        # A plain `Connection: keep-alive` stands as fastlb's own option when it keeps the
        # client connection open (and is the very option an HTTP/1.0 client needs).
        or (plain_keep_alive and client_open)
    ):
        if not own or (plain_keep_alive and own == b"keep-alive"):
            return status, length, keep_alive, None
        return status, length, keep_alive, head[:-2] + b"Connection: " + own + b"\r\n\r\n"
    out = _HOP_LINES.sub(b"", head)
    if connection and not _PLAIN_TOKENS.issuperset(connection):
        # Connection names further fields as hop-by-hop: drop those too (rare).
        named = [re.escape(t) for t in connection if t not in _PLAIN_TOKENS]
        drop = re.compile(rb"\r\n(?:" + b"|".join(named) + rb"):[^\r\n]*(?=\r\n)", re.I)
        out = drop.sub(b"", out)
    if own:
        out = out[:-2] + b"Connection: " + own + b"\r\n\r\n"
    return status, length, keep_alive, out


#: What a 101 to the client says of the switch: exactly the fields RFC 6455 §4.2.2 asks for.
_SWITCH_LINES: Final = b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"


def _switch_head(head: bytes) -> ResponseHead:
    """A 101 head llhttp accepted: (101, 0, False, out) if it switches to WebSocket (Upgrade
    `websocket`, Connection with `upgrade`: RFC 6455 §4.2.2, RFC 9110 §7.8), else HttpError(502).
    A 101 carries no body (RFC 9110 §15.2): framing fields in one are refused, not guessed at.
    Sent on without its hop-by-hop fields, with `_SWITCH_LINES` in their place."""
    connection: list[bytes] = []
    upgrade: list[bytes] = []
    for name, value in _NOTABLE.findall(head):
        name = name.lower()
        if name == b"connection":
            connection.append(value)
        elif name == b"upgrade":
            upgrade.append(value)
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise _bad("a 101 with a body")
    if b"upgrade" not in comma_tokens(connection):
        raise _bad("a 101 without Connection: upgrade")
    if comma_tokens(upgrade) != {b"websocket"}:
        shown = b", ".join(upgrade)[:60]
        raise _bad(f"a 101 to {shown!r}, not to the websocket fastlb asked for")
    out = _HOP_LINES.sub(b"", head)
    named = comma_tokens(connection) - _PLAIN_TOKENS - {b"upgrade"}
    if named:
        # Connection names further fields as hop-by-hop: drop those too (rare).
        drop = re.compile(
            rb"\r\n(?:" + b"|".join(re.escape(t) for t in named) + rb"):[^\r\n]*(?=\r\n)", re.I
        )
        out = drop.sub(b"", out)
    return 101, 0, False, out[:-2] + _SWITCH_LINES
