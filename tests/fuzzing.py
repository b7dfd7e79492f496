"""The fuzzer's shared parts: request generators, mutators, a strict chunked parser, and the
judges of each level (head parsers, chunked framer, whole exchange through a real fastlb).

Why one module for the suite (tests/test_fuzz.py, hypothesis, bounded and deterministic) and
the long run (bench/fuzz.py, seeded `random`, 100,000 inputs): both must test the same inputs
the same way. So every generator takes a `Draw`, the source of its choices: `HypothesisDraw`
wraps hypothesis's `draw` (shrinking works, the first option of every choice is the plain
one, so a failure shrinks towards a valid request), `RandomDraw` wraps `random.Random` (no
shrinking overhead, for volume).

The generators build valid requests from the RFC 9112 grammar (request-line §3, field lines
§5, Content-Length §6.2, chunked §7.1 with extensions and trailers), then mutate them twice:
structurally (a duplicated or case-changed field, framing fields swapped, added or
re-spelled, chunk lines changed) and byte-wise (flips, insertions of CR, LF, NUL, SP, HTAB,
`;`, `,`..., deletions, duplications, truncation), and cut the result into segments at random
points, which the exchange sends one by one.

The judges return a list of problems (empty: the input was handled as fastlb's acceptance
policy, /work/coord/policy.md, requires), so the suite can assert on it and the long run can
count and sample them.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st

from fastlb.http.accept import check_partial, request_line
from fastlb.http.errors import HttpError
from fastlb.http.head import CHUNKED
from fastlb.http.parsers import HeadParser
from tests.hostile.exchange import LogTail

T = TypeVar("T")

CRLF = b"\r\n"
#: What an HttpError may carry for a client's request: a 4xx, or the two 5xx the policy uses
#: for requests (501: a transfer coding fastlb does not implement, RFC 9112 §6.1; 505: an
#: HTTP version it does not support, RFC 9110 §15.6.6).
CLIENT_STATUSES = frozenset(range(400, 500)) | {501, 505}
#: Shown in problems: inputs are printed as Python bytes literals, cut to this length.
SHOW = 400


def show(data: bytes) -> str:
    text = repr(data)
    return text if len(text) <= SHOW else text[:SHOW] + f"... ({len(data)} bytes)"


# ------------------------------------------------------------------------- where choices come from
class Draw:
    """The source of a generator's choices. `integer` is the primitive; the others are built on
    it so that both sources make the same choices from the same numbers."""

    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        """True with about `percent`% probability (hypothesis shrinks it towards False)."""
        return self.integer(0, 99) < percent

    def blob(self, alphabet: bytes, lo: int, hi: int) -> bytes:
        return bytes(self.choice(alphabet) for _ in range(self.integer(lo, hi)))


class RandomDraw(Draw):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, percent: int) -> bool:
        return self.rng.random() * 100 < percent


class HypothesisDraw(Draw):
    def __init__(self, draw: Callable[[st.SearchStrategy[int]], int]) -> None:
        self._draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))


# ------------------------------------------------------------------------------- valid requests
TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
#: Plain first (shrinking goes there), then the unusual but valid (any token is a method).
METHODS = [
    b"GET",
    b"POST",
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"get",
    b"M-SEARCH",
    b"!#$%&'*+-.^_`|~",
]
HOSTS = [b"a", b"example.com", b"127.0.0.1:8080", b"[::1]:80", b"h.test:", b"xn--bcher-kva.de"]
PATHS = [b"/", b"/a", b"/fz/b", b"/a/b/c", b"/x.y", b"/%41", b"/a;p=1", b"/~u/!$&'()*+,=:@"]
QUERIES = [b"", b"?q=1", b"?a=1&b=2", b"?x=%20y", b"?/?:@", b"?"]
#: Field lines a client commonly sends, and the hop-by-hop ones fastlb must drop (RFC 9110 §7.6.1).
EXTRA_FIELDS = [
    b"User-Agent: fuzz/1.0",
    b"Accept: */*",
    b"X-Request-Id: 42",
    b"Cookie: a=b; c=d",
    b"Accept-Language: en;q=0.8, fr",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Keep-Alive: timeout=5",
    b"TE: trailers",
    b"Upgrade: h2c",
    b"Connection: Upgrade, HTTP2-Settings",
    b"Expect: 100-continue",
    b"X-Forwarded-For: 10.0.0.1",
    b"X-Empty:",
    b"X-Obs: caf\xe9",
    b"X-Tab: a\tb",
    b"Proxy-Authorization: Basic eA==",
]
#: A body that is itself a request: if a hop frames the body differently, the replica sees it.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
BODY_ALPHABET = b"ab\r\n0;: \x00\xff"


@dataclass
class Chunk:
    line: bytes  # the chunk-size line without its CRLF (size and extensions)
    data: bytes
    end: bytes = CRLF  # what follows the data (CRLF when valid)


@dataclass
class Request:
    """A request in parts, so that structural mutations can target a part; `encode` joins them."""

    line: bytes  # request-line without CRLF
    fields: list[bytes]  # field lines without CRLF
    body: bytes = b""  # a Content-Length body, or bytes after the head
    chunks: list[Chunk] | None = None  # a chunked body (the last chunk included)
    trailers: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        head = self.line + CRLF + b"".join(f + CRLF for f in self.fields) + CRLF
        return head + self.encode_body()

    def encode_body(self) -> bytes:
        if self.chunks is None:
            return self.body
        parts = []
        for chunk in self.chunks:
            parts.append(chunk.line + CRLF + chunk.data)
            if chunk.data:
                parts.append(chunk.end)
        parts += [t + CRLF for t in self.trailers]
        return b"".join(parts) + CRLF + self.body


def gen_body_data(d: Draw, lo: int, hi: int) -> bytes:
    if d.chance(10):
        return SMUGGLED
    return d.blob(BODY_ALPHABET, lo, hi)


def gen_chunk_ext(d: Draw) -> bytes:
    """A valid chunk-ext (RFC 9112 §7.1.1): BWS ";" BWS token [BWS "=" BWS (token / quoted)]."""
    return d.choice([b";a", b";a=b", b';n="v w"', b" ; x = 1", b';q="\\"";r', b";\tt"])


def gen_chunks(d: Draw) -> tuple[list[Chunk], list[bytes]]:
    chunks = []
    for _ in range(d.integer(0, 3)):
        data = gen_body_data(d, 1, 24)
        size = d.choice([b"%x", b"%X", b"0%x", b"000%x"]) % len(data)
        ext = gen_chunk_ext(d) if d.chance(20) else b""
        chunks.append(Chunk(size + ext, data))
    last = d.choice([b"0", b"0", b"000", b"0;end"])
    chunks.append(Chunk(last, b""))
    trailers = [
        d.choice([b"X-T: 1", b"Checksum: abc", b"X-U:", b"X-V: a b"])
        for _ in range(d.integer(0, 2) if d.chance(25) else 0)
    ]
    return chunks, trailers


def gen_request(d: Draw) -> Request:
    """A request that fastlb's acceptance policy must forward (RFC 9112, RFC 9110)."""
    method = d.choice(METHODS)
    version = b"HTTP/1.0" if d.chance(15) else b"HTTP/1.1"
    host = d.choice(HOSTS)
    form = d.integer(0, 9)
    if form == 9 and method == b"OPTIONS":
        target = b"*"
    elif form == 8:  # absolute-form (RFC 9112 §3.2.2); Host must then name the same authority
        scheme = d.choice([b"http", b"HTTP", b"https"])
        target = scheme + b"://" + host + d.choice(PATHS) + d.choice(QUERIES)
    elif form == 7 and d.chance(30):  # fastlb's own admin route: answered, not forwarded
        target = b"/rep"
    else:
        target = d.choice(PATHS) + d.choice(QUERIES)
    fields: list[bytes] = []
    if version == b"HTTP/1.1" or d.chance(50):
        fields.append(b"Host: " + host)
    for _ in range(d.integer(0, 3)):
        extra = d.choice(EXTRA_FIELDS)
        if extra in fields or (extra.startswith(b"Expect") and version != b"HTTP/1.1"):
            continue
        fields.append(extra)
    req = Request(method + b" " + target + b" " + version, fields)
    kind = d.integer(0, 4) if version == b"HTTP/1.1" else d.integer(0, 2)
    if target == b"/rep":
        kind = 0  # an admin request has no body here (fastlb answers a chunked one 411)
    if kind in (1, 2):
        req.body = gen_body_data(d, 0, 40)
        req.fields.insert(d.integer(0, len(req.fields)), b"Content-Length: %d" % len(req.body))
    elif kind >= 3:
        req.chunks, req.trailers = gen_chunks(d)
        te = d.choice([b"chunked", b"Chunked", b" chunked ", b"CHUNKED"])
        req.fields.insert(d.integer(0, len(req.fields)), b"Transfer-Encoding:" + te)
    if d.chance(10):
        req.fields = [f.lower() if i % 2 else f for i, f in enumerate(req.fields)]
    return req


