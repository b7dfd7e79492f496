"""The replica's response head: framing, connection reuse, and the head the client gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED, UNTIL_CLOSE
from fastlb.http.response import ResponseHead
from fastlb.http.response import parse_response_head as parse_in_place


def parse_response_head(
    raw: bytes, head_request: bool, client_keep_alive: bool, client_http11: bool
) -> ResponseHead:
    """Parse `raw` as the start of a buffer that goes on with body bytes, as on the wire."""
    buf = raw + b"body bytes that must not be read"
    return parse_in_place(buf, len(raw), head_request, client_keep_alive, client_http11)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"


def test_plain_response_passes_unchanged() -> None:
    rh = parse_response_head(OK, False, True, True)
    assert (rh.status, rh.length, rh.keep_alive) == (200, 3, True)
    assert rh.out is None  # relayed as received


def test_hop_by_hop_fields_are_dropped() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"
    rh = parse_response_head(raw, False, True, True)
    assert rh.out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert rh.keep_alive


def test_client_that_closes_is_told() -> None:
    rh = parse_response_head(OK, False, False, True)
    assert rh.out is not None and rh.out.endswith(b"Connection: close\r\n\r\n")


def test_http10_client_keep_alive_is_confirmed() -> None:
    rh = parse_response_head(OK, False, True, False)
    assert rh.out is not None and rh.out.endswith(b"Connection: keep-alive\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "head_request", "length", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False, CHUNKED, True),
        (b"HTTP/1.1 200 OK\r\n\r\n", False, UNTIL_CLOSE, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", False, 2, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n", False, 2, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", True, 0, True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, 0, True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", False, 0, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", False, 2, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", False, UNTIL_CLOSE, False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", False, CHUNKED, False),
        (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", False, 1, True),
    ],
)
def test_framing(raw: bytes, head_request: bool, length: int, keep: bool) -> None:
    rh = parse_response_head(raw, head_request, True, True)
    assert (rh.length, rh.keep_alive) == (length, keep)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
    ],
)
def test_garbage_is_a_502(raw: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parse_response_head(raw, False, True, True)
    assert info.value.status == 502


_FIELDS = st.sampled_from(
    [
        b"Server: nginx",
        b"Date: Wed, 25 Nov 2026 16:49:50 GMT",
        b"Content-Length: 14",
        b"content-length:7",
        b"Content-Length: 14, 14",
        b"Connection: keep-alive",
        b"Connection: close",
        b"connection: Keep-Alive",
        b"Connection: close, X-Hop",
        b"X-Hop: 1",
        b"Keep-Alive: timeout=5",
        b"Transfer-Encoding: chunked",
        b"Upgrade: h2c",
        b"X-Served-By: b1",
    ]
)


@given(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204 No Content"]),
    st.lists(_FIELDS, max_size=6),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_fast_path_agrees_with_the_general_parser(
    status_line: bytes, fields: list[bytes], head_request: bool, keep: bool, http11: bool
) -> None:
    from fastlb.http.response import _HEAD, _parse_general

    raw = b"\r\n".join([status_line, *fields]) + b"\r\n\r\n"
    buf = raw + b"body"
    match = _HEAD.fullmatch(buf, 0, len(raw))
    assert match is not None  # every generated head is well formed
    try:
        general = _parse_general(buf, len(raw), match, head_request, keep, http11)
    except HttpError as exc:
        with pytest.raises(HttpError) as info:
            parse_in_place(buf, len(raw), head_request, keep, http11)
        assert info.value.status == exc.status
        return
    fast = parse_in_place(buf, len(raw), head_request, keep, http11)
    assert (fast.status, fast.length, fast.keep_alive) == (general.status, general.length, general.keep_alive)
    assert (fast.out or raw) == (general.out or raw)
