"""The request-acceptance policy (fastlb/http/accept.py, /work/coord/policy.md), pure.

Every head runs through BOTH parsers (httptools, h11): the outcome (forwarded with what, or
refused with which status) must be the policy's and the same for both. Byte-by-byte tables
check that the two gates (llhttp or h11, then the policy) agree on every single byte in each
position of a head. The chunked re-encoder is checked with hypothesis: any split of a valid
body forwards the same canonical bytes, and bad framing forwards nothing past its last valid
point.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb.http.accept import check_partial
from fastlb.http.errors import HttpError
from fastlb.http.framing import RequestChunks
from fastlb.http.head import CHUNKED, RequestHead
from fastlb.http.parsers import make_head_parser
from fastlb.http.rewrite import request_head_out

PARSERS = {kind: make_head_parser(kind, None, 100, 16384) for kind in ("httptools", "h11")}


def outcome(raw: bytes) -> dict[str, object]:
    """Each parser's outcome for `raw`: the status it is refused with, or the head's reading."""
    seen: dict[str, object] = {}
    for kind, parser in PARSERS.items():
        try:
            head = parser.parse(raw)
        except HttpError as exc:
            seen[kind] = exc.status
        else:
            seen[kind] = reading(head)
    return seen


def reading(head: RequestHead) -> tuple[object, ...]:
    out = request_head_out(head, b"10.0.0.1", False, b"")
    return (head.method, head.target, head.http11, head.keep_alive, head.length, out)


def one(raw: bytes) -> object:
    """The single outcome both parsers agree on (the test fails if they do not)."""
    seen = outcome(raw)
    assert seen["httptools"] == seen["h11"], f"parsers disagree on {raw!r}: {seen}"
    return seen["h11"]


def req(line: bytes = b"GET / HTTP/1.1", *fields: bytes, host: bytes | None = b"a") -> bytes:
    lines = [line, *([b"Host: " + host] if host is not None else []), *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# (name, head, status); each is refused with that status by both parsers.
REJECTED: list[tuple[str, bytes, int]] = [
    # line ends, RFC 9112 §2.2
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\r\n\r\n", 400),
    ("bare-lf-line", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    ("leading-bare-lf", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare-cr", b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    # request line, RFC 9112 §3
    ("http09-headers", b"GET /\r\nHost: a\r\n\r\n", 400),
    ("double-space", req(b"GET  / HTTP/1.1"), 400),
    ("trailing-space", req(b"GET / HTTP/1.1 "), 400),
    ("method-empty", req(b" / HTTP/1.1"), 400),
    ("method-at", req(b"G@T / HTTP/1.1"), 400),
    ("method-paren", req(b"GE(T / HTTP/1.1"), 400),
    ("connect", req(b"CONNECT a:443 HTTP/1.1", host=b"a:443"), 405),
    ("connect-origin", req(b"CONNECT / HTTP/1.1"), 405),
    ("connect-lower", req(b"connect a:80 HTTP/1.1", host=b"a:80"), 400),
    ("version-1.2", req(b"GET / HTTP/1.2"), 505),
    ("version-2.0", req(b"GET / HTTP/2.0"), 505),
    ("version-0.9", req(b"GET / HTTP/0.9"), 505),
    ("version-lower", req(b"GET / http/1.1"), 400),
    ("version-1.10", req(b"GET / HTTP/1.10"), 400),
    ("target-fragment", req(b"GET /a#frag HTTP/1.1"), 400),
    ("target-backslash", req(b"GET /a\\b HTTP/1.1"), 400),
    ("target-pct-bad", req(b"GET /%zz HTTP/1.1"), 400),
    ("target-pct-short", req(b"GET /%4 HTTP/1.1"), 400),
    ("target-quote", req(b'GET /a"b HTTP/1.1'), 400),
    ("target-brace", req(b"GET /a{b} HTTP/1.1"), 400),
    ("target-no-slash", req(b"GET a HTTP/1.1"), 400),
    ("target-authority-form", req(b"GET a.b:80 HTTP/1.1"), 400),
    ("target-asterisk-get", req(b"GET * HTTP/1.1"), 400),
    ("target-asterisk-query", req(b"OPTIONS *? HTTP/1.1"), 400),
    ("target-userinfo", req(b"GET http://u:p@a/x HTTP/1.1"), 400),
    ("target-userinfo-user", req(b"GET http://u@a/x HTTP/1.1"), 400),
    ("target-ftp", req(b"GET ftp://a/x HTTP/1.1"), 400),
    ("target-no-authority", req(b"GET http:/a/x HTTP/1.1"), 400),
    ("target-empty-host", req(b"GET http:///x HTTP/1.1"), 400),
    ("target-abs-fragment", req(b"GET http://a/x#y HTTP/1.1"), 400),
    ("target-obs-text", req(b"GET /caf\xe9 HTTP/1.1"), 400),
    # fields, RFC 9112 §5, RFC 9110 §5.5
    ("space-before-colon", req(b"GET / HTTP/1.1", b"X-A : b"), 400),
    ("empty-name", req(b"GET / HTTP/1.1", b": b"), 400),
    ("no-colon", req(b"GET / HTTP/1.1", b"X-A"), 400),
    ("obs-fold", req(b"GET / HTTP/1.1", b"X-A: a", b" b"), 400),
    ("obs-fold-tab", req(b"GET / HTTP/1.1", b"X-A: a", b"\tb"), 400),
    ("value-nul", req(b"GET / HTTP/1.1", b"X-A: a\x00b"), 400),
    ("value-del", req(b"GET / HTTP/1.1", b"X-A: a\x7fb"), 400),
    ("value-esc", req(b"GET / HTTP/1.1", b"X-A: a\x1bb"), 400),
    ("fields-431", req(b"GET / HTTP/1.1", *[b"H%d: v" % i for i in range(100)]), 431),
    # Host, RFC 9112 §3.2, RFC 9110 §7.2
    ("host-missing", req(host=None), 400),
    ("host-missing-post", req(b"POST / HTTP/1.1", b"Content-Length: 0", host=None), 400),
    ("host-twice", req(b"GET / HTTP/1.1", b"Host: a"), 400),
    ("host-twice-different", req(b"GET / HTTP/1.1", b"Host: b"), 400),
    ("host-twice-case", req(b"GET / HTTP/1.1", b"hOST: a"), 400),
    ("host-twice-http10", req(b"GET / HTTP/1.0", b"Host: a"), 400),
    ("host-list", req(host=b"a, b"), 400),
    ("host-comma", req(host=b"a,"), 400),
    ("host-space", req(host=b"a b"), 400),
    ("host-slash", req(host=b"a/b"), 400),
    ("host-userinfo", req(host=b"u@a"), 400),
    ("host-port-alpha", req(host=b"a:b"), 400),
    ("host-two-ports", req(host=b"a:80:80"), 400),
    ("host-ipv6-unclosed", req(host=b"[::1"), 400),
    ("host-ipv6-bad", req(host=b"[::g]"), 400),
    ("host-brackets-reg", req(host=b"[xyz]"), 400),
    ("host-port-only", req(host=b":80"), 400),
    ("host-pct-bad", req(host=b"a%zz"), 400),
    ("host-utf8", req(host=b"caf\xc3\xa9"), 400),
    ("host-http10-invalid", req(b"GET / HTTP/1.0", host=b"a b"), 400),
    ("abs-no-host", req(b"GET http://a/x HTTP/1.1", host=None), 400),
    ("abs-host-mismatch", req(b"GET http://a/x HTTP/1.1", host=b"b"), 400),
    ("abs-port-mismatch", req(b"GET http://a:8080/x HTTP/1.1", host=b"a"), 400),
    ("abs-https-port80", req(b"GET https://a/x HTTP/1.1", host=b"a:80"), 400),
    ("abs-empty-host-field", req(b"GET http://a/x HTTP/1.1", host=b""), 400),
    ("abs-two-hosts", req(b"GET http://a/x HTTP/1.1", b"Host: a"), 400),
    # framing, RFC 9112 §6, RFC 9110 §8.6
    ("cl-te", req(b"POST / HTTP/1.1", b"Content-Length: 3", b"Transfer-Encoding: chunked"), 400),
    ("cl-twice-same", req(b"POST / HTTP/1.1", b"Content-Length: 3", b"Content-Length: 3"), 400),
    ("cl-list", req(b"POST / HTTP/1.1", b"Content-Length: 35, 35"), 400),
    ("cl-plus", req(b"POST / HTTP/1.1", b"Content-Length: +5"), 400),
    ("cl-minus", req(b"POST / HTTP/1.1", b"Content-Length: -1"), 400),
    ("cl-hex", req(b"POST / HTTP/1.1", b"Content-Length: 0x5"), 400),
    ("cl-empty", req(b"POST / HTTP/1.1", b"Content-Length:"), 400),
    ("cl-19-digits", req(b"POST / HTTP/1.1", b"Content-Length: " + b"1" * 19), 400),
    ("te-http10", req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"), 400),
    ("te-gzip", req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip"), 400),
    ("te-chunked-gzip", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked, gzip"), 400),
    ("te-chunked-twice", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked, chunked"), 400),
    ("te-empty", req(b"POST / HTTP/1.1", b"Transfer-Encoding:"), 400),
    ("te-gzip-chunked", req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip, chunked"), 501),
    (
        "te-gzip-then-chunked",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
        501,
    ),
    # Expect, RFC 9110 §10.1.1
    ("expect-other", req(b"POST / HTTP/1.1", b"Content-Length: 0", b"Expect: foo"), 417),
    (
        "expect-list",
        req(b"POST / HTTP/1.1", b"Content-Length: 0", b"Expect: 100-continue, foo"),
        417,
    ),
    ("expect-trailing", req(b"POST / HTTP/1.1", b"Expect: 100-continuex"), 417),
]


@pytest.mark.parametrize(("name", "raw", "status"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejected_alike(name: str, raw: bytes, status: int) -> None:
    assert one(raw) == status


# (name, head, method, target, http11, length, forwarded head)
FORWARDED: list[tuple[str, bytes, bytes, bytes, bool, int, bytes]] = [
    ("get", req(), b"GET", b"/", True, 0, req()),
    ("http10-no-host", req(b"GET / HTTP/1.0", host=None), b"GET", b"/", False, 0, b""),
    ("method-lower", req(b"get / HTTP/1.1"), b"get", b"/", True, 0, b""),
    ("method-unknown", req(b"FOO / HTTP/1.1"), b"FOO", b"/", True, 0, b""),
    ("method-tchars", req(b"!#$%&'*+-.^_`|~09azAZ / HTTP/1.1"), b"!#$%&'*+-.^_`|~09azAZ",
     b"/", True, 0, b""),
    ("method-long", req(b"X" * 1000 + b" / HTTP/1.1"), b"X" * 1000, b"/", True, 0, b""),
    ("method-lower-post", req(b"post / HTTP/1.1", b"Content-Length: 5"), b"post", b"/", True,
     5, b""),
    ("options-asterisk", req(b"OPTIONS * HTTP/1.1"), b"OPTIONS", b"*", True, 0, b""),
    ("pct", req(b"GET /a%41?b=%2f HTTP/1.1"), b"GET", b"/a%41?b=%2f", True, 0, b""),
    ("query-chars", req(b"GET /a?b=c&d=/e?f:@!$'()*+,; HTTP/1.1"), b"GET",
     b"/a?b=c&d=/e?f:@!$'()*+,;", True, 0, b""),
    ("abs-form", req(b"GET http://a/x?q=1 HTTP/1.1"), b"GET", b"/x?q=1", True, 0,
     req(b"GET /x?q=1 HTTP/1.1")),
    ("abs-form-case", req(b"GET HTTP://A/x HTTP/1.1"), b"GET", b"/x", True, 0,
     req(b"GET /x HTTP/1.1", host=b"A")),
    ("abs-form-empty-path", req(b"GET http://a?q HTTP/1.1"), b"GET", b"/?q", True, 0,
     req(b"GET /?q HTTP/1.1")),
    ("abs-form-port80", req(b"GET http://a:80/x HTTP/1.1"), b"GET", b"/x", True, 0,
     req(b"GET /x HTTP/1.1", host=b"a:80")),
    ("abs-form-https", req(b"GET https://a/x HTTP/1.1", host=b"a:443"), b"GET", b"/x", True,
     0, req(b"GET /x HTTP/1.1")),
    ("abs-form-ipv6", req(b"GET http://[::1]:8/x HTTP/1.1", host=b"[::1]:8"), b"GET", b"/x",
     True, 0, req(b"GET /x HTTP/1.1", host=b"[::1]:8")),
    ("abs-form-http10", req(b"GET http://a/x HTTP/1.0", host=None), b"GET", b"/x", False, 0,
     req(b"GET /x HTTP/1.0")),
    ("host-port", req(host=b"a:8080"), b"GET", b"/", True, 0, b""),
    ("host-empty-port", req(host=b"a:"), b"GET", b"/", True, 0, b""),
    ("host-ipv6", req(host=b"[::1]:80"), b"GET", b"/", True, 0, b""),
    ("host-ipvfuture", req(host=b"[v1.x:y]"), b"GET", b"/", True, 0, b""),
    ("host-sub-delims", req(host=b"a!$&'()*+;="), b"GET", b"/", True, 0, b""),
    ("host-pct", req(host=b"a%41"), b"GET", b"/", True, 0, b""),
    ("host-ows", req(host=b"  a \t"), b"GET", b"/", True, 0, b""),
    ("host-empty", req(host=b""), b"GET", b"/", True, 0, b""),
    ("host-lower-name", req(b"GET / HTTP/1.1", b"host: a", host=None), b"GET", b"/", True, 0,
     b""),
    ("cl-leading-zeros", req(b"POST / HTTP/1.1", b"Content-Length: 007"), b"POST", b"/", True,
     7, b""),
    ("cl-ows", req(b"POST / HTTP/1.1", b"Content-Length: \t7 "), b"POST", b"/", True, 7, b""),
    ("te-upper", req(b"POST / HTTP/1.1", b"Transfer-Encoding: CHUNKED"), b"POST", b"/", True,
     CHUNKED, b""),
    ("te-ows", req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked \t"), b"POST", b"/", True,
     CHUNKED, b""),
    ("body-on-get", req(b"GET / HTTP/1.1", b"Content-Length: 3"), b"GET", b"/", True, 3, b""),
    ("expect-100", req(b"POST / HTTP/1.1", b"Expect: 100-Continue", b"Content-Length: 1"),
     b"POST", b"/", True, 1, b""),
    ("expect-100-http10", req(b"POST / HTTP/1.0", b"Expect: 100-continue", b"Content-Length: 1"),
     b"POST", b"/", False, 1, req(b"POST / HTTP/1.0", b"Content-Length: 1")),
    ("value-obs-text", req(b"GET / HTTP/1.1", b"X-A: caf\xe9"), b"GET", b"/", True, 0, b""),
    ("value-htab", req(b"GET / HTTP/1.1", b"X-A: a\tb"), b"GET", b"/", True, 0, b""),
]


@pytest.mark.parametrize(
    ("name", "raw", "method", "target", "http11", "length", "out"),
    FORWARDED,
    ids=[f[0] for f in FORWARDED],
)
def test_forwarded_alike(
    name: str, raw: bytes, method: bytes, target: bytes, http11: bool, length: int, out: bytes
) -> None:
    got = one(raw)
    assert isinstance(got, tuple), f"refused with {got}"
    assert got[:3] == (method, target, http11)
    assert got[4] == length
    assert got[5] == (out or raw)


@pytest.mark.parametrize(
    "connection",
    [b"Content-Length", b"close, Content-Length", b"keep-alive, Content-Length",
     b"content-length", b", Content-Length,", b"Transfer-Encoding", b"Host"],
)
def test_connection_never_removes_framing_or_host(connection: bytes) -> None:
    # RFC 9110 §7.6.1: issue 11's smuggling, where the body went on without its length.
    if connection == b"Transfer-Encoding":
        raw = req(b"POST / HTTP/1.1", b"Connection: " + connection, b"Transfer-Encoding: chunked")
    else:
        raw = req(b"POST / HTTP/1.1", b"Connection: " + connection, b"Content-Length: 33")
    got = one(raw)
    assert isinstance(got, tuple)
    out = got[5]
    assert isinstance(out, bytes)
    assert b"Connection" not in out
    assert b"\r\nHost: a\r\n" in out
    framing = b"Transfer-Encoding: chunked" if connection == b"Transfer-Encoding" else (
        b"Content-Length: 33"
    )
    assert framing in out


def test_connection_still_drops_what_it_names() -> None:
    got = one(req(b"GET / HTTP/1.1", b"Connection: X-A, Upgrade", b"X-A: 1", b"Upgrade: h2c"))
    assert isinstance(got, tuple)
    assert got[5] == req()


# Every byte in each position of a head: both gates together decide it alike in both modes.
POSITIONS: dict[str, Callable[[bytes], bytes]] = {
    "method": lambda b: req(b"G" + b + b"T / HTTP/1.1"),
    "target": lambda b: req(b"GET /a" + b + b"b HTTP/1.1"),
    "name": lambda b: req(b"GET / HTTP/1.1", b"X-" + b + b"A: v"),
    "value": lambda b: req(b"GET / HTTP/1.1", b"X-A: a" + b + b"b"),
    "host": lambda b: req(host=b"a" + b + b"b"),
    "version": lambda b: req(b"GET / HTTP/1" + b + b"1"),
    "line-start": lambda b: b + req(),
    "field-start": lambda b: req(b"GET / HTTP/1.1", b + b"X-A: v"),
}


@pytest.mark.parametrize("position", list(POSITIONS))
def test_every_byte_in_every_position(position: str) -> None:
    make = POSITIONS[position]
    differ = {}
    for i in range(256):
        seen = outcome(make(bytes([i])))
        if seen["httptools"] != seen["h11"]:
            differ[i] = seen
    assert not differ, f"{position}: parsers disagree on bytes {differ}"


def test_partial_heads_are_refused_at_once() -> None:
    for data in (b"GET / HTTP/1.1\nHost: a\n", b"GET /\r\n", b"\x16\x03\x01\x00\xa5",
                 b"GET / HTTP/1.1\r\nHost: a\r\n\n", b"GET / HTTP/1.1\rH", b"GET / HTTP/1.2\r\n",
                 b"GET / HTTP/1.1\r\nX A: b\r\n"):
        with pytest.raises(HttpError):
            check_partial(data)
    for data in (b"GET / HTTP/1.1\r", b"GET /a", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b"):
        check_partial(data)


# The chunked request re-encoder (RFC 9112 §7.1).

def canonical(chunks: list[bytes], trailers: list[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return body + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"


def relay_split(data: bytes, cuts: list[int]) -> tuple[bytes, RequestChunks, int]:
    """Feed `data` in pieces; (everything forwarded, the framer, the end in `data`)."""
    framer = RequestChunks()
    bounds = sorted({c for c in cuts if 0 < c < len(data)})
    out = b""
    start = 0
    for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True):
        out += framer.relay(data[a:b])
        start = a
        if framer.done:
            return out, framer, start + framer.end
    return out, framer, -1


_chunk = st.binary(min_size=1, max_size=40)
_ext = st.sampled_from([b"", b";a", b";a=b", b' ; a = "q\\"x"', b";a;b=c", b"\t;x=1"])
_zeros = st.integers(min_value=0, max_value=6)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(_chunk, _ext, _zeros), max_size=5),
    st.lists(st.sampled_from([b"X-T: a", b"Y:", b"Z: caf\xe9\tb"]), max_size=3),
    st.integers(min_value=0, max_value=20),
    st.lists(st.integers(min_value=1, max_value=400), max_size=10),
    st.sampled_from([b"", b"GET / HTTP/1.1\r\n"]),
)
def test_any_split_forwards_the_canonical_body(
    chunks: list[tuple[bytes, bytes, int]],
    trailers: list[bytes],
    last_zeros: int,
    cuts: list[int],
    after: bytes,
) -> None:
    body = b"".join(
        b"0" * z + b"%X" % len(c) + e + b"\r\n" + c + b"\r\n" for c, e, z in chunks
    )
    body += b"0" * (last_zeros + 1) + b"\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    out, framer, end = relay_split(body + after, cuts)
    assert framer.done
    assert end == len(body)
    assert out == canonical([c for c, _, _ in chunks], trailers)


BAD_LINES = [
    b"ffffffffffffffff\r\n", b"8000000000000005\r\n", b"1000000000000000\r\n",
    b"5;a\rxx\r\n", b"5;a=\x00\r\n", b"5 \r\n", b"5\t\r\n", b"5;\r\n", b"5;=b\r\n",
    b"5;a b\r\n", b'5;a="b\r\n', b"5;a=\xe9\r\n", b"zz\r\n", b"\r\n", b"-1\r\n", b"0x5\r\n",
    b"5\n", b"5\r\r\n",
]


@settings(max_examples=200)
@given(
    st.sampled_from(BAD_LINES),
    st.lists(st.binary(min_size=1, max_size=20), max_size=3),
    st.lists(st.integers(min_value=1, max_value=200), max_size=8),
)
def test_bad_lines_forward_nothing_past_the_last_valid_point(
    bad: bytes, good: list[bytes], cuts: list[int]
) -> None:
    prefix = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in good)
    data = prefix + bad + b"hello\r\n0\r\n\r\n"
    framer = RequestChunks()
    bounds = sorted({c for c in cuts if 0 < c < len(data)})
    out = b""
    with pytest.raises(HttpError) as info:
        for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True):
            out += framer.relay(data[a:b])
    assert info.value.status == 400
    assert prefix.startswith(out), "bytes past the last valid chunk were forwarded"


@pytest.mark.parametrize(
    "bad",
    [b"0\r\nX-T : a\r\n\r\n", b"0\r\nX-T: a\x00\r\n\r\n", b"0\r\nX-T: a\rb\r\n\r\n",
     b"0\r\n b\r\n\r\n", b"0\r\nnot a field\r\n\r\n", b"5\r\nhelloX\r\n0\r\n\r\n",
     b"5\r\nhello\n0\r\n\r\n", b"0\r\n" + b"X: " + b"a" * 16400 + b"\r\n\r\n"],
)
def test_bad_trailers_and_data_ends(bad: bytes) -> None:
    with pytest.raises(HttpError):
        RequestChunks().relay(bad)


def test_a_line_cut_off_is_held_back() -> None:
    framer = RequestChunks()
    assert framer.relay(b"5;ext=") == b""
    assert framer.relay(b"1\r\nhel") == b"5\r\nhel"
    assert framer.relay(b"lo\r") == b"lo"
    assert framer.relay(b"\n0\r\nX-T: a") == b"\r\n0\r\n"
    assert framer.relay(b"\r\n\r\nGET") == b"X-T: a\r\n\r\n"
    assert framer.done and framer.end == 4