# ------------------------------------------------------------------------ structural mutations
#: Framing field spellings a hop may read differently (the CL.TE / TE.TE / CL.CL classes).
CL_VALUES = [
    b"5",
    b"0",
    b"+5",
    b"-1",
    b"5x",
    b"",
    b"0x5",
    b" 5",
    b"5, 5",
    b"5,6",
    b"05",
    b"1" * 19,
    b"4294967296",
    b"5 5",
    b"\x0b5",
]
TE_VALUES = [
    b"chunked",
    b"gzip, chunked",
    b"chunked, chunked",
    b"chunked, gzip",
    b"identity",
    b"xchunked",
    b"chunked;q=1",
    b" chunked",
    b"\tchunked",
    b"chunk",
    b"",
    b",chunked",
    b"chunked,",
    b"CHUNKED",
    b"chunked\x0b",
    b"identity, chunked",
]
FRAMING_NAMES = [
    b"Content-Length",
    b"Transfer-Encoding",
    b"content-length",
    b"Transfer-encoding",
    b"TRANSFER-ENCODING",
    b"Content-Length ",
    b"Transfer_Encoding",
    b"Transfer-Encoding\t",
    b" Transfer-Encoding",
    b"Content-Lengthx",
]
CHUNK_LINES = [
    b"5 ",
    b"5;",
    b"5;a\rxx",
    b"5;a=\x00",
    b"ffffffffffffffff",
    b"8000000000000005",
    b"00000000000000000000",
    b"0x5",
    b"-5",
    b"5\t",
    b" 5",
    b"5;a b",
    b'5;a="b',
    b"5;a=b c",
    b"1" * 16,
    b"f" * 15,
    b"5;a=",
    b"5;=b",
    b"",
    b"g",
    b"5\n",
]
SPECIALS = [
    b"\r",
    b"\n",
    b"\x00",
    b" ",
    b"\t",
    b";",
    b",",
    b"\r\n",
    b":",
    b'"',
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\x0b",
    b"\x0c",
    b"0",
    b"\r\n\r\n",
    b"\n\n",
    b"\\",
    b"#",
    b"%",
    b"\r\r\n",
]


def _field_index(d: Draw, req: Request) -> int:
    return d.integer(0, len(req.fields) - 1) if req.fields else -1


