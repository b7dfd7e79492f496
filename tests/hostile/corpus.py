"""Hostile HTTP/1.1 requests, each with the outcome fastlb's acceptance policy gives it.

Why a corpus: request smuggling lives in the gaps between two parsers' readings of the same
bytes. Each case here is raw bytes (sometimes in several segments, to cross read boundaries)
sent on a fresh client connection to a proxy in front of tests/recorder.py, with:

- `expect.forwarded`: the requests the replica must frame, in order (method, target, Host,
  body, fields that must be absent or present); empty for a case to reject;
- `expect.statuses`: the final statuses the client must receive, in order (1xx not counted);
- `expect.close`: the connection must be closed after the last answer (every reject);
- `source`: where the case comes from (RFC 9112/9110 section, desync research, a CVE).

The outcomes follow /work/coord/policy.md (fastlb issue 11) exactly: reject with the status
it names, forward (possibly normalised) otherwise. Classes group the cases for the report.

Sources cited (short names used in `source`):
- RFC 9112 (HTTP/1.1) and RFC 9110 (HTTP semantics), by section.
- KETTLE19: PortSwigger, J. Kettle, "HTTP Desync Attacks: Request Smuggling Reborn" (2019):
  CL.TE, TE.CL and its Transfer-Encoding obfuscations.
- KETTLE22: PortSwigger, J. Kettle, "Browser-Powered Desync Attacks" (2022): CL.0, pause.
- KETTLE25: PortSwigger, J. Kettle, "HTTP/1.1 Must Die: The Desync Endgame" (2025): 0.CL,
  Expect-based desyncs, hidden (space-prefixed) headers.
- GARDEN: B. Kallus et al., "The HTTP Garden" differential fuzzing findings (2024).
- FUNKY: J. B. Weikop, "Funky chunks: abusing ambiguous chunk line terminators" (2025).
- H2C: J. Miller (Bishop Fox), "h2c Smuggling: Request Smuggling Via HTTP/2 Cleartext" (2020).
- CVEs: llhttp/Node.js CVE-2022-32213 (TE parsing), CVE-2022-32214 (bare LF),
  CVE-2022-32215 (multi-line Transfer-Encoding), CVE-2022-35256 (field not ended by CRLF),
  CVE-2023-30589 (bare CR), CVE-2024-27982 (space before Content-Length); h11
  CVE-2025-43859 (chunk data terminator); gunicorn CVE-2024-1135 and CVE-2024-6827
  (Transfer-Encoding validation); HAProxy CVE-2019-18277 (\\x0b before chunked),
  CVE-2021-40346 (header name length overflow), CVE-2023-25725 (empty field name),
  CVE-2023-40225 (empty Content-Length forwarded), CVE-2023-45539 (# in the path); nginx
  CVE-2013-2028 (chunk size overflow).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Where policy.md leaves room, the reading this corpus takes (so a disagreement is visible):
JUDGEMENT_CALLS: tuple[str, ...] = (
    "cl-19-digits: `Content-Length: 0000000000000000005` (19 digits, leading zeros) -> 400: "
    "'at most 18 digits' read literally (the recorder itself accepts up to 18 significant)",
    "absolute-form with an empty path (`http://a`, `http://a?q`) is forwarded as `/`, `/?q` "
    "(RFC 9112 §3.2.1); the forwarded Host is compared case-insensitively, a default port "
    "(:80/:443) or an empty port ignored",
    "status alternatives accepted: target-20k 431 or 414; h2-preface (`PRI * HTTP/2.0`) 505 "
    "or 400; `CONNECT /` 405 or 400; cl-te-gzip 400 or 501",
    "cut-off input: 408 or 400 (or a close without answer); a stalled or cut-off body may also "
    "get 504 (backend_timeout); the replica may see the start of that body, never a framed request",
    "a chunked-body error after a valid head: the head and valid chunks may have reached the "
    "replica (an 'eof' line in its log), never the invalid line; the answer is 400 and a close",
    "HTTP/1.0 without keep-alive, and `Connection: close`, must be closed after the answer; a "
    "request pipelined behind `Connection: close` is not forwarded (RFC 9112 §9.6)",
    "`Transfer-Encoding: identity` and `chunked;` -> 400 (final coding not exactly chunked); "
    "`identity, chunked`, `gzip, chunked` -> 501",
    "Connection itself, and the fields it names, must not reach the replica (checked in the "
    "h2c and keep-alive cases), except a WebSocket upgrade's `Connection: upgrade` and "
    "`Upgrade: websocket` (issue 13: the one upgrade forwarded); `Expect: 100-continue` must "
    "reach it (HTTP/1.1)",
    "Host: pct-encoded and sub-delims reg-names (`a%41`, `a!$&'()*+;=`) and `a:` are "
    "forwarded; `[xyz]` (not an IP literal) -> 400",
    "`//a/x?` is an origin-form path: forwarded as is; `OPTIONS *?` and `POST *` -> 400",
    "max_header_fields counts Host: 101 fields -> 431, 90 forwarded",
    "a bare LF line before the request line (`\\n` + request) -> 400 (bare LF in the head)",
    "a trailer section of 17,000 bytes -> 400 (trailers at most 16 KiB)",
)

KETTLE19 = "PortSwigger Kettle 2019 (HTTP Desync Attacks)"
KETTLE22 = "PortSwigger Kettle 2022 (Browser-Powered Desync Attacks)"
KETTLE25 = "PortSwigger Kettle 2025 (HTTP/1.1 Must Die)"
GARDEN = "HTTP Garden (Kallus et al. 2024)"
FUNKY = "Funky chunks (Weikop 2025)"
H2C = "h2c smuggling (Bishop Fox 2020)"


@dataclass(frozen=True, slots=True)
class Seen:
    """What the replica must frame for one forwarded request."""

    method: str = "GET"
    target: str = "/"
    # The one Host value the replica must see (compared case-insensitively, a default port
    # or an empty port ignored); None: not checked (but never more than one Host field).
    host: str | None = "a"
    body: bytes = b""
    absent: tuple[str, ...] = ()  # field names (lower case) that must not reach the replica
    present: tuple[tuple[str, str], ...] = ()  # (name, value) pairs that must reach it


@dataclass(frozen=True, slots=True)
class Expect:
    forwarded: tuple[Seen, ...]
    statuses: tuple[int, ...]
    close: bool = False  # the connection must be closed after the last answer
    last_alt: frozenset[int] = frozenset()  # other statuses accepted for the last answer
    no_response_ok: bool = False  # a close without any answer is accepted (incomplete input)
    # The replica may see the start of a message that is then cut off (an "eof ..." error in
    # its log), never a framed request nor invalid bytes: a body streamed until its error.
    partial_ok: bool = False

    @property
    def rejects(self) -> bool:
        return not self.forwarded


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    cls: str
    data: tuple[bytes, ...]  # segments, sent one after the other with a short pause
    expect: Expect
    source: str
    half_close: bool = False  # shut down the sending side after the last segment
    slow: bool = False  # waits for a timeout: run concurrently with the other slow cases

    @property
    def raw(self) -> bytes:
        return b"".join(self.data)


@dataclass
class _Builder:
    cases: list[Case] = field(default_factory=list)
    cls: str = ""

    def add(
        self,
        name: str,
        data: bytes | Iterable[bytes],
        expect: Expect,
        source: str,
        *,
        half_close: bool = False,
        slow: bool = False,
    ) -> None:
        segments = (data,) if isinstance(data, bytes) else tuple(data)
        self.cases.append(Case(name, self.cls, segments, expect, source, half_close, slow))


def req(
    line: str = "GET / HTTP/1.1", *fields: str, host: str | None = "a", body: bytes = b""
) -> bytes:
    """A request with CRLF line ends; `Host: a` first unless host is None."""
    lines = [line, *([f"Host: {host}"] if host is not None else []), *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def post(body: bytes, *fields: str, line: str = "POST / HTTP/1.1") -> bytes:
    return req(line, f"Content-Length: {len(body)}", *fields, body=body)


def chunked(raw_body: bytes, *fields: str, line: str = "POST / HTTP/1.1") -> bytes:
    return req(line, "Transfer-Encoding: chunked", *fields, body=raw_body)


def fwd(*seen: Seen, close: bool = False) -> Expect:
    return Expect(tuple(seen) or (Seen(),), (200,) * max(1, len(seen)), close)


def rej(status: int = 400, *alt: int, partial: bool = False) -> Expect:
    return Expect((), (status,), True, frozenset(alt), partial_ok=partial)


def pipe(seen: Iterable[Seen], statuses: Iterable[int], *, close: bool = False) -> Expect:
    return Expect(tuple(seen), tuple(statuses), close)


def incomplete(*alt: int, partial: bool = False) -> Expect:
    """Cut-off input: a 408 (or one of alt), or a close without answer; nothing framed."""
    return Expect((), (408,), True, frozenset((400, *alt)), True, partial)


GET = Seen()
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"  # 36 bytes
HIDDEN = b"GET /hidden HTTP/1.1\r\nX: y"  # a request head left open for the next one


def _baseline(b: _Builder) -> None:
    b.cls = "baseline"
    b.add("get", req(), fwd(), "RFC 9112 §3")
    b.add(
        "get-query",
        req("GET /x?a=1&b=2 HTTP/1.1"),
        fwd(Seen(target="/x?a=1&b=2")),
        "RFC 9112 §3.2.1",
    )
    b.add("post-cl", post(b"hello"), fwd(Seen("POST", body=b"hello")), "RFC 9112 §6.2")
    b.add("post-cl-zero", post(b""), fwd(Seen("POST")), "RFC 9112 §6.2")
    b.add(
        "post-chunked",
        chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        fwd(Seen("POST", body=b"hello world")),
        "RFC 9112 §7.1",
    )
    b.add(
        "http10-no-host",
        req("GET / HTTP/1.0", host=None),
        fwd(Seen(host=None), close=True),
        "RFC 9112 §3.2",
    )
    b.add("http10-host", req("GET / HTTP/1.0"), fwd(close=True), "RFC 9112 §9.3")
    b.add("leading-crlf", b"\r\n" + req(), fwd(), "RFC 9112 §2.2")
    b.add("leading-2crlf", b"\r\n\r\n" + req(), fwd(), "RFC 9112 §2.2")
    b.add(
        "options-asterisk", req("OPTIONS * HTTP/1.1"), fwd(Seen("OPTIONS", "*")), "RFC 9112 §3.2.4"
    )
    b.add(
        "header-htab-value",
        req("GET / HTTP/1.1", "X-A: a\tb"),
        fwd(Seen(present=(("x-a", "a\tb"),))),
        "RFC 9110 §5.5",
    )
    b.add(
        "header-obs-text",
        req("GET / HTTP/1.1", "X-A: caf\xe9"),
        fwd(Seen(present=(("x-a", "caf\xe9"),))),
        "RFC 9110 §5.5 (obs-text)",
    )
    b.add(
        "header-empty-value",
        req("GET / HTTP/1.1", "X-A:"),
        fwd(Seen(present=(("x-a", ""),))),
        "RFC 9110 §5.5",
    )
    b.add(
        "header-colon-in-value",
        req("GET / HTTP/1.1", "X-A::b:"),
        fwd(Seen(present=(("x-a", ":b:"),))),
        "RFC 9110 §5.5",
    )
    b.add(
        "header-ows",
        req("GET / HTTP/1.1", "X-A: \t b \t"),
        fwd(Seen(present=(("x-a", "b"),))),
        "RFC 9112 §5.1",
    )
    b.add(
        "header-no-ows",
        req("GET / HTTP/1.1", "X-A:b"),
        fwd(Seen(present=(("x-a", "b"),))),
        "RFC 9112 §5.1",
    )
    b.add(
        "header-all-tchar-name",
        req("GET / HTTP/1.1", "!#$%&'*+-.^_`|~09azAZ: v"),
        fwd(),
        "RFC 9110 §5.6.2",
    )
    b.add(
        "split-head", (b"GET / HT", b"TP/1.1\r\nHo", b"st: a\r\n\r", b"\n"), fwd(), "RFC 9112 §2.1"
    )
    b.add(
        "split-body",
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234", b"56789"),
        fwd(Seen("POST", body=b"0123456789")),
        "RFC 9112 §6.2",
    )
    b.add(
        "split-chunk-line",
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5",
            b"\r\nhel",
            b"lo\r\n0\r",
            b"\n\r\n",
        ),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9112 §7.1",
    )


def _cl_te(b: _Builder) -> None:
    b.cls = "CL.TE"
    smuggle = b"0\r\n\r\n" + SMUGGLED
    b.add(
        "cl-te-classic",
        req(
            "POST / HTTP/1.1",
            f"Content-Length: {len(smuggle)}",
            "Transfer-Encoding: chunked",
            body=smuggle,
        ),
        rej(),
        KETTLE19 + " CL.TE; RFC 9112 §6.3",
    )
    b.add(
        "te-cl-classic",
        req(
            "POST / HTTP/1.1",
            "Content-Length: 4",
            "Transfer-Encoding: chunked",
            body=b"5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
        ),
        rej(),
        KETTLE19 + " TE.CL; RFC 9112 §6.3",
    )
    b.add(
        "te-before-cl",
        req(
            "POST / HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 5", body=b"0\r\n\r\n"
        ),
        rej(),
        "RFC 9112 §6.3 rule 3",
    )
    b.add(
        "cl0-te",
        req(
            "POST / HTTP/1.1", "Content-Length: 0", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"
        ),
        rej(),
        "RFC 9112 §6.3 rule 3",
    )
    b.add(
        "cl-te-gzip",
        req(
            "POST / HTTP/1.1",
            "Content-Length: 5",
            "Transfer-Encoding: gzip, chunked",
            body=b"0\r\n\r\n",
        ),
        rej(400, 501),
        "RFC 9112 §6.3 rule 3",
    )
    b.add(
        "cl-te-obfuscated",
        req(
            "POST / HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: xchunked", body=b"0\r\n\r\n"
        ),
        rej(),
        KETTLE19 + " TE.TE",
    )
    b.add(
        "cl-te-get",
        req(
            "GET / HTTP/1.1",
            f"Content-Length: {len(smuggle)}",
            "Transfer-Encoding: chunked",
            body=smuggle,
        ),
        rej(),
        KETTLE19 + " CL.TE",
    )
    b.add(
        "cl-te-lowercase",
        req(
            "POST / HTTP/1.1", "content-length: 5", "transfer-encoding: chunked", body=b"0\r\n\r\n"
        ),
        rej(),
        "RFC 9112 §6.3 rule 3",
    )
    b.add(
        "cl-te-http10",
        req(
            "POST / HTTP/1.0", "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"
        ),
        rej(),
        "RFC 9112 §6.1, §6.3",
    )
    b.add(
        "te-http10",
        req("POST / HTTP/1.0", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        rej(),
        "RFC 9112 §6.1",
    )
    b.add(
        "te-http10-cl-smuggle",
        req(
            "POST / HTTP/1.0",
            "Transfer-Encoding: chunked",
            body=b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        ),
        rej(),
        "RFC 9112 §6.1 (a 1.0 recipient reads no chunked)",
    )
    b.add(
        "cl-te-split",
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 41\r\n",
            b"Transfer-Encoding: chunked\r\n\r\n",
            smuggle,
        ),
        rej(),
        KETTLE19 + " CL.TE",
    )
    b.add(
        "cl-te-far-apart",
        req(
            "POST / HTTP/1.1",
            "Content-Length: 5",
            *[f"X-{i}: {i}" for i in range(20)],
            "Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
        ),
        rej(),
        "RFC 9112 §6.3 rule 3",
    )
    b.add(
        "te-cl-dup-te",
        req(
            "POST / HTTP/1.1",
            "Transfer-Encoding: chunked",
            "Content-Length: 3",
            "Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
        ),
        rej(),
        KETTLE19 + " TE.CL",
    )


def _te_te(b: _Builder) -> None:
    b.cls = "TE.TE"
    body = b"0\r\n\r\n"
    cases400 = {
        "te-xchunked": "Transfer-Encoding: xchunked",
        "te-chunked-x": "Transfer-Encoding: chunkedx",
        "te-chunk": "Transfer-Encoding: chunk",
        "te-quoted": 'Transfer-Encoding: "chunked"',
        "te-chunked-twice": "Transfer-Encoding: chunked, chunked",
        "te-chunked-gzip": "Transfer-Encoding: chunked, gzip",
        "te-identity": "Transfer-Encoding: identity",
        "te-empty": "Transfer-Encoding:",
        "te-empty-element": "Transfer-Encoding: , chunked",
        "te-x": "Transfer-Encoding: x",
        "te-chunked-semicolon": "Transfer-Encoding: chunked;",
        "te-obs-text": "Transfer-Encoding: ch\xe9unked",
        "te-chunked-nbsp": "Transfer-Encoding: chunked\xa0",
        "te-chunked-dot": "Transfer-Encoding: chunked.",
        "te-underscore-value": "Transfer-Encoding: chun_ked",
    }
    for name, line in cases400.items():
        b.add(
            name,
            req("POST / HTTP/1.1", line, body=body),
            rej(),
            KETTLE19 + " TE.TE; RFC 9112 §6.3 rule 4",
        )
    b.add(
        "te-two-fields",
        req(
            "POST / HTTP/1.1", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked", body=body
        ),
        rej(),
        "RFC 9112 §6.3 rule 4 (chunked twice); CVE-2024-1135",
    )
    b.add(
        "te-two-fields-x",
        req("POST / HTTP/1.1", "Transfer-Encoding: chunked", "Transfer-Encoding: x", body=body),
        rej(),
        KETTLE19 + " TE.TE",
    )
    b.add(
        "te-empty-field-then-chunked",
        req("POST / HTTP/1.1", "TRANSFER-ENCODING: ", "Transfer-Encoding:chunked", body=body),
        rej(),
        "fastlb's fuzzer (a replica reading the empty field line as no body); RFC 9110 §5.6.1",
    )
    b.add(
        "te-two-fields-identity",
        req(
            "POST / HTTP/1.1",
            "Transfer-Encoding: chunked",
            "Transfer-encoding: identity",
            body=body,
        ),
        rej(),
        "CVE-2024-6827; RFC 9112 §6.3 rule 4",
    )
    b.add(
        "te-gzip-chunked",
        req("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked", body=body),
        rej(501),
        "RFC 9112 §6.1",
    )
    b.add(
        "te-deflate-chunked",
        req("POST / HTTP/1.1", "Transfer-Encoding: deflate, chunked", body=body),
        rej(501),
        "RFC 9112 §6.1",
    )
    b.add(
        "te-identity-chunked",
        req("POST / HTTP/1.1", "Transfer-Encoding: identity, chunked", body=body),
        rej(501),
        "RFC 9112 §6.1",
    )
    b.add(
        "te-gzip-then-chunked-fields",
        req("POST / HTTP/1.1", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked", body=body),
        rej(501),
        "RFC 9112 §6.1; RFC 9110 §5.3 (fields combine)",
    )
    b.add(
        "te-space-before-colon",
        req("POST / HTTP/1.1", "Transfer-Encoding : chunked", body=body),
        rej(),
        KETTLE19 + "; RFC 9112 §5.1",
    )
    b.add(
        "te-tab-before-colon",
        req("POST / HTTP/1.1", "Transfer-Encoding\t: chunked", body=body),
        rej(),
        KETTLE19 + "; RFC 9112 §5.1",
    )
    b.add(
        "te-vt-value",
        req("POST / HTTP/1.1", "Transfer-Encoding: \x0bchunked", body=body),
        rej(),
        "CVE-2019-18277",
    )
    b.add(
        "te-ff-value",
        req("POST / HTTP/1.1", "Transfer-Encoding: \x0cchunked", body=body),
        rej(),
        "RFC 9110 §5.5",
    )
    b.add(
        "te-nul-value",
        req("POST / HTTP/1.1", "Transfer-Encoding: chunked\x00", body=body),
        rej(),
        "RFC 9110 §5.5",
    )
    b.add(
        "te-cr-value",
        req("POST / HTTP/1.1", "Transfer-Encoding: chunked\rX: y", body=body),
        rej(),
        "CVE-2023-30589; RFC 9112 §2.2",
    )
    b.add(
        "te-lf-name",
        req("POST / HTTP/1.1", "Transfer-Encoding\n: chunked", body=body),
        rej(),
        KETTLE19 + " TE.TE",
    )
    b.add(
        "te-obs-fold",
        req("POST / HTTP/1.1", "Transfer-Encoding:", " chunked", body=body),
        rej(),
        "CVE-2022-32215; RFC 9112 §5.2",
    )
    b.add(
        "te-obs-fold-tab",
        req("POST / HTTP/1.1", "Transfer-Encoding: x", "\tchunked", body=body),
        rej(),
        "CVE-2022-32215; RFC 9112 §5.2",
    )
    b.add(
        "te-leading-space-line",
        req("POST / HTTP/1.1", " Transfer-Encoding: chunked", body=body),
        rej(),
        KETTLE19 + "; RFC 9112 §2.2",
    )
    b.add(
        "te-hidden-after-lf",
        req("POST / HTTP/1.1", "X: X\nTransfer-Encoding: chunked", body=body),
        rej(),
        KETTLE19 + "; CVE-2022-32214",
    )
    b.add(
        "te-nul-name",
        req("POST / HTTP/1.1", "Transfer-Encoding\x00: chunked", body=body),
        rej(),
        "RFC 9112 §5.1",
    )
    b.add(
        "te-name-obs-text",
        req("POST / HTTP/1.1", "Transfer-Encod\xefng: chunked", body=body),
        rej(),
        "RFC 9112 §5.1",
    )
    # Valid spellings: forwarded, and framed as chunked (RFC 9110 §5.1: names are case-insensitive).
    ok = b"5\r\nhello\r\n0\r\n\r\n"
    for name, line in {
        "te-upper": "Transfer-Encoding: CHUNKED",
        "te-mixed-case": "Transfer-Encoding: cHuNkEd",
        "te-name-lower": "transfer-encoding: chunked",
        "te-name-upper": "TRANSFER-ENCODING: chunked",
        "te-htab-ows": "Transfer-Encoding:\tchunked",
        "te-trailing-ows": "Transfer-Encoding: chunked \t",
        "te-no-ows": "Transfer-Encoding:chunked",
    }.items():
        b.add(
            name,
            req("POST / HTTP/1.1", line, body=ok),
            fwd(Seen("POST", body=b"hello")),
            "RFC 9112 §6.1, §5.1",
        )
    b.add(
        "te-underscore-name",
        req("POST / HTTP/1.1", "Transfer_Encoding: chunked", "Content-Length: 5", body=b"hello"),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9110 §5.6.2 (_ is a tchar: another field)",
    )


def _content_length(b: _Builder) -> None:
    b.cls = "Content-Length"
    bad = {
        "cl-plus": "+5",
        "cl-minus": "-1",
        "cl-suffix": "5x",
        "cl-empty": "",
        "cl-hex": "0x5",
        "cl-space-inside": "5 5",
        "cl-list": "5,5",
        "cl-list-ows": "5, 5",
        "cl-list-35": "35, 35",
        "cl-list-different": "5, 6",
        "cl-exponent": "1e1",
        "cl-decimal": "5.0",
        "cl-quoted": '"5"',
        "cl-19-digits": "0000000000000000005",
        "cl-overflow": "18446744073709551621",
        "cl-fullwidth": "\xef\xbc\x95",
        "cl-nbsp": "5\xa0",
        "cl-comma-trailing": "5,",
        "cl-comma-leading": ",5",
    }
    for name, value in bad.items():
        src = "CVE-2023-40225" if name == "cl-empty" else "RFC 9110 §8.6; " + GARDEN
        b.add(name, req("POST / HTTP/1.1", f"Content-Length: {value}", body=b"hello"), rej(), src)
    b.add(
        "cl-vt",
        req("POST / HTTP/1.1", "Content-Length: \x0b5", body=b"hello"),
        rej(),
        "RFC 9110 §5.5",
    )
    b.add(
        "cl-nul",
        req("POST / HTTP/1.1", "Content-Length: 5\x00", body=b"hello"),
        rej(),
        "RFC 9110 §5.5",
    )
    b.add(
        "cl-dup-same",
        req("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 5", body=b"hello"),
        rej(),
        "RFC 9110 §8.6",
    )
    b.add(
        "cl-dup-different",
        req("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 0", body=b"hello"),
        rej(),
        "RFC 9112 §6.3 rule 5",
    )
    b.add(
        "cl-dup-case",
        req("POST / HTTP/1.1", "Content-Length: 5", "content-length: 5", body=b"hello"),
        rej(),
        "RFC 9110 §8.6",
    )
    b.add(
        "cl-space-before-colon",
        req("POST / HTTP/1.1", "Content-Length : 5", body=b"hello"),
        rej(),
        "RFC 9112 §5.1",
    )
    b.add(
        "cl-leading-space-line",
        req("POST / HTTP/1.1", " Content-Length: 5", body=b"hello"),
        rej(),
        "CVE-2024-27982; " + KETTLE25,
    )
    b.add(
        "cl-obs-fold",
        req("POST / HTTP/1.1", "Content-Length:", " 5", body=b"hello"),
        rej(),
        "RFC 9112 §5.2",
    )
    b.add(
        "cl-name-overflow",
        req(
            "POST / HTTP/1.1",
            "Content-Length" + "a" * 256 + ": 0",
            "Content-Length: 5",
            body=b"hello",
        ),
        fwd(Seen("POST", body=b"hello")),
        "CVE-2021-40346 (a long name is another field)",
    )
    b.add(
        "cl-leading-zeros",
        req("POST / HTTP/1.1", "Content-Length: 0005", body=b"hello"),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9110 §8.6",
    )
    b.add(
        "cl-ows",
        req("POST / HTTP/1.1", "Content-Length: \t5 \t", body=b"hello"),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9112 §5.1",
    )
    b.add(
        "cl-18-digits-zero",
        req("POST / HTTP/1.1", "Content-Length: 000000000000000000", body=b""),
        fwd(Seen("POST")),
        "RFC 9110 §8.6",
    )
    b.add(
        "cl-short-pipelined",
        req("POST / HTTP/1.1", "Content-Length: 3", body=b"abcGET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        pipe([Seen("POST", body=b"abc"), Seen(target="/x")], [200, 200]),
        "RFC 9112 §6.3 (the bytes past Content-Length are the next request)",
    )


def _chunks(b: _Builder) -> None:
    b.cls = "chunked"

    def bad(name: str, body: bytes, source: str, status: int = 400) -> None:
        b.add(name, chunked(body), rej(status, partial=True), source)

    def good(name: str, body: bytes, decoded: bytes, source: str, *fields: str) -> None:
        b.add(name, chunked(body, *fields), fwd(Seen("POST", body=decoded)), source)

    bad("chunk-size-16f", b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n", GARDEN + "; CVE-2013-2028")
    bad("chunk-size-wrap", b"8000000000000005\r\nhello\r\n0\r\n\r\n", GARDEN + " (size wraps to 5)")
    bad("chunk-size-wrap-17", b"10000000000000005\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad(
        "chunk-size-16-digits",
        b"1000000000000000\r\nhello\r\n0\r\n\r\n",
        "RFC 9112 §7.1 (15 digits, policy)",
    )
    bad("chunk-size-neg", b"-5\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-size-plus", b"+5\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-size-0x", b"0x5\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-size-g", b"5g\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1")
    bad("chunk-size-leading-sp", b" 5\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-size-empty", b"\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1")
    bad("chunk-size-trailing-sp", b"5 \r\nhello\r\n0\r\n\r\n", FUNKY)
    bad("chunk-size-trailing-tab", b"5\t\r\nhello\r\n0\r\n\r\n", FUNKY)
    bad("chunk-size-trailing-vt", b"5\x0b\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-size-nul", b"5\x00\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-ext-empty", b"5;\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1")
    bad("chunk-ext-bare-cr", b"5;a\rxx\r\nhello\r\n0\r\n\r\n", FUNKY + "; CVE-2023-30589")
    bad("chunk-ext-nul", b"5;a=\x00\r\nhello\r\n0\r\n\r\n", GARDEN)
    bad("chunk-ext-ctl", b"5;a=\x01\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1")
    bad("chunk-ext-no-name", b"5;=b\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1")
    bad("chunk-ext-space-in-name", b"5;a b\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1")
    bad("chunk-ext-space-in-value", b"5;a=b c\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1")
    bad("chunk-ext-unterminated-quote", b'5;a="b\r\nhello\r\n0\r\n\r\n', "RFC 9112 §7.1.1")
    bad("chunk-ext-obs-text-token", b"5;a=\xe9\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1")
    bad("chunk-ext-bare-lf", b"5;a\nhello\r\n0\r\n\r\n", FUNKY)
    bad("chunk-size-bare-lf", b"5\nhello\r\n0\r\n\r\n", FUNKY + "; CVE-2022-32214")
    bad("chunk-size-bare-cr", b"5\rhello\r\n0\r\n\r\n", FUNKY)
    bad("chunk-data-bare-lf", b"5\r\nhello\n0\r\n\r\n", FUNKY)
    bad("chunk-data-no-crlf", b"5\r\nhelloXX0\r\n\r\n", "CVE-2025-43859")
    bad("chunk-data-too-long", b"3\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1")
    bad("chunk-data-too-short", b"8\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1")
    bad(
        "chunk-second-bad",
        b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
        "RFC 9112 §7.1 (bad line after a good chunk)",
    )
    bad("chunk-second-overflow", b"5\r\nhello\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n", GARDEN)
    bad("chunk-last-bare-lf", b"5\r\nhello\r\n0\n\r\n", FUNKY)
    bad("chunk-end-bare-lf", b"5\r\nhello\r\n0\r\n\n", FUNKY)
    bad("chunk-last-trailing-sp", b"0 \r\n\r\n", FUNKY)
    bad("trailer-space-before-colon", b"0\r\nX-T : a\r\n\r\n", "RFC 9112 §7.1.2, §5.1")
    bad("trailer-obs-fold", b"0\r\nX-T: a\r\n b\r\n\r\n", "RFC 9112 §7.1.2, §5.2")
    bad("trailer-bare-lf", b"0\r\nX-T: a\n\r\n", "RFC 9112 §2.2")
    bad("trailer-nul", b"0\r\nX-T: a\x00\r\n\r\n", "RFC 9110 §5.5")
    bad("trailer-bare-cr", b"0\r\nX-T: a\rb\r\n\r\n", "RFC 9112 §2.2")
    bad("trailer-no-colon", b"0\r\nX-T\r\n\r\n", "RFC 9112 §5.1")
    bad(
        "trailer-too-big",
        b"0\r\nX-T: " + b"a" * 17000 + b"\r\n\r\n",
        "policy: trailers at most 16 KiB",
    )
    good("chunk-size-upper-hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", "RFC 9112 §7.1")
    good(
        "chunk-size-leading-zeros",
        b"0000000000000000000005\r\nhello\r\n0\r\n\r\n",
        b"hello",
        "RFC 9112 §7.1",
    )
    good(
        "chunk-last-20-zeros",
        b"5\r\nhello\r\n00000000000000000000\r\n\r\n",
        b"hello",
        "RFC 9112 §7.1",
    )
    good("chunk-ext-token", b"5;a=b\r\nhello\r\n0\r\n\r\n", b"hello", "RFC 9112 §7.1.1")
    good("chunk-ext-name-only", b"5;a\r\nhello\r\n0\r\n\r\n", b"hello", "RFC 9112 §7.1.1")
    good("chunk-ext-quoted", b'5;a="b c"\r\nhello\r\n0\r\n\r\n', b"hello", "RFC 9112 §7.1.1")
    good("chunk-ext-quoted-pair", b'5;a="b\\"c"\r\nhello\r\n0\r\n\r\n', b"hello", "RFC 9112 §7.1.1")
    good("chunk-ext-bws", b"5 ; a = b\r\nhello\r\n0\r\n\r\n", b"hello", "RFC 9112 §7.1.1 (BWS)")
    good("chunk-ext-many", b'5;a=b;c;d="e"\r\nhello\r\n0\r\n\r\n', b"hello", "RFC 9112 §7.1.1")
    good("chunk-ext-on-last", b"5\r\nhello\r\n0;a=b\r\n\r\n", b"hello", "RFC 9112 §7.1.1")
    good("chunk-crlf-in-data", b"7\r\nhe\r\nllo\r\n0\r\n\r\n", b"he\r\nllo", "RFC 9112 §7.1")
    good("chunk-zero-only", b"0\r\n\r\n", b"", "RFC 9112 §7.1")
    good("trailer-valid", b"5\r\nhello\r\n0\r\nX-T: a\r\n\r\n", b"hello", "RFC 9112 §7.1.2")
    good("chunk-many-small", b"1\r\na\r\n" * 100 + b"0\r\n\r\n", b"a" * 100, "RFC 9112 §7.1")
    big = b"".join(b"%x\r\n" % 65536 + bytes([65 + i]) * 65536 + b"\r\n" for i in range(8))
    good(
        "chunk-512k",
        big + b"0\r\n\r\n",
        b"".join(bytes([65 + i]) * 65536 for i in range(8)),
        "RFC 9112 §7.1",
    )
    b.add(
        "chunk-then-get",
        chunked(b"5\r\nhello\r\n0\r\n\r\n") + req("GET /x HTTP/1.1"),
        pipe([Seen("POST", body=b"hello"), Seen(target="/x")], [200, 200]),
        "RFC 9112 §7.1, §9.3.2",
    )
    b.add(
        "chunk-leftover-is-request",
        chunked(b"0\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        pipe([Seen("POST")], [200, 400], close=True),
        KETTLE19 + " (what follows the last chunk is a new request)",
    )


def _controls(b: _Builder) -> None:
    b.cls = "control characters"
    for code in (0x00, 0x01, 0x07, 0x08, 0x0B, 0x0C, 0x1B, 0x1F, 0x7F):
        ch = chr(code)
        b.add(
            f"value-ctl-{code:02x}", req("GET / HTTP/1.1", f"X-A: a{ch}b"), rej(), "RFC 9110 §5.5"
        )
    b.add(
        "value-cr-inside",
        req("GET / HTTP/1.1", "X-A: a\rb"),
        rej(),
        "CVE-2023-30589; RFC 9112 §2.2",
    )
    b.add("value-cr-end", req("GET / HTTP/1.1", "X-A: a\r"), rej(), "RFC 9112 §2.2")
    b.add("name-nul", req("GET / HTTP/1.1", "X\x00A: a"), rej(), "RFC 9112 §5.1")
    b.add("name-del", req("GET / HTTP/1.1", "X\x7fA: a"), rej(), "RFC 9112 §5.1")
    b.add("name-ctl", req("GET / HTTP/1.1", "X\x01A: a"), rej(), "RFC 9112 §5.1")
    b.add("target-nul", req("GET /a\x00b HTTP/1.1"), rej(), "RFC 9112 §3.2")
    b.add("target-del", req("GET /a\x7fb HTTP/1.1"), rej(), "RFC 9112 §3.2")
    b.add("target-tab", req("GET /a\tb HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add("target-vt", req("GET /a\x0bb HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add("method-nul", req("G\x00T / HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add("version-nul", req("GET / HTTP/1.1\x00"), rej(), "RFC 9112 §2.3")
    b.add("nul-before-request", b"\x00" + req(), rej(), "RFC 9112 §2.2")
    b.add("nul-line-before-request", b"\x00\r\n" + req(), rej(), "RFC 9112 §2.2")
    b.add("host-nul", req("GET / HTTP/1.1", host="a\x00b"), rej(), "RFC 9110 §5.5")
    b.add("host-ctl", req("GET / HTTP/1.1", host="a\x01"), rej(), "RFC 9110 §5.5")
    b.add(
        "cl-value-ctl",
        req("POST / HTTP/1.1", "Content-Length: 5\x01", body=b"hello"),
        rej(),
        "RFC 9110 §5.5",
    )


def _obs_fold(b: _Builder) -> None:
    b.cls = "obs-fold"
    b.add("fold-space", req("GET / HTTP/1.1", "X-A: a", " b"), rej(), "RFC 9112 §5.2")
    b.add("fold-tab", req("GET / HTTP/1.1", "X-A: a", "\tb"), rej(), "RFC 9112 §5.2")
    b.add("fold-host", req("GET / HTTP/1.1", "X-A: a", host="a\r\n b"), rej(), "RFC 9112 §5.2")
    b.add("fold-first-line", req("GET / HTTP/1.1", " X-A: a", host=None), rej(), "RFC 9112 §2.2")
    b.add("fold-after-host", req("GET / HTTP/1.1", " X-A: a"), rej(), "RFC 9112 §5.2")
    b.add("fold-empty-value", req("GET / HTTP/1.1", "X-A:", " b"), rej(), "RFC 9112 §5.2")
    b.add("fold-many", req("GET / HTTP/1.1", "X-A: a", " b", " c", "\td"), rej(), "RFC 9112 §5.2")
    b.add(
        "fold-connection",
        req("GET / HTTP/1.1", "Connection: keep-alive,", " X-A", "X-A: 1"),
        rej(),
        "RFC 9112 §5.2",
    )
    b.add(
        "fold-expect",
        req("POST / HTTP/1.1", "Expect:", " 100-continue", "Content-Length: 5", body=b"hello"),
        rej(),
        KETTLE25 + " (Expect)",
    )
    b.add("fold-only-ws", req("GET / HTTP/1.1", "X-A: a", " "), rej(), "RFC 9112 §5.2")


def _field_names(b: _Builder) -> None:
    b.cls = "field-name"
    b.add("name-space-before-colon", req("GET / HTTP/1.1", "X-A : a"), rej(), "RFC 9112 §5.1")
    b.add("name-tab-before-colon", req("GET / HTTP/1.1", "X-A\t: a"), rej(), "RFC 9112 §5.1")
    b.add(
        "host-space-before-colon",
        req("GET / HTTP/1.1", "Host : a", host=None),
        rej(),
        "RFC 9112 §5.1",
    )
    b.add("name-empty", req("GET / HTTP/1.1", ": a"), rej(), "CVE-2023-25725")
    b.add(
        "name-empty-after-host",
        req("GET / HTTP/1.1", ": Content-Length: 5"),
        rej(),
        "CVE-2023-25725",
    )
    b.add("name-no-colon", req("GET / HTTP/1.1", "X-A"), rej(), "RFC 9112 §5.1")
    b.add(
        "cl-vt-before-colon",
        req("POST / HTTP/1.1", "Content-Length\x0b: 5", body=b"hello"),
        rej(),
        GARDEN,
    )
    b.add(
        "cl-ff-before-colon",
        req("POST / HTTP/1.1", "Content-Length\x0c: 5", body=b"hello"),
        rej(),
        GARDEN,
    )
    b.add("name-inner-space", req("GET / HTTP/1.1", "X A: a"), rej(), "RFC 9112 §5.1")
    for ch in '()<>@,;\\"/[]?={}':
        b.add(
            f"name-delim-{ord(ch):02x}",
            req("GET / HTTP/1.1", f"X{ch}A: a"),
            rej(),
            "RFC 9110 §5.6.2 (delimiters)",
        )
    b.add("name-obs-text", req("GET / HTTP/1.1", "X-\xe9: a"), rej(), "RFC 9110 §5.6.2")
    b.add("name-utf8", req("GET / HTTP/1.1", "H\xc3\xb4st: a"), rej(), "RFC 9110 §5.6.2")
    b.add(
        "name-long-valid", req("GET / HTTP/1.1", "X-" + "a" * 4000 + ": a"), fwd(), "RFC 9110 §5.1"
    )


def _targets(b: _Builder) -> None:
    b.cls = "request-target"
    good = {
        "target-query-empty": "/a?",
        "target-double-slash": "//a",
        "target-dot-segments": "/a/../b",
        "target-pct": "/%41%2f",
        "target-sub-delims": "/!$&'()*+,;=",
        "target-unreserved": "/~_-.",
        "target-colon-at": "/a:b@c",
        "target-query-slash-q": "/a?b/c?d",
    }
    for name, target in good.items():
        b.add(
            name,
            req(f"GET {target} HTTP/1.1"),
            fwd(Seen(target=target)),
            "RFC 9112 §3.2.1; RFC 3986 §3.3",
        )
    bad = {
        "target-fragment": "/a#frag",
        "target-backslash": "/a\\b",
        "target-pct-bad": "/%zz",
        "target-pct-short": "/%4",
        "target-dquote": '/a"b',
        "target-lt": "/a<b",
        "target-gt": "/a>b",
        "target-brace": "/a{b}",
        "target-pipe": "/a|b",
        "target-caret": "/a^b",
        "target-backtick": "/a`b",
        "target-utf8": "/caf\xc3\xa9",
        "target-obs-text": "/caf\xe9",
        "target-no-slash": "a",
        "target-authority-form": "a.b:80",
        "target-asterisk-get": "*",
        "target-asterisk-path": "*/a",
        "target-userinfo": "http://u:p@a/x",
        "target-userinfo-user": "http://u@a/x",
        "target-scheme-ftp": "ftp://a/x",
        "target-scheme-no-authority": "http:/a/x",
        "target-scheme-relative": "//a/x?",
        "target-fragment-abs": "http://a/x#y",
        "target-pct-in-host": "http://a%zz/x",
        "target-space-host": "http://a b/x",
    }
    for name, target in bad.items():
        src = "CVE-2023-45539" if "fragment" in name else "RFC 9112 §3.2; RFC 3986"
        if name == "target-scheme-relative":
            # `//a/x?` is a valid origin-form path (segments may be empty): forwarded as is.
            b.add(name, req(f"GET {target} HTTP/1.1"), fwd(Seen(target=target)), "RFC 9112 §3.2.1")
            continue
        b.add(name, req(f"GET {target} HTTP/1.1"), rej(), src)
    b.add("target-space-inside", req("GET /a b HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add("target-empty", req("GET  HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add(
        "target-long-8k",
        req("GET /" + "a" * 8000 + " HTTP/1.1"),
        fwd(Seen(target="/" + "a" * 8000)),
        "RFC 9112 §3 (8000 octets SHOULD)",
    )
    b.add("options-asterisk-query", req("OPTIONS *? HTTP/1.1"), rej(), "RFC 9112 §3.2.4")
    b.add("post-asterisk", req("POST * HTTP/1.1", "Content-Length: 0"), rej(), "RFC 9112 §3.2.4")
    # absolute-form: forwarded in origin-form, Host from the authority (RFC 9112 §3.2.1, §3.2.2).
    b.add("abs-form", req("GET http://a/x HTTP/1.1"), fwd(Seen(target="/x")), "RFC 9112 §3.2.2")
    b.add(
        "abs-form-query",
        req("GET http://a/x?q=1 HTTP/1.1"),
        fwd(Seen(target="/x?q=1")),
        "RFC 9112 §3.2.2",
    )
    b.add(
        "abs-form-https", req("GET https://a/x HTTP/1.1"), fwd(Seen(target="/x")), "RFC 9112 §3.2.2"
    )
    b.add(
        "abs-form-scheme-case",
        req("GET HTTP://a/x HTTP/1.1"),
        fwd(Seen(target="/x")),
        "RFC 3986 §3.1",
    )
    b.add(
        "abs-form-host-case",
        req("GET http://A/x HTTP/1.1"),
        fwd(Seen(target="/x")),
        "RFC 3986 §3.2.2",
    )
    b.add(
        "abs-form-empty-path",
        req("GET http://a HTTP/1.1"),
        fwd(Seen(target="/")),
        "RFC 9112 §3.2.1",
    )
    b.add(
        "abs-form-empty-path-query",
        req("GET http://a?q HTTP/1.1"),
        fwd(Seen(target="/?q")),
        "RFC 9112 §3.2.1",
    )
    b.add(
        "abs-form-port80",
        req("GET http://a:80/x HTTP/1.1"),
        fwd(Seen(target="/x")),
        "RFC 9110 §4.2.3",
    )
    b.add(
        "abs-form-host-port80",
        req("GET http://a/x HTTP/1.1", host="a:80"),
        fwd(Seen(target="/x")),
        "RFC 9110 §4.2.3",
    )
    b.add(
        "abs-form-port",
        req("GET http://a:8080/x HTTP/1.1", host="a:8080"),
        fwd(Seen(target="/x", host="a:8080")),
        "RFC 9112 §3.2.2",
    )
    b.add(
        "abs-form-ipv6",
        req("GET http://[::1]/x HTTP/1.1", host="[::1]"),
        fwd(Seen(target="/x", host="[::1]")),
        "RFC 3986 §3.2.2",
    )
    b.add(
        "abs-form-post",
        req("POST http://a/x HTTP/1.1", "Content-Length: 5", body=b"hello"),
        fwd(Seen("POST", "/x", body=b"hello")),
        "RFC 9112 §3.2.2",
    )
    b.add(
        "abs-form-host-mismatch",
        req("GET http://a/x HTTP/1.1", host="b"),
        rej(),
        "RFC 9112 §3.2.2 (policy: Host equals authority)",
    )
    b.add("abs-form-port-mismatch", req("GET http://a:8080/x HTTP/1.1"), rej(), "RFC 9112 §3.2.2")
    b.add("abs-form-no-host", req("GET http://a/x HTTP/1.1", host=None), rej(), "RFC 9112 §3.2")
    b.add(
        "abs-form-http10-no-host",
        req("GET http://a/x HTTP/1.0", host=None),
        fwd(Seen(target="/x"), close=True),
        "RFC 9112 §3.2.2 (Host from the authority)",
    )
    b.add("abs-form-two-hosts", req("GET http://a/x HTTP/1.1", "Host: a"), rej(), "RFC 9110 §7.2")


def _hosts(b: _Builder) -> None:
    b.cls = "Host"
    b.add("host-missing", req("GET / HTTP/1.1", host=None), rej(), "RFC 9112 §3.2")
    b.add(
        "host-missing-post",
        req("POST / HTTP/1.1", "Content-Length: 5", host=None, body=b"hello"),
        rej(),
        "RFC 9112 §3.2",
    )
    b.add("host-dup-same", req("GET / HTTP/1.1", "Host: a"), rej(), "RFC 9112 §3.2")
    b.add("host-dup-different", req("GET / HTTP/1.1", "Host: b"), rej(), "RFC 9112 §3.2")
    b.add("host-dup-case", req("GET / HTTP/1.1", "HOST: a"), rej(), "RFC 9112 §3.2")
    b.add(
        "host-dup-far",
        req("GET / HTTP/1.1", *[f"X-{i}: {i}" for i in range(10)], "host: b"),
        rej(),
        "RFC 9112 §3.2",
    )
    b.add("host-dup-http10", req("GET / HTTP/1.0", "Host: b"), rej(), "RFC 9112 §3.2")
    b.add("host-dup-empty", req("GET / HTTP/1.1", "Host:"), rej(), "RFC 9112 §3.2")
    bad = {
        "host-list": "a, b",
        "host-space": "a b",
        "host-slash": "a/b",
        "host-userinfo": "u@a",
        "host-port-alpha": "a:b",
        "host-two-ports": "a:80:80",
        "host-ipv6-unclosed": "[::1",
        "host-ipv6-bare": "::1",
        "host-port-negative": "a:-1",
        "host-tab-inside": "a\tb",
        "host-quote": '"a"',
        "host-hash": "a#b",
        "host-question": "a?b",
        "host-backslash": "a\\b",
        "host-pct-bad": "a%zz",
        "host-utf8": "caf\xc3\xa9",
        "host-comma": "a,",
        "host-brackets-reg": "[xyz]",
    }
    for name, value in bad.items():
        b.add(name, req("GET / HTTP/1.1", host=value), rej(), "RFC 9110 §7.2; RFC 3986 §3.2.2")
    good = {
        "host-port": "a:8080",
        "host-empty-port": "a:",
        "host-ipv4": "127.0.0.1",
        "host-ipv4-port": "127.0.0.1:1",
        "host-ipv6": "[::1]",
        "host-ipv6-port": "[::1]:8080",
        "host-reg-name-chars": "a-b_c~d.e",
        "host-sub-delims": "a!$&'()*+;=",
        "host-trailing-dot": "a.",
        "host-upper": "A.B",
        "host-pct": "a%41",
    }
    for name, value in good.items():
        b.add(
            name,
            req("GET / HTTP/1.1", host=value),
            fwd(Seen(host=value)),
            "RFC 9110 §7.2; RFC 3986 §3.2.2",
        )
    b.add("host-ows", req("GET / HTTP/1.1", host="  a \t"), fwd(Seen(host="a")), "RFC 9112 §5.1")
    b.add(
        "host-empty",
        req("GET / HTTP/1.1", host=""),
        fwd(Seen(host="")),
        "RFC 9112 §3.2 (empty when the URI has no authority)",
    )
    b.add(
        "host-not-first",
        req("GET / HTTP/1.1", "X-A: 1", "Host: a", host=None),
        fwd(),
        "RFC 9110 §5.3",
    )
    b.add("host-http10-invalid", req("GET / HTTP/1.0", host="a b"), rej(), "RFC 9110 §7.2")


def _versions(b: _Builder) -> None:
    b.cls = "version"
    b.add("http09-simple", b"GET /\r\n", rej(), "RFC 9112 §3 (HTTP/0.9 simple request)")
    b.add("http09-simple-headers", b"GET /\r\nHost: a\r\n\r\n", rej(), "RFC 9112 §3")
    for ver in ("0.9", "1.2", "2.0", "3.0", "1.9", "9.9"):
        b.add(f"version-{ver}", req(f"GET / HTTP/{ver}"), rej(505), "RFC 9110 §15.6.6")
    malformed = {
        "version-1.10": "HTTP/1.10",
        "version-1": "HTTP/1",
        "version-lower": "http/1.1",
        "version-mixed-case": "Http/1.1",
        "version-space": "HTTP/ 1.1",
        "version-https": "HTTPS/1.1",
        "version-suffix": "HTTP/1.1x",
        "version-leading-zero": "HTTP/01.1",
        "version-comma": "HTTP/1,1",
        "version-missing-minor": "HTTP/1.",
        "version-only-name": "HTTP",
        "version-fullwidth": "HTTP/\xef\xbc\x91.1",
    }
    for name, ver in malformed.items():
        b.add(name, req(f"GET / {ver}"), rej(), "RFC 9112 §2.3")
    b.add("request-line-trailing-space", req("GET / HTTP/1.1 "), rej(), "RFC 9112 §3")
    b.add("request-line-extra-word", req("GET / HTTP/1.1 x"), rej(), "RFC 9112 §3")
    b.add("request-line-double-space", req("GET  / HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add("request-line-tab", req("GET\t/\tHTTP/1.1"), rej(), "RFC 9112 §3")
    b.add("request-line-vt", req("GET\x0b/\x0bHTTP/1.1"), rej(), GARDEN)
    b.add("request-line-ff", req("GET\x0c/ HTTP/1.1"), rej(), GARDEN)
    b.add("request-line-leading-space", req(" GET / HTTP/1.1"), rej(), "RFC 9112 §3")
    b.add(
        "h2-preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        rej(505, 400),
        "RFC 9113 §3.4 (h2 preface on HTTP/1.1)",
    )
    b.add(
        "http10-keep-alive",
        req("GET / HTTP/1.0", "Connection: keep-alive"),
        fwd(Seen(absent=("connection",))),
        "RFC 9112 §9.3",
    )


def _sizes(b: _Builder) -> None:
    b.cls = "size limits"
    b.add(
        "fields-90",
        req("GET / HTTP/1.1", *[f"X-{i}: {i}" for i in range(89)]),
        fwd(),
        "fastlb [proxy] max_header_fields = 100",
    )
    b.add(
        "fields-101",
        req("GET / HTTP/1.1", *[f"X-{i}: {i}" for i in range(100)]),
        rej(431),
        "RFC 6585 §5; max_header_fields",
    )
    b.add(
        "fields-500",
        req("GET / HTTP/1.1", *[f"X-{i}: {i}" for i in range(499)]),
        rej(431),
        "RFC 6585 §5",
    )
    b.add(
        "value-10k", req("GET / HTTP/1.1", "X-A: " + "a" * 10000), fwd(), "max_header_bytes = 16384"
    )
    b.add(
        "value-20k",
        req("GET / HTTP/1.1", "X-A: " + "a" * 20000),
        rej(431),
        "RFC 6585 §5; max_header_bytes",
    )
    b.add(
        "head-20k-many",
        req("GET / HTTP/1.1", *[f"X-{i}: " + "a" * 400 for i in range(50)]),
        rej(431),
        "RFC 6585 §5",
    )
    b.add(
        "target-20k",
        req("GET /" + "a" * 20000 + " HTTP/1.1"),
        rej(431, 414),
        "RFC 9112 §3; RFC 9110 §15.5.15",
    )
    b.add("head-100k", req("GET / HTTP/1.1", "X-A: " + "a" * 100000), rej(431), "RFC 6585 §5")
    b.add(
        "body-1m", post(b"x" * (1 << 20)), fwd(Seen("POST", body=b"x" * (1 << 20))), "RFC 9112 §6.2"
    )
    b.add(
        "value-20k-split",
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 10000, b"a" * 10000 + b"\r\n\r\n"),
        rej(431),
        "RFC 6585 §5 (the limit across reads)",
    )


def _expect(b: _Builder) -> None:
    b.cls = "Expect"
    b.add(
        "expect-100",
        post(b"hello", "Expect: 100-continue"),
        fwd(Seen("POST", body=b"hello", present=(("expect", "100-continue"),))),
        "RFC 9110 §10.1.1",
    )
    b.add(
        "expect-100-case",
        post(b"hello", "Expect: 100-Continue"),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9110 §10.1.1 (case-insensitive)",
    )
    b.add(
        "expect-100-wait",
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            b"hello",
        ),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9110 §10.1.1",
    )
    b.add(
        "expect-100-chunked",
        chunked(b"5\r\nhello\r\n0\r\n\r\n", "Expect: 100-continue"),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9110 §10.1.1",
    )
    b.add(
        "expect-100-no-body",
        req("GET / HTTP/1.1", "Expect: 100-continue"),
        fwd(),
        "RFC 9110 §10.1.1; " + KETTLE25,
    )
    b.add(
        "expect-100-get-body",
        post(b"hello", "Expect: 100-continue", line="GET / HTTP/1.1"),
        fwd(Seen(body=b"hello")),
        KETTLE25 + " (Expect)",
    )
    b.add(
        "expect-100-http10",
        post(b"hello", "Expect: 100-continue", line="POST / HTTP/1.0"),
        fwd(Seen("POST", body=b"hello", absent=("expect",)), close=True),
        "RFC 9110 §10.1.1 (MUST ignore in 1.0)",
    )
    b.add("expect-other", post(b"hello", "Expect: foo"), rej(417), "RFC 9110 §10.1.1")
    b.add(
        "expect-obfuscated",
        post(b"hello", "Expect: y 100-continue"),
        rej(417),
        KETTLE25 + " (Expect)",
    )
    b.add("expect-list", post(b"hello", "Expect: 100-continue, foo"), rej(417), "RFC 9110 §10.1.1")
    b.add("expect-101", post(b"hello", "Expect: 101-continue"), rej(417), "RFC 9110 §10.1.1")
    b.add(
        "expect-100-trailing",
        post(b"hello", "Expect: 100-continuex"),
        rej(417),
        KETTLE25 + " (Expect)",
    )
    b.add(
        "expect-100-then-get",
        post(b"hello", "Expect: 100-continue") + req("GET /x HTTP/1.1"),
        pipe([Seen("POST", body=b"hello"), Seen(target="/x")], [200, 200]),
        KETTLE25 + " (Expect with a pipelined request)",
    )
    b.add(
        "expect-100-0cl",
        req(
            "GET / HTTP/1.1",
            "Expect: 100-continue",
            f"Content-Length: {len(SMUGGLED)}",
            body=SMUGGLED,
        ),
        fwd(Seen(body=SMUGGLED)),
        KETTLE25 + " (0.CL via Expect)",
    )


def _upgrade(b: _Builder) -> None:
    b.cls = "Upgrade/h2c"
    h2c = (
        "Upgrade: h2c",
        "Connection: Upgrade, HTTP2-Settings",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    )
    drop = ("upgrade", "http2-settings", "connection")
    b.add(
        "h2c-upgrade", req("GET / HTTP/1.1", *h2c), fwd(Seen(absent=drop)), H2C + "; RFC 9110 §7.8"
    )
    b.add(
        "h2c-upgrade-preface",
        req("GET / HTTP/1.1", *h2c) + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Expect((Seen(absent=drop),), (200, 505), True, frozenset({400})),
        H2C + " (no tunnel: the preface is read as HTTP/1.1)",
    )
    b.add(
        "h2c-no-connection",
        req("GET / HTTP/1.1", "Upgrade: h2c"),
        fwd(Seen(absent=("upgrade",))),
        H2C,
    )
    b.add(
        "websocket-upgrade",
        req(
            "GET / HTTP/1.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ),
        fwd(
            Seen(
                present=(
                    ("upgrade", "websocket"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("sec-websocket-version", "13"),
                )
            )
        ),
        "RFC 6455 §4.1, RFC 9110 §7.8 (the one Upgrade forwarded; the recorder answers 200)",
    )
    b.add(
        "websocket-upgrade-h2c-listed",
        req("GET / HTTP/1.1", "Upgrade: h2c, websocket", "Connection: Upgrade, HTTP2-Settings",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
        fwd(Seen(present=(("upgrade", "websocket"),), absent=("http2-settings",))),
        H2C + " (only websocket of the listed protocols goes on)",
    )
    b.add(
        "websocket-upgrade-body",
        post(b"hello", "Upgrade: websocket", "Connection: Upgrade", line="GET / HTTP/1.1"),
        rej(400),
        "RFC 6455 §4.1 (a tunnel request has no body: its bytes would be read two ways)",
    )
    b.add(
        "websocket-upgrade-post",
        post(b"hello", "Upgrade: websocket", "Connection: Upgrade"),
        fwd(Seen("POST", body=b"hello", absent=("upgrade",))),
        "RFC 6455 §4.1 (a WebSocket handshake is a GET: Upgrade dropped)",
    )
    b.add(
        "upgrade-post-body",
        post(b"hello", "Upgrade: h2c", "Connection: Upgrade"),
        fwd(Seen("POST", body=b"hello", absent=("upgrade",))),
        H2C,
    )
    b.add(
        "upgrade-then-get",
        req("GET / HTTP/1.1", "Upgrade: x", "Connection: upgrade") + req("GET /x HTTP/1.1"),
        pipe([Seen(absent=("upgrade",)), Seen(target="/x")], [200, 200]),
        H2C,
    )
    b.add(
        "upgrade-http10",
        req("GET / HTTP/1.0", "Upgrade: h2c", "Connection: Upgrade"),
        fwd(Seen(absent=("upgrade",)), close=True),
        "RFC 9110 §7.8",
    )
    b.add(
        "upgrade-connect",
        req("CONNECT a:443 HTTP/1.1", host="a:443"),
        rej(405),
        "RFC 9110 §9.3.6 (fastlb is not a tunnel)",
    )


def _pipelining(b: _Builder) -> None:
    b.cls = "pipelining"
    two = req("GET /1 HTTP/1.1") + req("GET /2 HTTP/1.1")
    b.add(
        "pipe-two", two, pipe([Seen(target="/1"), Seen(target="/2")], [200, 200]), "RFC 9112 §9.3.2"
    )
    b.add(
        "pipe-ten",
        b"".join(req(f"GET /{i} HTTP/1.1") for i in range(10)),
        pipe([Seen(target=f"/{i}") for i in range(10)], [200] * 10),
        "RFC 9112 §9.3.2",
    )
    b.add(
        "pipe-post-get",
        post(b"hello") + req("GET /2 HTTP/1.1"),
        pipe([Seen("POST", body=b"hello"), Seen(target="/2")], [200, 200]),
        "RFC 9112 §9.3.2",
    )
    b.add(
        "pipe-split-mid-second",
        (req("GET /1 HTTP/1.1") + b"GET /2 HT", b"TP/1.1\r\nHost: a\r\n\r\n"),
        pipe([Seen(target="/1"), Seen(target="/2")], [200, 200]),
        "RFC 9112 §9.3.2",
    )
    bads = {
        "pipe-then-no-host": req("GET /b HTTP/1.1", host=None),
        "pipe-then-two-hosts": req("GET /b HTTP/1.1", "Host: b"),
        "pipe-then-bare-lf": b"GET /b HTTP/1.1\nHost: a\n\n",
        "pipe-then-cl-list": req("POST /b HTTP/1.1", "Content-Length: 5, 5", body=b"hello"),
        "pipe-then-cl-te": req(
            "POST /b HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"
        ),
        "pipe-then-http09": b"GET /b\r\n",
        "pipe-then-garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        "pipe-then-obs-fold": req("GET /b HTTP/1.1", "X-A: a", " b"),
        "pipe-then-version": req("GET /b HTTP/1.2"),
        "pipe-then-target": req("GET /b#c HTTP/1.1"),
    }
    for name, second in bads.items():
        status = 505 if name == "pipe-then-version" else 400
        b.add(
            name,
            req("GET /1 HTTP/1.1") + second,
            pipe([Seen(target="/1")], [200, status], close=True),
            "policy: a rejected request ends the connection",
        )
    b.add(
        "pipe-bad-then-good",
        req("GET /b HTTP/1.1", host=None) + req("GET /2 HTTP/1.1"),
        rej(),
        "policy: requests behind a rejected one are not forwarded",
    )
    b.add(
        "pipe-bad-chunk-then-good",
        chunked(b"zz\r\n") + req("GET /2 HTTP/1.1"),
        rej(partial=True),
        "policy: requests behind a rejected one are not forwarded",
    )
    b.add(
        "pipe-close-then-get",
        req("GET /1 HTTP/1.1", "Connection: close") + req("GET /2 HTTP/1.1"),
        pipe([Seen(target="/1")], [200], close=True),
        "RFC 9112 §9.6",
    )
    big = b"x" * 300_000
    b.add(
        "pipe-get-then-big-post",
        req("GET /1 HTTP/1.1") + post(big),
        pipe([Seen(target="/1"), Seen("POST", body=big)], [200, 200]),
        "RFC 9112 §9.3.2",
    )
    b.add(
        "pipe-admin-then-big-post",
        req("GET /rep HTTP/1.1") + post(big),
        pipe([Seen("POST", body=big)], [200, 200]),
        "fastlb issue 11 (more bytes while an admin answer is pending)",
    )
    b.add(
        "pipe-three-middle-bad",
        req("GET /1 HTTP/1.1")
        + req("GET /b HTTP/1.1", "Content-Length: -1")
        + req("GET /3 HTTP/1.1"),
        pipe([Seen(target="/1")], [200, 400], close=True),
        "policy: a rejected request ends the connection",
    )


def _hop_by_hop(b: _Builder) -> None:
    b.cls = "hop-by-hop"
    hidden = b"GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n"
    n = len(hidden)
    for name, conn in {
        "conn-cl": "Content-Length",
        "conn-close-cl": "close, Content-Length",
        "conn-keepalive-cl": "keep-alive, Content-Length",
        "conn-cl-lower": "content-length",
        "conn-cl-empty-elem": ", Content-Length",
    }.items():
        close = "close" in conn
        b.add(
            name,
            req("POST / HTTP/1.1", f"Connection: {conn}", f"Content-Length: {n}", body=hidden),
            fwd(Seen("POST", body=hidden, present=(("content-length", str(n)),)), close=close),
            "RFC 9110 §7.6.1 (issue 11: smuggled through Connection)",
        )
    b.add(
        "conn-te",
        chunked(b"%x\r\n" % n + hidden + b"\r\n0\r\n\r\n", "Connection: Transfer-Encoding"),
        fwd(Seen("POST", body=hidden)),
        "RFC 9110 §7.6.1",
    )
    b.add("conn-host", req("GET / HTTP/1.1", "Connection: Host"), fwd(), "RFC 9110 §7.6.1")
    b.add(
        "conn-cl-get",
        req("GET / HTTP/1.1", "Connection: Content-Length", f"Content-Length: {n}", body=hidden),
        fwd(Seen(body=hidden)),
        "RFC 9110 §7.6.1; " + KETTLE25 + " (0.CL)",
    )
    b.add(
        "conn-names-field",
        req("GET / HTTP/1.1", "Connection: X-Foo", "X-Foo: 1"),
        fwd(Seen(absent=("x-foo", "connection"))),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "conn-two-fields",
        req("GET / HTTP/1.1", "Connection: X-Foo", "Connection: X-Bar", "X-Foo: 1", "X-Bar: 2"),
        fwd(Seen(absent=("x-foo", "x-bar"))),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "keep-alive-field",
        req("GET / HTTP/1.1", "Connection: keep-alive", "Keep-Alive: timeout=5"),
        fwd(Seen(absent=("keep-alive",))),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "proxy-connection",
        req("GET / HTTP/1.1", "Proxy-Connection: keep-alive"),
        fwd(Seen(absent=("proxy-connection",))),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "te-trailers",
        req("GET / HTTP/1.1", "TE: trailers"),
        fwd(Seen(absent=("te",))),
        "RFC 9110 §7.6.1, §10.1.4",
    )
    b.add(
        "trailer-field",
        chunked(b"5\r\nhello\r\n0\r\nX-T: a\r\n\r\n", "Trailer: X-T"),
        fwd(Seen("POST", body=b"hello", absent=("trailer",))),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "proxy-authorization",
        req("GET / HTTP/1.1", "Proxy-Authorization: Basic YTpi"),
        fwd(Seen(absent=("proxy-authorization",))),
        "RFC 9110 §7.6.1, §11.7.2",
    )
    b.add(
        "conn-close", req("GET / HTTP/1.1", "Connection: close"), fwd(close=True), "RFC 9112 §9.6"
    )
    b.add(
        "conn-close-upper",
        req("GET / HTTP/1.1", "Connection: CLOSE"),
        fwd(close=True),
        "RFC 9112 §9.6",
    )
    b.add(
        "conn-cl-zero-pipelined",
        req("POST / HTTP/1.1", "Connection: Content-Length", "Content-Length: 0")
        + req("GET /2 HTTP/1.1"),
        pipe([Seen("POST"), Seen(target="/2")], [200, 200]),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "conn-expect",
        post(b"hello", "Connection: Expect", "Expect: 100-continue"),
        fwd(Seen("POST", body=b"hello")),
        "RFC 9110 §7.6.1",
    )
    b.add(
        "conn-names-xff",
        req("GET / HTTP/1.1", "Connection: X-Forwarded-For"),
        fwd(),
        "RFC 9110 §7.6.1",
    )


def _bodies(b: _Builder) -> None:
    b.cls = "bodies"
    b.add(
        "get-cl-body",
        post(b"hello", line="GET / HTTP/1.1"),
        fwd(Seen(body=b"hello")),
        "RFC 9110 §9.3.1",
    )
    b.add(
        "get-chunked-body",
        chunked(b"5\r\nhello\r\n0\r\n\r\n", line="GET / HTTP/1.1"),
        fwd(Seen(body=b"hello")),
        "RFC 9110 §9.3.1",
    )
    b.add(
        "head-cl-body",
        post(b"hello", line="HEAD / HTTP/1.1"),
        fwd(Seen("HEAD", body=b"hello")),
        "RFC 9110 §9.3.2",
    )
    b.add(
        "delete-body",
        post(b"hello", line="DELETE / HTTP/1.1"),
        fwd(Seen("DELETE", body=b"hello")),
        "RFC 9110 §9.3.5",
    )
    b.add(
        "options-body",
        post(b"hello", line="OPTIONS / HTTP/1.1"),
        fwd(Seen("OPTIONS", body=b"hello")),
        "RFC 9110 §9.3.7",
    )
    b.add(
        "get-body-is-request",
        post(SMUGGLED, line="GET / HTTP/1.1"),
        fwd(Seen(body=SMUGGLED)),
        KETTLE25 + " (0.CL); " + KETTLE22 + " (CL.0)",
    )
    b.add(
        "get-body-then-get",
        post(b"hello", line="GET / HTTP/1.1") + req("GET /2 HTTP/1.1"),
        pipe([Seen(body=b"hello"), Seen(target="/2")], [200, 200]),
        KETTLE22 + " (CL.0)",
    )
    b.add(
        "post-body-hidden-head",
        post(HIDDEN) + req("GET /2 HTTP/1.1"),
        pipe([Seen("POST", body=HIDDEN), Seen(target="/2")], [200, 200]),
        KETTLE22 + " (CL.0)",
    )
    b.add("get-cl-zero", req("GET / HTTP/1.1", "Content-Length: 0"), fwd(), "RFC 9110 §8.6")
    b.add(
        "trace-body",
        post(b"hello", line="TRACE / HTTP/1.1"),
        fwd(Seen("TRACE", body=b"hello")),
        "RFC 9110 §9.3.8",
    )


def _methods(b: _Builder) -> None:
    b.cls = "method"
    for name, method in {
        "method-lower": "get",
        "method-mixed": "Get",
        "method-unknown": "FOO",
        "method-m-search": "M-SEARCH",
        "method-propfind": "PROPFIND",
        "method-all-tchar": "!#$%&'*+-.^_`|~09azAZ",
        "method-digits": "123",
        "method-trace": "TRACE",
        "method-patch": "PATCH",
        "method-long": "X" * 1000,
        "method-pri-origin": "PRI",
        "method-lower-post": "post",
    }.items():
        b.add(
            name,
            req(f"{method} / HTTP/1.1"),
            fwd(Seen(method)),
            "RFC 9110 §9.1 (any token, case-sensitive)",
        )
    b.add("method-connect", req("CONNECT a:80 HTTP/1.1", host="a:80"), rej(405), "RFC 9110 §9.3.6")
    b.add("method-connect-origin", req("CONNECT / HTTP/1.1"), rej(405, 400), "RFC 9110 §9.3.6")
    b.add(
        "method-connect-lower",
        req("connect a:80 HTTP/1.1", host="a:80"),
        rej(),
        "RFC 9112 §3.2.3 (authority-form only for CONNECT)",
    )
    for name, method in {
        "method-paren": "GE(T",
        "method-at": "G@T",
        "method-slash": "GE/T",
        "method-obs-text": "G\xc9T",
        "method-colon": "GET:",
        "method-bracket": "[GET]",
        "method-comma": "GET,POST",
        "method-quote": 'GE"T',
    }.items():
        b.add(name, req(f"{method} / HTTP/1.1"), rej(), "RFC 9110 §9.1, §5.6.2")
    b.add("method-empty", req(" / HTTP/1.1"), rej(), "RFC 9112 §3")


def _incomplete(b: _Builder) -> None:
    b.cls = "incomplete"
    b.add(
        "stall-head-no-blank",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        incomplete(),
        "RFC 9112 §2.1; fastlb header_timeout",
        slow=True,
    )
    b.add("stall-request-line", b"GET / HT", incomplete(), "RFC 9112 §3; slowloris", slow=True)
    b.add("stall-one-byte", b"G", incomplete(), "slowloris", slow=True)
    b.add("stall-crlf-only", b"\r\n", incomplete(), "RFC 9112 §2.2", slow=True)
    b.add(
        "stall-head-cr",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        incomplete(),
        "RFC 9112 §2.2",
        slow=True,
    )
    b.add(
        "stall-field-no-crlf",
        b"GET / HTTP/1.1\r\nHost: a",
        incomplete(),
        "CVE-2022-35256",
        slow=True,
    )
    b.add(
        "stall-body-cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234",
        incomplete(504, partial=True),
        KETTLE25 + " (0.CL: a body that never comes)",
        slow=True,
    )
    b.add(
        "stall-body-chunk",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        incomplete(504, partial=True),
        "RFC 9112 §7.1",
        slow=True,
    )
    b.add(
        "stall-chunk-size-line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5",
        incomplete(504, partial=True),
        FUNKY,
        slow=True,
    )
    b.add(
        "stall-after-last-chunk",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        incomplete(504, partial=True),
        "RFC 9112 §7.1.2",
        slow=True,
    )
    b.add(
        "eof-head", b"GET / HTTP/1.1\r\nHost: a\r\n", incomplete(), "RFC 9112 §8", half_close=True
    )
    b.add("eof-request-line", b"GET / HTTP/1.1", incomplete(), "RFC 9112 §8", half_close=True)
    b.add("eof-empty", b"", incomplete(), "RFC 9112 §9.6", half_close=True)
    b.add(
        "eof-body-cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234",
        incomplete(504, partial=True),
        "RFC 9112 §8 (incomplete message)",
        half_close=True,
        slow=True,
    )
    b.add(
        "eof-body-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        incomplete(504, partial=True),
        "RFC 9112 §8",
        half_close=True,
        slow=True,
    )
    b.add(
        "get-after-good-eof",
        req("GET /1 HTTP/1.1") + b"GET /2 HTTP/1.1\r\n",
        Expect((Seen(target="/1"),), (200, 400), True, frozenset({408}), no_response_ok=True),
        "RFC 9112 §8",
        half_close=True,
    )


def _bare_lf(b: _Builder) -> None:
    b.cls = "bare LF/CR"
    b.add("lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", rej(), "RFC 9112 §2.2; CVE-2022-32214")
    b.add("lf-blank-line", b"GET / HTTP/1.1\r\nHost: a\r\n\n", rej(), "RFC 9112 §2.2")
    b.add("lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", rej(), "RFC 9112 §2.2")
    b.add("lf-field-line", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", rej(), "RFC 9112 §2.2")
    b.add("lf-leading-line", b"\n" + req(), rej(), "RFC 9112 §2.2")
    b.add(
        "lf-cl-body",
        b"POST / HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
        rej(),
        "RFC 9112 §2.2; " + FUNKY,
    )
    b.add("lf-lf-crlf", b"GET / HTTP/1.1\r\nHost: a\n\r\n", rej(), "RFC 9112 §2.2")
    b.add(
        "cr-request-line",
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        rej(),
        "RFC 9112 §2.2; CVE-2023-30589",
    )
    b.add("cr-blank-line", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", rej(), "RFC 9112 §2.2")
    b.add("cr-cr-lf", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", rej(), "RFC 9112 §2.2")
    b.add("cr-only-lines", b"GET / HTTP/1.1\rHost: a\r\r", rej(), "RFC 9112 §2.2")
    b.add(
        "lf-split",
        (b"GET / HTTP/1.1\r\nHost: a\r\n", b"\n"),
        rej(),
        "RFC 9112 §2.2 (at once, across reads)",
    )
    b.add(
        "lf-hidden-te",
        b"POST / HTTP/1.1\r\nHost: a\r\nX: 1\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        rej(),
        KETTLE19,
    )


def build() -> list[Case]:
    b = _Builder()
    for part in (
        _baseline,
        _cl_te,
        _te_te,
        _content_length,
        _chunks,
        _controls,
        _obs_fold,
        _field_names,
        _targets,
        _hosts,
        _versions,
        _sizes,
        _expect,
        _upgrade,
        _pipelining,
        _hop_by_hop,
        _bodies,
        _methods,
        _incomplete,
        _bare_lf,
    ):
        part(b)
    names = [c.name for c in b.cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)}"
    return b.cases


CASES: list[Case] = build()
CLASSES: list[str] = list(dict.fromkeys(c.cls for c in CASES))
