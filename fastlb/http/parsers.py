"""Two request-head parsers behind one interface, chosen in config as uvicorn's `--http` is.

- httptools (llhttp, C): the default, for speed.
- h11 (pure Python): strict and readable, for when a C parser is not wanted.

Each parses exactly one complete head (the bytes up to and including the blank line; the I/O
shell finds that boundary and enforces the size limit) and returns a `RequestHead`. The body is
never given to a parser: the proxy relays it raw and `framing` finds its end. A parser's job is
to accept or refuse the bytes and to name the method; `head.read_request_head` then reads what
the request means from the same bytes for both, so they cannot disagree on framing.
"""

from __future__ import annotations

import h11
import httptools

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
                # there, so it is replaced. `read_request_head` refuses CONNECT, and the
                # rewrite drops Upgrade (hop-by-hop), so the replica sees plain HTTP.
                return read_request_head(raw, self._key_field, self._max_fields)
            except httptools.HttpParserError as exc:
                raise HttpError(400, f"malformed request: {exc}") from None
            head = read_request_head(raw, self._key_field, self._max_fields)
            clean = head.length == 0 and head.keep_alive
            return head
        finally:
            if not clean:
                self._llhttp = request_validator()


class H11HeadParser(HeadParser):
    """h11's strict reading of the head; h11's own framing checks run before ours."""

    __slots__ = ("_key_field", "_max_bytes", "_max_fields")

    def __init__(self, key_header: bytes | None, max_fields: int, max_bytes: int) -> None:
        self._key_field = None if key_header is None else key_field_needle(key_header)
        self._max_fields = max_fields
        self._max_bytes = max_bytes

    def parse(self, raw: bytes) -> RequestHead:
        if raw.count(b"\n") != raw.count(b"\r\n"):
            # h11 accepts bare LF line ends; the head is relayed raw, and a replica that
            # splits lines differently would see other requests than fastlb did.
            raise HttpError(400, "malformed request: a line ends in a bare LF")
        if b"\r\n " in raw or b"\r\n\t" in raw:
            # h11 unfolds obs-fold; fastlb reads fields from the raw bytes, as llhttp does,
            # which refuses folding (RFC 9112 section 5.2 allows either).
            raise HttpError(400, "malformed request: a field value is folded (obs-fold)")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_bytes + 1)
        conn.receive_data(raw)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
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