def mutate_structure(d: Draw, req: Request) -> str:
    """Apply one structural mutation to `req`; returns its name (for the long run's samples)."""
    kind = d.integer(0, 14)
    i = _field_index(d, req)
    if kind == 14:  # past the limits: a head over max_header_bytes, or over max_header_fields
        if d.chance(50):
            size = d.choice([4000, 16300, 16500])
            req.fields.insert(d.integer(0, len(req.fields)), b"X-Big: " + b"v" * size)
        else:
            count = d.choice([98, 101, 150])
            req.fields[d.integer(0, len(req.fields)) : 0] = [b"X-N: %d" % n for n in range(count)]
        return "over-limits"
    if kind == 0 and i >= 0:  # a duplicated field, same or changed value
        dup = req.fields[i] if d.chance(50) else req.fields[i].split(b":")[0] + b": other"
        req.fields.insert(d.integer(0, len(req.fields)), dup)
        return "duplicate-field"
    if kind == 1 and i >= 0:  # a field name's case changed
        name, sep, value = req.fields[i].partition(b":")
        name = d.choice([name.upper(), name.lower(), name.swapcase()])
        req.fields[i] = name + sep + value
        return "field-case"
    if kind == 2:  # another Content-Length
        name = d.choice(FRAMING_NAMES[::2] + FRAMING_NAMES[5:])
        if b"ength" not in name:
            name = b"Content-Length"
        req.fields.insert(d.integer(0, len(req.fields)), name + b": " + d.choice(CL_VALUES))
        return "add-content-length"
    if kind == 3:  # another Transfer-Encoding
        name = d.choice([n for n in FRAMING_NAMES if b"ncoding" in n])
        req.fields.insert(d.integer(0, len(req.fields)), name + b": " + d.choice(TE_VALUES))
        return "add-transfer-encoding"
    if kind == 4:  # the framing field's name swapped for the other one (CL <-> TE)
        for j, f in enumerate(req.fields):
            low = f.lower()
            if low.startswith(b"content-length:"):
                req.fields[j] = b"Transfer-Encoding: chunked"
                return "cl-to-te"
            if low.startswith(b"transfer-encoding:"):
                req.fields[j] = b"Content-Length: %d" % len(req.encode_body())
                return "te-to-cl"
        return "swap-none"
    if kind == 5:  # the Connection header names what frames or routes the message
        target = d.choice(
            [b"Content-Length", b"Transfer-Encoding", b"Host", b"close, Content-Length"]
        )
        req.fields.insert(d.integer(0, len(req.fields)), b"Connection: " + target)
        return "connection-names-framing"
    if kind == 6 and req.chunks:  # a chunk-size line changed
        chunk = d.choice(req.chunks)
        chunk.line = d.choice(CHUNK_LINES) if d.chance(70) else chunk.line + gen_chunk_ext(d)
        return "chunk-line"
    if kind == 7 and req.chunks:  # chunk data followed by something else than CRLF, or sized wrong
        chunk = d.choice(req.chunks)
        if chunk.data and d.chance(50):
            chunk.end = d.choice([b"", b"\n", b"\r", b"XX", b"\r\n\r\n", b" \r\n"])
        else:
            size = len(chunk.data) + d.choice([-1, 1, 2])
            chunk.line = b"%x" % max(size, 0)
        return "chunk-data"
    if kind == 8:  # a trailer that is not a valid field line
        req.trailers.append(
            d.choice(
                [
                    b"X-T : a",
                    b" folded",
                    b"bad",
                    b"X-T: a\x00",
                    b": v",
                    b"Content-Length: 5",
                    b"X-T:\x7f",
                ]
            )
        )
        return "trailer"
    if kind == 9 and i >= 0:  # a field value or name with a special byte in it
        f = req.fields[i]
        at = d.integer(0, len(f))
        req.fields[i] = f[:at] + d.choice(SPECIALS) + f[at:]
        return "field-special"
    if kind == 10:  # obs-fold, whitespace before the colon, or an empty name
        line = d.choice([b" folded", b"\tfolded", b"Host : a", b": empty", b"X-A\t: b", b"NoColon"])
        req.fields.insert(d.integer(0, len(req.fields)), line)
        return "field-line"
    if kind == 11:  # Host: none, two, or an invalid value
        req.fields = [f for f in req.fields if not f.lower().startswith(b"host:")]
        if d.chance(70):
            value = d.choice([b"a, b", b"a b", b"a/b", b"u@a", b"a:b", b"", b"a", b"b", b"[::1"])
            req.fields.insert(d.integer(0, len(req.fields)), b"Host: " + value)
            if d.chance(50):
                req.fields.append(d.choice([b"Host: a", b"host: b", b"HOST: a"]))
        return "host"
    if kind == 12:  # the request line: spacing, version, target form
        method, _, rest = req.line.partition(b" ")
        target, _, version = rest.rpartition(b" ")
        choice = d.integer(0, 7)
        if choice == 0:
            req.line = method + b"  " + target + b" " + version
        elif choice == 1:
            req.line = method + b" " + target  # HTTP/0.9
        elif choice == 2:
            req.line = (
                method
                + b" "
                + target
                + b" "
                + d.choice(
                    [
                        b"HTTP/1.2",
                        b"HTTP/2.0",
                        b"HTTP/0.9",
                        b"http/1.1",
                        b"HTTP/1.1 ",
                        b"HTTP/1",
                        b"HTTP/11",
                    ]
                )
            )
        elif choice == 3:
            req.line = method + b"\t" + target + b" " + version
        elif choice == 4:
            req.line = (
                method
                + b" "
                + d.choice(
                    [
                        b"a",
                        b"a:80",
                        b"*",
                        b"/a#f",
                        b"/a\\b",
                        b"/%zz",
                        b"http://u:p@a/x",
                        b"//a",
                        b"/a b",
                        b"/\x7f",
                        b"/\xe9",
                        b"http://",
                        b"ftp://a/",
                        b"http://a",
                    ]
                )
                + b" "
                + version
            )
        elif choice == 5:
            req.line = (
                d.choice([b"CONNECT", b"connect", b"GE T", b"", b"G\x00T"])
                + b" "
                + target
                + b" "
                + version
            )
        elif choice == 6:
            req.line = method + b" " + target + b" " + version + b" "
        else:
            req.line = b"\r\n" + req.line  # an empty line before the request line (RFC 9112 §2.2)
        return "request-line"
    if i >= 0:  # a field dropped
        del req.fields[i]
        return "drop-field"
    return "none"


# ----------------------------------------------------------------------------- byte mutations
def mutate_bytes(d: Draw, data: bytes) -> tuple[bytes, str]:
    """One byte-level mutation: a bit flip, an inserted special, a deletion, a duplication."""
    if not data:
        return d.choice(SPECIALS), "insert"
    at = d.integer(0, len(data) - 1)
    kind = d.integer(0, 3)
    if kind == 0:
        return data[:at] + bytes([data[at] ^ (1 << d.integer(0, 7))]) + data[at + 1 :], "flip"
    if kind == 1:
        return data[:at] + d.choice(SPECIALS) + data[at:], "insert"
    span = d.integer(1, 8)
    if kind == 2:
        return data[:at] + data[at + span :], "delete"
    return data[:at] + data[at : at + span] * 2 + data[at + span :], "duplicate"


def segments(d: Draw, data: bytes, most: int = 4) -> list[bytes]:
    """`data` cut at random points into at most `most` non-empty pieces."""
    if len(data) < 2:
        return [data]
    cuts = sorted({d.integer(1, len(data) - 1) for _ in range(d.integer(0, most - 1))})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@dataclass
class Input:
    data: bytes
    pieces: list[bytes]
    mutations: list[str]


def gen_input(d: Draw, *, pipelined: bool = True) -> Input:
    """What one client sends on one connection: one or two requests (each maybe mutated), then
    byte mutations, maybe truncated, cut into segments."""
    names: list[str] = []
    parts = []
    for n in range(2 if pipelined and d.chance(20) else 1):
        req = gen_request(d)
        for _ in range(d.choice([0, 0, 1, 1, 1, 2, 3]) if n == 0 or d.chance(30) else 0):
            names.append(mutate_structure(d, req))
        parts.append(req.encode())
    data = b"".join(parts)
    for _ in range(d.choice([0, 0, 0, 1, 1, 2])):
        data, name = mutate_bytes(d, data)
        names.append(name)
    if d.chance(10):
        data = data[: d.integer(0, len(data))]
        names.append("truncate")
    return Input(data, segments(d, data), names)


