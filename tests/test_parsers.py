"""Both head parsers read the same requests the same way and refuse the same bad ones."""

from __future__ import annotations

import contextlib

import pytest

from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED, body_length, wants_keep_alive
from fastlb.http.parsers import HeadParser, make_head_parser

PARSERS = ["httptools", "h11"]


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest) -> HeadParser:
    return make_head_parser(request.param, b"x-request-id", 100, 16384)


def test_simple_get(parser: HeadParser) -> None:
    raw = b"GET /home?x=1 HTTP/1.1\r\nHost: a\r\nX-Request-ID: 123456\r\n\r\n"
    head = parser.parse(raw)
    assert (head.method, head.target, head.path) == (b"GET", b"/home?x=1", b"/home")
    assert head.http11 and head.keep_alive and head.length == 0
    assert not head.rewrite and head.key_value == b"123456"
    assert head.raw is raw


def test_http10_closes_unless_asked(parser: HeadParser) -> None:
    assert not parser.parse(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    head = parser.parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert head.keep_alive and not head.http11 and head.rewrite


def test_bodies(parser: HeadParser) -> None:
    assert parser.parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").length == 5
    chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert parser.parse(chunked).length == CHUNKED


def test_connection_close_and_hop_headers(parser: HeadParser) -> None:
    head = parser.parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert not head.keep_alive and head.rewrite


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 35, 35\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ],
)
def test_refused(parser: HeadParser, raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parser.parse(raw)
    assert info.value.status == status


def test_unknown_parser_kind() -> None:
    with pytest.raises(ValueError, match="h11"):
        make_head_parser("picohttp", None, 100, 1000)


@pytest.mark.parametrize(
    ("cl", "te", "http11", "expected"),
    [
        ([], [], True, 0),
        ([b"10"], [], True, 10),
        ([b"010"], [], True, 10),
        ([b" 10\t"], [], True, 10),
        ([], [b"Chunked"], True, CHUNKED),
    ],
)
def test_body_length_rules(cl: list[bytes], te: list[bytes], http11: bool, expected: int) -> None:
    assert body_length(cl, te, http11) == expected


@pytest.mark.parametrize(
    ("cl", "te", "http11"),
    [
        ([b"10"], [b"chunked"], True),
        ([b"10", b"11"], [], True),
        ([b"1e3"], [], True),
        ([b""], [], True),
        ([], [b"chunked"], False),
        ([], [b"chunked, chunked"], True),
        ([], [b""], True),
        ([b"10", b"10"], [], True),  # RFC 9110 §8.6 allows refusing even identical ones
        ([b"10, 10"], [], True),
        ([b"+5"], [], True),
        ([b"1" * 19], [], True),
    ],
)
def test_body_length_refusals(cl: list[bytes], te: list[bytes], http11: bool) -> None:
    with pytest.raises(HttpError) as info:
        body_length(cl, te, http11)
    assert info.value.status == 400


@pytest.mark.parametrize("te", [[b"gzip, chunked"], [b"gzip", b"chunked"]])
def test_codings_before_chunked_are_not_implemented(te: list[bytes]) -> None:
    with pytest.raises(HttpError) as info:  # RFC 9112 §6.1
        body_length([], te, True)
    assert info.value.status == 501


def test_keep_alive_rules() -> None:
    assert wants_keep_alive([], True)
    assert not wants_keep_alive([b"Close"], True)
    assert not wants_keep_alive([], False)
    assert wants_keep_alive([b"Keep-Alive"], False)


@pytest.mark.parametrize(
    "first",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",  # llhttp now awaits a body
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",  # not kept alive: llhttp would refuse more data
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\n\r\n",  # an error leaves llhttp in its error state
        b"GET / HTTP/2.0\r\n\r\n",
    ],
)
def test_no_state_reaches_the_next_request(parser: HeadParser, first: bytes) -> None:
    # The httptools parser keeps one llhttp parser for the heads of every connection.
    with contextlib.suppress(HttpError):  # some of them are refused: that is the point
        parser.parse(first)
    for i in range(3):
        head = parser.parse(b"GET /next/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        assert (head.method, head.target, head.length) == (b"GET", b"/next/%d" % i, 0)


def test_request_line_with_extra_spaces(parser: HeadParser) -> None:
    # RFC 9112 §3: single spaces; the policy refuses rather than parse leniently (llhttp
    # alone accepts this line).
    with pytest.raises(HttpError) as info:
        parser.parse(b"GET  /a  HTTP/1.1\r\nHost: a\r\n\r\n")
    assert info.value.status == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"])
def test_only_http_1_0_and_1_1(parser: HeadParser, version: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parser.parse(b"GET / " + version + b"\r\nHost: a\r\n\r\n")
    assert info.value.status == 505  # RFC 9110 §15.6.6


def test_folded_field_is_refused(parser: HeadParser) -> None:
    with pytest.raises(HttpError) as info:
        parser.parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n")
    assert info.value.status == 400


def test_fields_are_read_in_any_case(parser: HeadParser) -> None:
    head = parser.parse(
        b"POST / HTTP/1.1\r\nhost: a\r\nCONTENT-LENGTH: 7\r\nx-REQUEST-id:  abc \r\n\r\n"
    )
    assert (head.length, head.key_value, head.rewrite) == (7, b"abc", False)
    head = parser.parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
    assert head.rewrite  # extended, not trusted


def test_a_field_value_naming_a_field_is_not_that_field(parser: HeadParser) -> None:
    head = parser.parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Note: Content-Length: 5\r\n\r\n")
    assert (head.length, head.rewrite) == (0, False)
