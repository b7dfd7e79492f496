"""Hop-by-hop fields dropped and X-Forwarded-* set, on the raw head bytes."""

from __future__ import annotations

from fastlb.http.parsers import make_head_parser
from fastlb.http.rewrite import forwarded_lines, request_head_out

XFF = forwarded_lines("10.1.2.3")
parse = make_head_parser("httptools", None, 100, 16384).parse


def test_fast_path_splices_forwarded_lines() -> None:
    head = parse(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request_head_out(head, b"10.1.2.3", True, XFF) == (
        b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
    )


def test_forwarding_off_relays_as_received() -> None:
    head = parse(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request_head_out(head, b"10.1.2.3", False, XFF) is head.raw


def test_hop_by_hop_and_connection_named_fields_go() -> None:
    raw = (
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Authorization: x\r\n"
        b"X-Keep: 1\r\n\r\n"
    )
    out = request_head_out(parse(raw), b"10.1.2.3", True, XFF)
    assert out == (
        b"GET /a HTTP/1.1\r\nHost: h\r\nX-Keep: 1\r\n"
        b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
    )


def test_existing_forwarded_for_is_extended_and_proto_replaced() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    out = request_head_out(parse(raw), b"10.1.2.3", True, XFF)
    assert out == (
        b"GET / HTTP/1.1\r\nHost: h\r\n"
        b"X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n"
    )


def test_forwarding_off_keeps_client_forwarded_headers() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nConnection: close\r\n\r\n"
    out = request_head_out(parse(raw), b"10.1.2.3", False, XFF)
    assert out == b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n"


def test_a_tls_connection_forwards_https_on_every_path() -> None:
    """X-Forwarded-Proto is the connection's scheme, on the fast path and on the rewriting
    path that extends a client's X-Forwarded-For (which once wrote "http" whatever the
    connection), and a client's own X-Forwarded-Proto never passes."""
    xff = forwarded_lines("10.1.2.3", "https")
    fast = request_head_out(parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), b"10.1.2.3", True, xff)
    assert fast.endswith(b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\r\n")
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: http\r\n\r\n"
    out = request_head_out(parse(raw), b"10.1.2.3", True, xff)
    assert out == (
        b"GET / HTTP/1.1\r\nHost: h\r\n"
        b"X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