def gen_head(d: Draw) -> tuple[bytes, list[str]]:
    """A head for the parsers alone: a mutated request cut after its first blank line, as the
    I/O shell hands a parser exactly one head (bytes up to and including the empty line)."""
    inp = gen_input(d, pipelined=False)
    data = inp.data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        data += b"\r\n\r\n"
        end = data.find(b"\r\n\r\n")
    return data[: end + 4], inp.mutations


def gen_chunked_body(d: Draw) -> tuple[bytes, list[bytes], list[str]]:
    """A chunked body (valid, then chunk-line and byte mutations), maybe with the next request's
    bytes after it, and its segments."""
    chunks, trailers = gen_chunks(d)
    req = Request(b"", [], chunks=chunks, trailers=trailers)
    names = []
    for _ in range(d.choice([0, 1, 1, 2])):
        kind = d.integer(0, 2)
        if kind == 0:
            chunk = d.choice(chunks)
            chunk.line = d.choice(CHUNK_LINES) if d.chance(70) else chunk.line + gen_chunk_ext(d)
            names.append("chunk-line")
        elif kind == 1:
            chunk = d.choice(chunks)
            if chunk.data:
                chunk.end = d.choice([b"", b"\n", b"\r", b"XX", b" \r\n"])
            else:
                chunk.line = d.choice([b"1", b"0;", b"0 ", b"00000000000000000000"])
            names.append("chunk-data")
        else:
            req.trailers.append(d.choice([b"X-T : a", b" folded", b"bad", b"X-T: a\x00", b": v"]))
            names.append("trailer")
    if d.chance(30):
        req.body = d.choice([SMUGGLED, b"0\r\n\r\n", b"x"])
    data = req.encode_body()
    for _ in range(d.choice([0, 0, 1, 2])):
        data, name = mutate_bytes(d, data)
        names.append(name)
    if d.chance(10):
        data = data[: d.integer(0, len(data))]
        names.append("truncate")
    return data, segments(d, data, 6), names


# ------------------------------------------------------------------------- strict chunked parser
class Malformed(Exception):
    """Bytes that are not a chunked body under RFC 9112 §7.1 as fastlb's policy reads it."""


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_EXT = (
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(" + _EXT + rb")")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*[\t\x20-\x7e\x80-\xff]*")
#: The framer's limits, which the policy fixes (a chunk line with its CRLF, trailers in all).
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16384
MAX_SIZE_DIGITS = 15


@dataclass
class Chunked:
    end: int  # offset just past the body's final CRLF
    data: bytes  # the decoded body
    trailers: list[bytes]  # trailer field lines as received


def parse_chunked(buf: bytes, pos: int = 0) -> Chunked | None:
    """Parse a chunked body strictly from buf[pos:]: the result, None if it is incomplete (a
    prefix of something valid, as far as this can tell), or Malformed."""
    out = []
    while True:
        line, pos = _line(buf, pos, MAX_CHUNK_LINE)
        if line is None:
            return None
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise Malformed(f"invalid chunk-size line {line[:60]!r}")
        digits = match.group(1).lstrip(b"0")
        if len(digits) > MAX_SIZE_DIGITS:
            raise Malformed(f"chunk size past {MAX_SIZE_DIGITS} hex digits")
        size = int(digits or b"0", 16)
        if size == 0:
            break
        if len(buf) < pos + size + 2:
            tail = buf[pos + size :]
            if tail and not CRLF.startswith(tail):
                raise Malformed("chunk data not followed by CRLF")
            return None
        out.append(buf[pos : pos + size])
        if buf[pos + size : pos + size + 2] != CRLF:
            raise Malformed("chunk data not followed by CRLF")
        pos += size + 2
    trailers: list[bytes] = []
    total = 0
    while True:
        line, pos = _line(buf, pos, MAX_TRAILERS)
        if line is None:
            return None
        if not line:
            return Chunked(pos, b"".join(out), trailers)
        total += len(line) + 2
        if total > MAX_TRAILERS:
            raise Malformed("trailers over 16 KiB")
        if _FIELD_LINE.fullmatch(line) is None:
            raise Malformed(f"invalid trailer field line {line[:60]!r}")
        trailers.append(line)


def _line(buf: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
    """(the CRLF-ended line at pos without its CRLF, the offset past it); (None, pos) if the line
    is not complete yet. A bare CR or LF is Malformed (RFC 9112 §2.2)."""
    nl = buf.find(b"\n", pos)
    if nl < 0:
        if len(buf) - pos > limit:
            raise Malformed("line too long")
        cr = buf.find(b"\r", pos)
        if 0 <= cr < len(buf) - 1:
            raise Malformed("bare CR")
        return None, pos
    if nl - pos + 1 > limit:
        raise Malformed("line too long")
    if nl == pos or buf[nl - 1] != 0x0D:
        raise Malformed("bare LF")
    line = buf[pos : nl - 1]
    if b"\r" in line:
        raise Malformed("bare CR")
    return line, nl + 1


def is_canonical(forwarded: bytes) -> str | None:
    """Why `forwarded` is not what the policy says a request body leaves as (chunk sizes in
    lower-case canonical hex, no extensions), or None."""
    pos = 0
    while True:
        nl = forwarded.find(b"\r\n", pos)
        if nl < 0:
            return None  # a prefix: checked as far as it goes
        line = forwarded[pos:nl]
        if not re.fullmatch(rb"0|[1-9a-f][0-9a-f]*", line):
            return f"chunk line {line[:40]!r} is not in canonical hex without extensions"
        size = int(line, 16)
        pos = nl + 2
        if size == 0:
            return None
        pos += size + 2


# ------------------------------------------------------------------------------ level 1: heads
@dataclass(frozen=True)
class HeadOutcome:
    accepted: bool
    status: int = 0
    method: bytes = b""
    target: bytes = b""
    length: int = 0
    keep_alive: bool = False
    escaped: str = ""  # an exception other than HttpError: its traceback

    def summary(self) -> str:
        if self.escaped:
            return "escaped " + self.escaped.strip().splitlines()[-1]
        if self.accepted:
            return f"accepted {self.method!r} {self.target!r} length={self.length} keep_alive={self.keep_alive}"
        return f"refused {self.status}"


def parse_outcome(parser: HeadParser, raw: bytes) -> HeadOutcome:
    try:
        head = parser.parse(raw)
    except HttpError as exc:
        return HeadOutcome(False, status=exc.status)
    except Exception:  # the point: anything else escaping is the defect
        return HeadOutcome(False, escaped=traceback.format_exc())
    return HeadOutcome(
        True, method=head.method, target=head.target, length=head.length, keep_alive=head.keep_alive
    )


_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.[01]")
#: uri-host [":" port]: an IP-literal in brackets, or reg-name / IPv4address (RFC 3986 §3.2.2).
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?"
)
_TARGET_BYTE = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]*")


