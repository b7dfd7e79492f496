"""The replica's response head: framing, connection reuse, and the head the client gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED, UNTIL_CLOSE
from fastlb.http.response import ResponseReader, _parse_general, parse_response_head

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"


def test_plain_response_passes_unchanged() -> None:
    status, length, keep_alive, out = parse_response_head(OK, False, True, True)
    assert (status, length, keep_alive) == (200, 3, True)
    assert out is None  # relayed as received


def test_plain_keep_alive_stays_as_fastlbs_own_option() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
    assert parse_response_head(raw, False, True, True) == (200, 3, True, None)
    assert parse_response_head(raw, False, True, False) == (200, 3, True, None)  # HTTP/1.0
    closing = parse_response_head(raw, False, False, True)[3]
    assert closing == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"


def test_hop_by_hop_fields_are_dropped() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"
    _, _, keep_alive, out = parse_response_head(raw, False, True, True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert keep_alive


def test_client_that_closes_is_told() -> None:
    out = parse_response_head(OK, False, False, True)[3]
    assert out is not None and out.endswith(b"Connection: close\r\n\r\n")


def test_http10_client_keep_alive_is_confirmed() -> None:
    out = parse_response_head(OK, False, True, False)[3]
    assert out is not None and out.endswith(b"Connection: keep-alive\r\n\r\n")


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
        (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", False, 1, True),
    ],
)
def test_framing(raw: bytes, head_request: bool, length: int, keep: bool) -> None:
    _, got_length, keep_alive, _ = parse_response_head(raw, head_request, True, True)
    assert (got_length, keep_alive) == (length, keep)


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
        # Both framings at once is a smuggling vector (RFC 9112 6.3): llhttp refuses it.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        # A 101 is relayed only as a switch to websocket, the one upgrade fastlb forwards.
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket, h2c\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Content-Length: 3\r\n\r\n",
    ],
)
def test_garbage_is_a_502(raw: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parse_response_head(raw, False, True, True)
    assert info.value.status == 502


def test_a_101_to_websocket_goes_out_with_only_the_switchs_hop_by_hop_fields() -> None:
    raw = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade, X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSec-WebSocket-Accept: abc=\r\n\r\n"
    )
    assert parse_response_head(raw, False, True, True) == (
        101,
        0,
        False,
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\n"
        b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    assert ResponseReader().read(raw + b"\x81\x00", len(raw), False, True, True)[0] == 101


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
    raw = b"\r\n".join([status_line, *fields]) + b"\r\n\r\n"
    try:
        fast = parse_response_head(raw, head_request, keep, http11)
    except HttpError as exc:
        assert exc.status == 502  # llhttp refused it (a duplicate Content-Length, say)
        return
    general = _parse_general(raw, fast[0], head_request, keep, http11)
    assert fast == general


NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 09:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\n"
    b"hello from b1\n"
)


def read(reader: ResponseReader, data: bytes, keep: bool = True, http11: bool = True) -> tuple[int, int, bool, bytes | None]:
    return reader.read(data, data.find(b"\r\n\r\n") + 4, False, keep, http11)


def test_reader_keeps_its_parser_clean_across_responses() -> None:
    reader = ResponseReader()
    for _ in range(5):  # the kept llhttp parser sees one whole response at a time
        assert read(reader, NGINX) == (200, 14, True, None)


@pytest.mark.parametrize(
    "data",
    [
        NGINX[:-3],  # the body goes on in the next read
        NGINX + b"\r\n",  # bytes past the response
        NGINX + NGINX,
        NGINX.replace(b"200 OK", b"204 No Content"),
        NGINX.replace(b"Connection: keep-alive", b"Connection: close"),
        NGINX.replace(b"Content-Length: 14", b"Transfer-Encoding: chunked"),
    ],
)
def test_reader_agrees_with_the_general_reading(data: bytes) -> None:
    reader = ResponseReader()
    end = data.find(b"\r\n\r\n") + 4
    for keep, http11 in ((True, True), (False, True), (True, False)):
        assert reader.read(data, end, False, keep, http11) == parse_response_head(
            data[:end], False, keep, http11
        )
    assert read(reader, NGINX) == (200, 14, True, None)  # and its own parser was not touched


@pytest.mark.parametrize(
    "bad",
    [
        NGINX.replace(b"Server: nginx", b"Bad Name: x"),
        NGINX.replace(b"Content-Length: 14", b"Content-Length: 1_4"),  # int() would take it
        NGINX.replace(b"HTTP/1.1", b"RTSP/1.0"),
    ],
)
def test_reader_refuses_garbage_and_recovers(bad: bytes) -> None:
    reader = ResponseReader()
    with pytest.raises(HttpError) as info:
        read(reader, bad)
    assert info.value.status == 502
    assert read(reader, NGINX) == (200, 14, True, None)


def test_http10_replica_keeps_only_when_it_says_so() -> None:
    reader = ResponseReader()
    assert read(reader, NGINX.replace(b"HTTP/1.1", b"HTTP/1.0")) == (200, 14, True, None)
    plain = NGINX.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Connection: keep-alive\r\n", b"")
    assert read(reader, plain) == (200, 14, False, None)
