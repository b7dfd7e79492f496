"""Routing keys from a request, and the Route snapshot that pairs a table with upstreams."""

from __future__ import annotations

import pytest

from fastlb.build import build_table
from fastlb.config import RoutingConfig
from fastlb.errors import ConfigError
from fastlb.http.parsers import make_head_parser
from fastlb.routing import Route, make_key


def key_for(spec: str, raw: bytes, ip: bytes = b"10.0.0.7") -> bytes:
    header, fn = make_key(spec)
    # Every HTTP/1.1 request needs its one Host (RFC 9112 §3.2): given here, after the line.
    line, _, rest = raw.partition(b"\r\n")
    head = make_head_parser("httptools", header, 100, 16384).parse(line + b"\r\nHost: a\r\n" + rest)
    return fn(head, ip)


def test_request_id_header_is_the_key() -> None:
    assert key_for("request_id", b"GET / HTTP/1.1\r\nX-Request-ID: 424242\r\n\r\n") == b"424242"


def test_missing_request_id_gets_a_random_six_digit_one() -> None:
    keys = {key_for("request_id", b"GET /home HTTP/1.1\r\n\r\n") for _ in range(200)}
    assert all(len(k) == 6 and k.isdigit() for k in keys)
    assert len(keys) > 150  # identical requests get different keys, so they spread


def test_path_key_is_the_whole_target() -> None:
    assert key_for("path", b"GET /neo?start_date=2024-01-01 HTTP/1.1\r\n\r\n") == (
        b"/neo?start_date=2024-01-01"
    )


def test_client_ip_key() -> None:
    assert key_for("client_ip", b"GET / HTTP/1.1\r\n\r\n", b"192.0.2.9") == b"192.0.2.9"


def test_header_key_is_case_insensitive() -> None:
    assert key_for("header:X-User", b"GET / HTTP/1.1\r\nx-user: alice\r\n\r\n") == b"alice"


def test_cookie_key() -> None:
    raw = b"GET / HTTP/1.1\r\nCookie: a=1; session=abc; b=2\r\n\r\n"
    assert key_for("cookie:session", raw) == b"abc"
    missing = key_for("cookie:session", b"GET / HTTP/1.1\r\nCookie: a=1\r\n\r\n")
    assert len(missing) == 6 and missing.isdigit()


@pytest.mark.parametrize("spec", ["", "ip", "header:", "cookie:", "path:x", "request_id:1"])
def test_bad_key_spec(spec: str) -> None:
    with pytest.raises(ConfigError, match="routing key"):
        make_key(spec)


def test_route_pairs_upstreams_with_table_order() -> None:
    table = build_table(RoutingConfig(), [("b", 1), ("a", 1), ("c", 1)])
    route = Route.build(table, {"a": "A", "b": "B", "c": "C"})
    assert route.upstreams == ("A", "B", "C")
    for key in (b"1", b"2", b"3", b"x"):
        assert route.upstreams[table.lookup(key)].lower() == table.names[table.lookup(key)]