def head_violations(raw: bytes) -> list[str]:
    """Rules of the acceptance policy a head breaks, read from its bytes alone: an independent
    check (not fastlb's code) of what both parsers must refuse. Partial on purpose: only rules
    that a few lines can check without doubt."""
    found = []
    body = raw[:-4] if raw.endswith(b"\r\n\r\n") else raw
    while body.startswith(CRLF):  # empty lines before the request line are ignored (§2.2)
        body = body[2:]
    if body.replace(CRLF, b"").find(b"\n") >= 0:
        found.append("bare LF (RFC 9112 §2.2)")
    if body.replace(CRLF, b"").find(b"\r") >= 0:
        found.append("bare CR (RFC 9112 §2.2)")
    lines = body.split(CRLF)
    line, fields = lines[0], lines[1:]
    if _REQUEST_LINE.fullmatch(line) is None:
        found.append("request-line is not method SP target SP HTTP/1.x (RFC 9112 §3)")
        return found
    method, target, version = line.split(b" ")
    if method == b"CONNECT":
        found.append("CONNECT (policy: 405)")
    if _TARGET_BYTE.fullmatch(target) is None or re.search(rb"%(?![0-9A-Fa-f]{2})", target):
        found.append("request-target bytes outside RFC 3986 (RFC 9112 §3.2)")
    found += _target_form(method, target)
    hosts: list[bytes] = []
    cls: list[bytes] = []
    tes: list[bytes] = []
    expects: list[bytes] = []
    for f in fields:
        if f[:1] in (b" ", b"\t"):
            found.append("obs-fold (RFC 9112 §5.2)")
            continue
        name, colon, value = f.partition(b":")
        if not colon or re.fullmatch(_TOKEN, name) is None:
            found.append("field-name not a token or whitespace before the colon (RFC 9112 §5.1)")
            continue
        if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
            found.append("CTL in a field value (RFC 9110 §5.5)")
        low = name.lower()
        if low == b"host":
            hosts.append(value.strip(b" \t"))
        if low == b"content-length":
            cls.append(value.strip(b" \t"))
        elif low == b"transfer-encoding":
            tes.append(value)
        elif low == b"expect":
            expects += [e.strip(b" \t").lower() for e in value.split(b",")]
    if version == b"HTTP/1.1" and any(e != b"100-continue" for e in expects):
        found.append("an expectation other than 100-continue (RFC 9110 §10.1.1: 417)")
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is not None and hosts:
        if _authority(absolute[1], absolute[2]) != _authority(absolute[1], hosts[0]):
            found.append("Host differs from the absolute-form authority (RFC 9112 §3.2.2)")
    elif absolute is not None and version == b"HTTP/1.1":
        found.append("absolute-form without Host in HTTP/1.1 (policy)")
    if len(hosts) > 1 or (not hosts and version == b"HTTP/1.1"):
        found.append(f"{len(hosts)} Host fields in {version.decode()} (RFC 9112 §3.2)")
    if any(_HOST.fullmatch(h) is None for h in hosts):
        found.append("Host is not uri-host [':' port] (RFC 9110 §7.2, RFC 3986 §3.2.2)")
    if cls and tes:
        found.append("Content-Length with Transfer-Encoding (RFC 9112 §6.3)")
    if len(cls) > 1 or any(re.fullmatch(rb"0*[0-9]{1,18}", v) is None for v in cls):
        found.append("Content-Length not one 1*DIGIT, 18 significant digits (RFC 9110 §8.6)")
    if tes and version == b"HTTP/1.0":
        found.append("Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1)")
    if tes and [c.strip(b" \t").lower() for c in b",".join(tes).split(b",")] != [b"chunked"]:
        found.append("Transfer-Encoding is not exactly chunked (RFC 9112 §6.3)")
    return found


#: absolute-form (RFC 9112 §3.2.2) as the policy allows it: scheme http or https, an authority
#: without userinfo, then path-abempty and query.
_ABSOLUTE = re.compile(rb"(?i:(https?))://([^/?@]*)((?:/[^?]*)?(?:\?.*)?)")


def _authority(scheme: bytes, authority: bytes) -> tuple[bytes, bytes]:
    """(host lower-cased, port with the scheme's default for a missing or empty one)."""
    host, colon, port = authority.rpartition(b":")
    if not colon or b"]" in port:
        host, port = authority, b""
    default = b"443" if scheme.lower() == b"https" else b"80"
    return host.lower(), port or default


def _target_form(method: bytes, target: bytes) -> list[str]:
    """The request-target forms the policy accepts (RFC 9112 §3.2): origin-form for every
    method, absolute-form http(s) without userinfo, asterisk-form for OPTIONS only."""
    if target.startswith(b"/"):
        return []
    if target == b"*":
        return [] if method == b"OPTIONS" else ["asterisk-form with a method other than OPTIONS"]
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is not None and absolute[2]:
        return []
    return ["request-target not origin-form, absolute-form http(s) or OPTIONS * (RFC 9112 §3.2)"]


def judge_head(parsers: dict[str, HeadParser], raw: bytes, valid: bool) -> list[str]:
    """Problems with how the parsers treat one head: an escape, a status that is not a client
    error, a disagreement, a policy violation accepted, or (`valid`: the input was not mutated)
    a valid request refused."""
    problems = []
    outcomes = {kind: parse_outcome(p, raw) for kind, p in parsers.items()}
    for kind, out in outcomes.items():
        if out.escaped:
            problems.append(f"{kind}: exception escaped parse({show(raw)}):\n{out.escaped}")
        elif not out.accepted and out.status not in CLIENT_STATUSES:
            problems.append(f"{kind}: HttpError status {out.status} for {show(raw)}")
        elif out.accepted:
            for rule in head_violations(raw):
                problems.append(f"{kind}: accepted a head that breaks the rule {rule}; {show(raw)}")
        if valid and not out.accepted and not out.escaped:
            problems.append(f"{kind}: refused a valid request ({out.status}): {show(raw)}")
    seen = {out.summary() for out in outcomes.values()}
    if len(seen) > 1:
        problems.append(
            "parsers disagree on "
            + show(raw)
            + ": "
            + "; ".join(f"{k} {o.summary()}" for k, o in outcomes.items())
        )
    return problems


