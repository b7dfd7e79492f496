"""Two request-head parsers behind one interface, chosen in config as uvicorn's `--http` is.

- httptools (llhttp, C): the default, for speed.
- h11 (pure Python): strict and readable, for when a C parser is not wanted.

Each parses exactly one complete head (the bytes up to and including the blank line; the I/O
shell finds that boundary and enforces the size limit) and returns a `RequestHead`. The body is
never given to a parser: the proxy relays it raw and `framing` finds its end. Both collect the
same few header values and leave every framing decision to `head`, so they cannot disagree.
"""

from __future__ import annotations

from typing import Protocol

import h11
import httptools

from fastlb.http.errors import HttpError
from fastlb.http.head import REWRITE, RequestHead, body_length, wants_keep_alive

__all__ = ["H11HeadParser", "HeadParser", "HttptoolsHeadParser", "make_head_parser"]


class HeadParser(Protocol):
    def parse(self, raw: bytes) -> RequestHead:
        """Parse one complete request head; HttpError(4xx) if it is malformed or refused."""
        ...


class _Collected:
    """The header values a head parser keeps while it walks the fields.

    Most requests carry none of the fields that matter to framing or forwarding, so those are
    only noted when present and `finish` takes a short path when there were none.
    """

    __slots__ = ("fields", "key_value", "notable")

    def __init__(self) -> None:
        self.notable: list[tuple[bytes, bytes]] | None = None
        self.key_value: bytes | None = None
        self.fields = 0

    def add(self, name: bytes, value: bytes, key_header: bytes | None) -> None:
        self.fields += 1
        if name in _NOTABLE:
            if self.notable is None:
                self.notable = []
            self.notable.append((name, value))
        if name == key_header and self.key_value is None:
            self.key_value = value

    def finish(
        self, raw: bytes, method: bytes, target: bytes, http11: bool, max_fields: int
    ) -> RequestHead:
        if self.fields > max_fields:
            raise HttpError(431, f"more than {max_fields} header fields")
        if method == b"CONNECT":
            raise HttpError(405, "CONNECT is not supported by this proxy")
        notable = self.notable
        if notable is None:
            return RequestHead(raw, method, target, http11, http11, 0, False, self.key_value)
        content_length = [v for n, v in notable if n == b"content-length"]
        transfer_encoding = [v for n, v in notable if n == b"transfer-encoding"]
        connection = [v for n, v in notable if n == b"connection"]
        rewrite = any(n in REWRITE for n, _ in notable)
        length = body_length(content_length, transfer_encoding, http11)
        keep_alive = wants_keep_alive(connection, http11)
        return RequestHead(
            raw, method, target, http11, keep_alive, length, rewrite, self.key_value
        )


_NOTABLE = REWRITE | {b"content-length", b"transfer-encoding"}


class HttptoolsHeadParser:
    """llhttp through httptools. A parser object costs ~0.3 us, so each head gets a fresh one
    and no parser state can leak from one request into the next."""

    __slots__ = ("_complete", "_got", "_key_header", "_max_fields", "_url")

    def __init__(self, key_header: bytes | None, max_fields: int) -> None:
        self._key_header = key_header
        self._max_fields = max_fields
        self._got = _Collected()
        self._url = b""
        self._complete = False

    def parse(self, raw: bytes) -> RequestHead:
        self._got = got = _Collected()
        self._url = b""
        self._complete = False
        parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            # CONNECT or an Upgrade header: the head is complete, and `finish` refuses CONNECT
            # while the rewrite drops Upgrade (hop-by-hop), so the replica sees plain HTTP.
            pass
        except httptools.HttpParserError as exc:
            raise HttpError(400, f"malformed request: {exc}") from None
        if not self._complete:
            raise HttpError(400, "malformed request: incomplete head")
        http11 = parser.get_http_version() == "1.1"
        method = parser.get_method()
        return got.finish(raw, method, self._url, http11, self._max_fields)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._got.add(name.lower(), value, self._key_header)

    def on_headers_complete(self) -> None:
        self._complete = True


class H11HeadParser:
    """h11's strict reading of the head; h11's own framing checks run before ours."""

    __slots__ = ("_key_header", "_max_bytes", "_max_fields")

    def __init__(self, key_header: bytes | None, max_fields: int, max_bytes: int) -> None:
        self._key_header = key_header
        self._max_fields = max_fields
        self._max_bytes = max_bytes

    def parse(self, raw: bytes) -> RequestHead:
        if raw.count(b"\n") != raw.count(b"\r\n"):
            # h11 accepts bare LF line ends; the head is relayed raw, and a replica that
            # splits lines differently would see other requests than fastlb did.
            raise HttpError(400, "malformed request: a line ends in a bare LF")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_bytes + 1)
        conn.receive_data(raw)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = 431 if exc.error_status_hint == 431 else 400
            raise HttpError(status, f"malformed request: {exc}") from None
        if not isinstance(event, h11.Request):
            raise HttpError(400, "malformed request: incomplete head")
        if event.http_version not in (b"1.0", b"1.1"):
            version = event.http_version.decode("latin-1")
            raise HttpError(400, f"malformed request: unsupported HTTP version {version}")
        got = _Collected()
        key_header = self._key_header
        # h11 hands names lower-cased already (it keeps the raw casing separately).
        for name, value in event.headers:
            got.add(name, value, key_header)
        http11 = event.http_version == b"1.1"
        return got.finish(raw, event.method, event.target, http11, self._max_fields)


def make_head_parser(
    kind: str, key_header: bytes | None, max_fields: int, max_bytes: int
) -> HeadParser:
    if kind == "httptools":
        return HttptoolsHeadParser(key_header, max_fields)
    if kind == "h11":
        return H11HeadParser(key_header, max_fields, max_bytes)
    raise ValueError(f"unknown HTTP parser {kind!r}; expected 'httptools' or 'h11'")
