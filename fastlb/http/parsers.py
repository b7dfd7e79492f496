"""Two request-head parsers behind one interface, chosen in config as uvicorn's `--http` is.

- httptools (llhttp, C): the default, for speed.
- h11 (pure Python): strict and readable, for when a C parser is not wanted.

Each parses exactly one complete head (the bytes up to and including the blank line; the I/O
shell finds that boundary and enforces the size limit) and returns a `RequestHead`. The body is
never given to a parser: the proxy relays it raw and `framing` finds its end. A parser's job is
to accept or refuse the bytes; `head.read_request_head` then reads what the request means from
the same bytes for both and applies the acceptance policy (fastlb/http/accept.py), so they
cannot disagree. Where a parser refuses, the policy's own reading names the fault and status.
"""

from __future__ import annotations

import h11
import httptools

from fastlb.http.accept import check_head
from fastlb.http.errors import HttpError
from fastlb.http.head import RequestHead, key_field_needle, read_request_head
from fastlb.http.llhttp import request_validator

__all__ = ["H11HeadParser", "HeadParser", "HttptoolsHeadParser", "make_head_parser"]


class HeadParser:
    """The interface both parsers implement. A base class rather than a Protocol: compiled
    (fastlb/_native.py), a call through it is a direct C call, not a method lookup by name."""

    __slots__ = ()

    def parse(self, raw: bytes) -> RequestHead:
        """Parse one complete request head; HttpError(4xx) if it is malformed or refused."""
        raise NotImplementedError


class HttptoolsHeadParser(HeadParser):
    """llhttp through httptools.

    One llhttp parser serves every connection of the listener: a parse is synchronous and
    starts from llhttp's initial state. After a bodiless keep-alive request llhttp is back in
    that state by itself (it completed the message), so the parser is kept; after anything
    else (a body it was not given, a close, an error) it is replaced, so no state of one
    request reaches the next. Creating one costs about as much as the rest of a parse.
    """

    __slots__ = ("_key_field", "_llhttp", "_max_fields")

    def __init__(self, key_header: bytes | None, max_fields: int) -> None:
        self._key_field = None if key_header is None else key_field_needle(key_header)
        self._max_fields = max_fields
        self._llhttp = request_validator()

    def parse(self, raw: bytes) -> RequestHead:
        clean = False  # whether llhttp ended where it began: a bodiless keep-alive request
        try:
            try:
                self._llhttp.feed_data(raw)
            except httptools.HttpParserUpgrade:
                # CONNECT or an Upgrade field: the head is complete and valid. llhttp stops
                # there, so it is replaced. `read_request_head` refuses CONNECT and flags a
                # WebSocket upgrade (the one forwarded); the rewrite drops any other Upgrade
                # (hop-by-hop), so for those the replica sees plain HTTP.
                return read_request_head(raw, self._key_field, self._max_fields)
            except httptools.HttpParserError:
                return self._refused(raw)
            head = read_request_head(raw, self._key_field, self._max_fields)
            clean = head.length == 0 and head.keep_alive
            return head
        finally:
            if not clean:
                self._llhttp = request_validator()

    def _refused(self, raw: bytes) -> RequestHead:
        """llhttp refused the head: the policy's exhaustive reading (`accept.check_head`, then
        `read_request_head`) names the fault and its status, so both modes answer alike (a
        505 for a version, say, where llhttp has only "error"). If the policy finds no fault,
        the head is valid and llhttp was stricter than RFC 9110 on it, which it is on three
        things: methods not on its list (RFC 9110 §9.1: any token is a method, and the
        replica answers 405/501 itself), `PRI` with an HTTP/1.1 target (it expects the
        HTTP/2 preface), and an HTAB after `chunked` (OWS, RFC 9110 §5.6.3). The policy's
        reading is the one fastlb forwards by, so it decides."""
        check_head(raw, self._max_fields)
        return read_request_head(raw, self._key_field, self._max_fields)


class H11HeadParser(HeadParser):
    """h11's strict reading of the head; h11's own framing checks run before ours."""

    __slots__ = ("_key_field", "_max_bytes", "_max_fields")

    def __init__(self, key_header: bytes | None, max_fields: int, max_bytes: int) -> None:
        self._key_field = None if key_header is None else key_field_needle(key_header)
        self._max_fields = max_fields
        self._max_bytes = max_bytes

    def parse(self, raw: bytes) -> RequestHead:
        # The policy's exhaustive reading first: h11 is lenient where llhttp is strict (bare
        # LF, obs-fold, CTLs in values, methods), and the policy must decide those alike in
        # both modes; it also names the statuses (505, 405) h11 would give as 400.
        check_head(raw, self._max_fields)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_bytes + 1)
        conn.receive_data(raw)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            # What the policy accepts and h11 does not: the framing and Host rules the policy
            # states with their own reasons (read_request_head raises them), else h11's word.
            read_request_head(raw, self._key_field, self._max_fields)
            status = 431 if exc.error_status_hint == 431 else 400
            raise HttpError(status, f"malformed request: {exc}") from None
        if not isinstance(event, h11.Request):
            raise HttpError(400, "malformed request: incomplete head")
        return read_request_head(raw, self._key_field, self._max_fields)


def make_head_parser(
    kind: str, key_header: bytes | None, max_fields: int, max_bytes: int
) -> HeadParser:
    if kind == "httptools":
        return HttptoolsHeadParser(key_header, max_fields)
    if kind == "h11":
        return H11HeadParser(key_header, max_fields, max_bytes)
    raise ValueError(f"unknown HTTP parser {kind!r}; expected 'httptools' or 'h11'")