# ---------------------------------------------------------------------- level 2: chunked framer
@dataclass
class FramerRun:
    done_at: int  # offset in the whole input just past the body's end, -1 if not reached
    forwarded: bytes  # what the framer says to forward (the input itself for the old API)
    status: int  # the HttpError's status, 0 if none
    escaped: str  # an exception other than HttpError
    rewrites: bool = False  # the framer has the request-side API (it says what to forward)


def run_framer(pieces: list[bytes]) -> FramerRun:
    """Feed a chunked request body to fastlb's request-side framer (RequestChunks: each line
    validated before it is forwarded, the body re-encoded) piece by piece."""
    from fastlb.http.framing import RequestChunks

    framer = RequestChunks()
    rewrites = True
    forwarded: list[bytes] = []
    offset = 0
    try:
        for piece in pieces:
            forwarded.append(bytes(framer.relay(piece)))
            if framer.done:
                return FramerRun(offset + framer.end, b"".join(forwarded), 0, "", rewrites)
            offset += len(piece)
    except HttpError as exc:
        return FramerRun(-1, b"".join(forwarded), exc.status, "", rewrites)
    except Exception:  # the point: anything else escaping is the defect
        return FramerRun(-1, b"".join(forwarded), 0, traceback.format_exc(), rewrites)
    return FramerRun(-1, b"".join(forwarded), 0, "", rewrites)


def judge_chunked(data: bytes, pieces: list[bytes]) -> list[str]:
    """Problems with the framer on one body: an escape; a split that changes the result; a
    result that differs from the strict parser's (accepting what it refuses, refusing what
    it accepts, another end); forwarded bytes the strict parser does not read as the same
    body, or not re-encoded canonically."""
    whole = run_framer([data])
    split = run_framer(pieces)
    problems = []
    for name, run in (("whole", whole), ("split", split)):
        if run.escaped:
            problems.append(
                f"framer ({name}) let an exception escape on {show(data)}:\n{run.escaped}"
            )
    if problems:
        return problems
    if (whole.done_at, whole.status) != (split.done_at, split.status) or (
        whole.done_at >= 0 and whole.forwarded != split.forwarded
    ):
        problems.append(
            f"framer result depends on the split: whole {whole.done_at}/{whole.status}, "
            f"split {[len(p) for p in pieces]} {split.done_at}/{split.status} on {show(data)}"
        )
    try:
        strict: Chunked | str | None = parse_chunked(data)
    except Malformed as exc:
        strict = str(exc)
    if isinstance(strict, str):
        if whole.status == 0:
            got = "accepted it" if whole.done_at >= 0 else "waits for more"
            problems.append(f"framer {got}, strict parser refuses ({strict}): {show(data)}")
    elif strict is None:
        if whole.done_at >= 0:
            problems.append(
                f"framer ended at {whole.done_at}, strict parser needs more: {show(data)}"
            )
    else:
        if whole.status:
            problems.append(f"framer refused ({whole.status}) a valid chunked body: {show(data)}")
        elif whole.done_at != strict.end:
            problems.append(
                f"framer ended at {whole.done_at}, strict parser at {strict.end}: {show(data)}"
            )
        else:
            problems += judge_forwarded(whole.forwarded, strict, data)
    for name, run in (("whole", whole), ("split", split)):
        if run.rewrites and run.done_at < 0 and run.forwarded:
            # Refused or waiting: what left so far must still be a valid start of a body
            # (RFC 9112 §7.1; the policy validates a chunk line before forwarding any of it).
            try:
                parse_chunked(run.forwarded)
            except Malformed as exc:
                problems.append(
                    f"framer ({name}) forwarded invalid bytes ({exc}) before refusing or "
                    f"waiting: {show(run.forwarded)} from {show(data)}"
                )
        if run.status and run.status != 400:
            problems.append(f"framer refused with {run.status}, not 400: {show(data)}")
    return problems


def judge_forwarded(forwarded: bytes, expected: Chunked, data: bytes) -> list[str]:
    try:
        again = parse_chunked(forwarded)
    except Malformed as exc:
        return [
            f"forwarded bytes are not strict chunked ({exc}): {show(forwarded)} from {show(data)}"
        ]
    if again is None or again.end != len(forwarded):
        return [
            f"forwarded bytes are not one whole chunked body: {show(forwarded)} from {show(data)}"
        ]
    if (again.data, again.trailers) != (expected.data, expected.trailers):
        return [f"forwarded body differs from the input's: {show(forwarded)} from {show(data)}"]
    if forwarded != data[: expected.end]:  # re-encoded (the new API): canonical, no extensions
        why = is_canonical(forwarded)
        if why is not None:
            return [f"forwarded re-encoding: {why}: {show(forwarded)}"]
    return []


# ------------------------------------------------------------------- level 3: the whole exchange
@dataclass
class Expected:
    method: bytes
    body: bytes  # decoded
    local: bool  # answered by fastlb itself (an admin route), not forwarded


@dataclass
class Predicted:
    """What fastlb must do with one connection's bytes under the policy: answer these
    requests (forwarded or, for an admin route, its own), then end as `end`: "closed" (the
    last request or the input ended cleanly), "incomplete" (the input stopped inside a
    message), or "refused" with `status`."""

    requests: list[Expected] = field(default_factory=list)
    end: str = "closed"
    status: int = 0
    why: str = ""
    statuses: frozenset[int] = frozenset()  # when more than one status is right


#: fastlb's own routes on the data port that the generator uses (read-only: GET /rep lists the
#: replicas; other methods get 405), answered by fastlb, never forwarded.
LOCAL_PATHS = frozenset({b"/rep"})


def _seen_before(rest: bytes, status: int) -> frozenset[int]:
    """Other statuses right for a head that breaks more than one rule, when it arrives in
    pieces (level 3 splits its sends): fastlb refuses what it can see first, so a request line
    refused on its own (405 CONNECT, 505 version, 400) may be answered before a later field's
    problem, and a malformed field line (400) before the head grew past a limit (431)."""
    first = re.split(rb"\r\n|\n|\r", rest, maxsplit=1)[0]
    seen: set[int] = set()
    try:
        request_line(first)
    except HttpError as exc:
        seen.add(exc.status)
    try:
        # A split before the line's CRLF: a control character is refused (400) at once,
        # before the version (505) or the method (405) further along could be read.
        check_partial(first)
    except HttpError as exc:
        seen.add(exc.status)
    if status == 431:
        seen.add(400)
    return frozenset(seen)


def predict(data: bytes, parser: HeadParser, max_header_bytes: int = 16384) -> Predicted:
    """The policy's reading of a connection's bytes, with fastlb's own head parser for the
    head (level 1 checks the parser itself) and the strict parser above for chunked bodies."""
    out = Predicted()
    pos = 0
    while True:
        while data.startswith(CRLF, pos):  # RFC 9112 §2.2: empty lines before a request
            pos += 2
        rest = data[pos:]
        if not rest:
            return out
        end = rest.find(b"\r\n\r\n")
        scan = rest if end < 0 else rest[: end + 4]
        if end < 0 and scan.endswith(b"\r"):
            scan = scan[:-1]  # a CR that the next byte may make a line end
        bare = re.search(rb"(?<!\r)\n|\r(?!\n)", scan) is not None
        large = (end < 0 and len(rest) > max_header_bytes) or end + 4 > max_header_bytes
        if bare or large:
            # Both at once: the policy does not say which is seen first, either status will do.
            out.end, out.status = "refused", 400 if bare else 431
            out.why = "bare CR or LF in the head" if bare else "head too large"
            out.statuses = frozenset({400, 431} if bare and large else {out.status})
            out.statuses |= _seen_before(rest, out.status)
            return out
        if end < 0:
            out.end = "incomplete"
            return out
        try:
            head = parser.parse(rest[: end + 4])
        except HttpError as exc:
            out.end, out.status, out.why = "refused", exc.status, exc.message
            out.statuses = frozenset({exc.status}) | _seen_before(rest, exc.status)
            return out
        pos += end + 4
        local = head.target.split(b"?", 1)[0] in LOCAL_PATHS
        if local and head.length == CHUNKED:
            out.end, out.status, out.why = "refused", 411, "a chunked admin request"
            return out
        if head.length == CHUNKED:
            try:
                body = parse_chunked(data, pos)
            except Malformed as exc:
                out.end, out.status, out.why = "refused", 400, str(exc)
                return out
            if body is None:
                out.end = "incomplete"
                return out
            pos = body.end
            out.requests.append(Expected(head.method, body.data, local))
        else:
            if len(data) - pos < head.length:
                out.end = "incomplete"
                return out
            out.requests.append(Expected(head.method, data[pos : pos + head.length], local))
            pos += head.length
        if not head.keep_alive:
            return out


@dataclass
class Response:
    status: int
    fields: dict[bytes, bytes]
    body: bytes

    @property
    def recorder(self) -> tuple[int, int] | None:
        """(conn, seq) of the recorder's answer; None for fastlb's own response."""
        value = self.fields.get(b"x-recorder")
        if value is None:
            return None
        conn, seq = value.split()
        return int(conn), int(seq)


def split_responses(data: bytes, bodyless: set[int]) -> tuple[list[Response], bytes]:
    """The responses in what a client received (Content-Length framed, as fastlb's and the
    recorder's are; interim 1xx ones left out), and any bytes left over. `bodyless`: the
    indexes (among final responses) of answers to HEAD, which have no body."""
    out: list[Response] = []
    pos = 0
    while pos < len(data):
        start = pos
        end = data.find(b"\r\n\r\n", pos)
        if end < 0 or not data.startswith(b"HTTP/1.1 ", pos):
            break
        lines = data[pos:end].split(CRLF)
        try:
            status = int(lines[0][9:12])
        except ValueError:
            break
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        pos = end + 4
        if 100 <= status < 200:
            continue
        length = int(fields.get(b"content-length", b"0"))
        resp = Response(status, fields, b"")
        if len(out) in bodyless and (resp.recorder is not None or status < 400):
            length = 0
        if len(data) - pos < length:
            return out, data[start:]
        resp.body = data[pos : pos + length]
        pos += length
        out.append(resp)
    return out, data[pos:]


def exchange(
    port: int,
    pieces: list[bytes],
    answers: int | None = None,
    bodyless: set[int] | None = None,
    timeout: float = 2.0,
    pause: float = 0.001,
) -> tuple[bytes, str]:
    """Send `pieces` one by one on a fresh connection, then read until the server closes it:
    (what came back, how it ended: "closed", "reset" or "timeout" after `timeout` s).

    The client half-closes once `answers` final responses have come (at once if None or 0):
    fastlb answers the requests it has, then closes when it sees the end of the stream, so a
    half-close sent earlier would end pipelined requests still unanswered (see the report:
    it closes on EOF without reading what it has buffered)."""
    deadline = time.monotonic() + timeout
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        open_ = True
        try:
            for i, piece in enumerate(pieces):
                if i:
                    time.sleep(pause)  # each piece its own read on the other side
                sock.sendall(piece)
            if not answers:
                sock.shutdown(socket.SHUT_WR)
                open_ = False
        except OSError:
            open_ = False  # the server closed early (a refusal): read what it said
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got, "timeout"
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return got, "timeout"
            except ConnectionResetError:
                return got, "reset"
            if not chunk:
                return got, "closed"
            got += chunk
            if open_ and answers and len(split_responses(got, bodyless or set())[0]) >= answers:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                open_ = False


class RecorderLog(LogTail):
    """Reads the recorder's JSON lines written since the last call, every one (heartbeats too:
    the fuzzer attributes lines by its own probe requests)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, ignore=())
        self.offset = 0

    def new(self) -> list[dict[str, Any]]:
        return self.read()


PROBE = b"GET /__fuzz_probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
TRACEBACK_MARKS = ("Traceback", "Task exception was never retrieved", "Exception in callback")


@dataclass
class Verdict:
    problems: list[str]
    forwarded: int  # requests the recorder framed for this input
    refused: int  # fastlb's status if it refused, else 0
    ending: str  # how the connection ended


def judge_exchange(
    port: int, log: RecorderLog, inp: Input, parser: HeadParser, *, probe: bool = True
) -> Verdict:
    """Run one input through fastlb and judge it: the connection ends within 2 s; what the
    recorder framed is what the policy forwards (same count, methods and bodies) and nothing
    it could not frame, apart from a message fastlb cut off; the client got the recorder's
    answer to each forwarded request, and at most one more response, a 4xx from fastlb, with a
    close; fastlb then still serves a normal request (`probe`).

    fastlb's heartbeats (GET /heartbeat) and the probe reach the recorder too; they are left
    out. The probe also makes sure the recorder's late lines (an error it logs when fastlb
    closes a connection mid-message) are read with this input, not the next one."""
    expected = predict(inp.data, parser)
    heads = {i for i, r in enumerate(expected.requests) if r.method == b"HEAD"}
    received, ending = exchange(port, inp.pieces, len(expected.requests), heads)
    problems: list[str] = []
    entries = log.new()
    if probe:
        status = probe_status(port)
        if status != 200:
            problems.append(f"fastlb no longer serves a normal request after it (got {status})")
        entries += log.new()
    framed: list[dict[str, Any]] = []
    errors: list[str] = []
    for entry in entries:
        if "error" in entry:
            errors.append(entry["error"])
        elif entry.get("target") not in ("/__fuzz_probe", "/heartbeat"):
            framed.append(entry)
    responses, leftover = split_responses(received, heads)
    where = f" (input {show(inp.data)}, mutations {inp.mutations})"
    if ending == "timeout":
        problems.append(f"no close within 2 s, {len(responses)} responses" + where)
    if leftover:
        problems.append(f"response bytes that are not a whole response: {show(leftover)}" + where)
    for e in errors:
        if not e.startswith("eof") or expected.end not in ("incomplete", "refused"):
            problems.append(f"the recorder could not frame what fastlb forwarded: {e}" + where)
    got = [(e["method"].encode("latin-1"), e["body_len"], e["body_sha256"]) for e in framed]
    forwarded = [r for r in expected.requests if not r.local]
    want = [(r.method, len(r.body), hashlib.sha256(r.body).hexdigest()) for r in forwarded]
    if got != want:
        problems.append(
            "the requests forwarded differ from the policy's: forwarded "
            f"{[(m, n) for m, n, _ in got]}, the policy forwards "
            f"{[(m, n) for m, n, _ in want]} then {expected.end} {expected.status} {expected.why}"
            + where
        )
    for entry in framed:
        problems += [f"forwarded head: {why}" + where for why in forwarded_head_problems(entry)]
    answered = [r.recorder for r in responses if r.recorder is not None]
    if answered != [(e["conn"], e["seq"]) for e in framed]:
        problems.append(
            f"a desync: the client got the recorder's answers {answered} for requests "
            f"{[(e['conn'], e['seq']) for e in framed]}" + where
        )
    # The answers in order: the recorder's for a forwarded request, fastlb's own (200, or 405
    # for another method) for an admin route; then at most one more, fastlb's refusal.
    n = len(expected.requests)
    for i, (resp, req) in enumerate(zip(responses, expected.requests, strict=False)):
        if req.local != (resp.recorder is None) or (req.local and resp.status not in (200, 405)):
            what = "fastlb's own" if resp.recorder is None else "the recorder's"
            problems.append(
                f"answer {i} is {what} {resp.status}, the policy "
                + ("answers it itself" if req.local else "forwards it")
                + where
            )
    if len(responses) < n and ending != "reset":
        problems.append(f"{n - len(responses)} of {n} requests got no answer" + where)
    extra = responses[n:]
    refused = extra[-1].status if extra else 0
    if len(extra) > 1 or any(r.recorder is not None for r in extra):
        problems.append(f"more answers than requests: {[r.status for r in extra]}" + where)
    elif extra and expected.end == "closed":
        problems.append(f"fastlb refused ({refused}) what the policy forwards" + where)
    elif extra:
        if refused not in CLIENT_STATUSES:
            problems.append(f"fastlb answered {refused}" + where)
        if extra[-1].fields.get(b"connection") != b"close":
            problems.append(f"a {refused} without Connection: close" + where)
    if not inp.mutations and expected.end == "refused":
        problems.append(
            f"a valid request refused ({expected.status} {expected.why}): the generator's "
            "unmutated requests all follow RFC 9112 and the policy" + where
        )
    right = expected.statuses or {expected.status}
    if expected.end == "refused" and ending != "reset" and refused not in right:
        problems.append(
            f"refused with {refused or 'nothing'}, the policy refuses with "
            f"{expected.status} ({expected.why})" + where
        )
    return Verdict(problems, len(framed), refused, ending)


#: What a proxy must not forward (RFC 9110 §7.6.1), and the policy drops.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)


def forwarded_head_problems(entry: dict[str, Any]) -> list[str]:
    """What the recorder saw that the policy never forwards: a hop-by-hop field, an HTTP/1.1
    request without exactly one Host, a target not in origin-form (absolute-form is forwarded
    in origin-form, RFC 9112 §3.2.1) or `*`."""
    headers = entry["headers"]
    if ["", ""] in headers:
        headers = headers[: headers.index(["", ""])]  # the trailer fields follow
    names = [name.lower() for name, _ in headers]
    hop = HOP_BY_HOP & set(names)
    fields = [(name.lower(), value) for name, value in headers]
    if (
        entry["method"] == "GET"
        and entry["version"] == "HTTP/1.1"
        and ("connection", "upgrade") in fields
        and ("upgrade", "websocket") in fields
        and names.count("connection") == names.count("upgrade") == 1
    ):
        hop -= {"connection", "upgrade"}  # the WebSocket upgrade: the one forwarded (issue 13)
    found = [f"a hop-by-hop field forwarded: {n!r}" for n in sorted(hop)]
    if entry["version"] == "HTTP/1.1" and names.count("host") != 1:
        found.append(f"{names.count('host')} Host fields in an HTTP/1.1 request")
    target = entry["target"]
    if not target.startswith("/") and not (target == "*" and entry["method"] == "OPTIONS"):
        found.append(f"a target not in origin-form: {target[:80]!r}")
    return found


def probe_status(port: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        received, _ = exchange(port, [PROBE], timeout=5.0)
        return int(received[9:12])
    return 0


def tracebacks(text: str) -> list[str]:
    """The lines of fastlb's stderr that show an exception escaped somewhere."""
    return [line for line in text.splitlines() if any(m in line for m in TRACEBACK_MARKS)]


# ------------------------------------------------------------------- the hypothesis strategies
@st.composite
def heads(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A (mutated) request head, and the mutations applied ([] : a valid request)."""
    return gen_head(HypothesisDraw(draw))


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[str]]:
    """A (mutated) chunked body with what may follow it, and its segments."""
    return gen_chunked_body(HypothesisDraw(draw))


@st.composite
def inputs(draw: st.DrawFn) -> Input:
    """What a client sends on one connection, in segments."""
    return gen_input(HypothesisDraw(draw))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A valid request, unmutated."""
    return gen_request(HypothesisDraw(draw))
