"""A recording replica with a strict HTTP/1.1 request parser of its own.

Why: to prove that a proxy let nothing ambiguous through, the replica behind it must frame
what it receives without any leniency (h11 and httptools each accept things RFC 9112 lets a
recipient refuse). Whatever this server cannot frame exactly is logged as an error and the
connection is closed, so a lenient proxy shows up as an error line or as a request count
that differs from the responses its client received (a desync).

Command line (stable; the hostile corpus and the fuzzer use it):

    python tests/recorder.py --port P --log FILE [--name NAME]

It listens on 127.0.0.1:P and appends one JSON line to FILE per event, written and flushed
before the response is sent (so once a client holds the answer, its line is in the file):

    {"conn": n, "seq": k, "method": "GET", "target": "/", "version": "HTTP/1.1",
     "headers": [["Host", "a"], ...], "body_len": 0, "body_sha256": "<hex>"}
        a request framed: n counts connections from 1 in accept order, k counts requests
        within the connection from 1; names and values are the bytes received decoded as
        latin-1, values without their leading and trailing OWS; body_* are of the decoded
        body (chunked framing removed); trailer fields of a chunked body are appended to
        "headers" after a ["", ""] separator pair.
    {"conn": n, "error": "..."}
        bytes that cannot be framed; the connection is closed right after. An error that
        starts with "eof" means the peer closed the connection inside a message (a partial
        head or body); any other error means the bytes themselves were invalid.

A clean close between two messages logs nothing. Each request is answered `200 OK` with
`Content-Length`, `X-Served-By: NAME` (default "recorder"), `X-Recorder: n k` and the body
`conn=n seq=k\n` (none for HEAD), keep-alive unless the request says `Connection: close` or
is HTTP/1.0 without `Connection: keep-alive`. An HTTP/1.1 request with
`Expect: 100-continue` and a body first gets `100 Continue`.

The grammar enforced (RFC 9112 unless noted):
- every line ends in CRLF; a bare CR anywhere or an LF without CR is an error (§2.2);
  empty lines before a request line are skipped (§2.2);
- request-line = token SP 1*VCHAR SP ("HTTP/1.1" / "HTTP/1.0"), single spaces (§3);
- field-line = token ":" OWS *(VCHAR / obs-text / SP / HTAB) OWS; no whitespace before the
  colon (§5.1), no obs-fold (§5.2), no CTL or NUL in a value (RFC 9110 §5.5);
- framing (§6.3): Content-Length and Transfer-Encoding together, Transfer-Encoding in
  HTTP/1.0, codings other than exactly one "chunked", several Content-Length fields or one
  that is not 1*DIGIT (at most 18 significant digits): errors;
- chunked (§7.1): chunk-size = 1*HEXDIG (at most 15 significant digits), chunk-ext per
  §7.1.1 (BWS ";" BWS token [BWS "=" BWS (token / quoted-string)]), chunk data followed by
  exactly CRLF, trailer fields as field lines (at most 64 KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
from typing import IO

TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
REQUEST_LINE = re.compile(rb"([" + TCHAR + rb"]+) ([\x21-\x7e]+) (HTTP/1\.[01])")
FIELD_LINE = re.compile(rb"([" + TCHAR + rb"]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*["
    + TCHAR
    + rb"]+(?:[ \t]*=[ \t]*(?:["
    + TCHAR
    + rb"]+|"
    + QUOTED
    + rb"))?)*"
)
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(" + CHUNK_EXT + rb")")
DIGITS = re.compile(rb"[0-9]+")

MAX_LINE = 1 << 20
MAX_FIELDS = 1000
MAX_TRAILER_BYTES = 64 * 1024
MAX_LEADING_EMPTY = 16
READ_PIECE = 1 << 16


class FrameError(Exception):
    """The bytes cannot be framed as an HTTP/1.1 request (the message says why)."""


class CleanEof(Exception):
    """The peer closed between two messages."""


async def read_line(reader: asyncio.StreamReader, where: str, *, boundary: bool = False) -> bytes:
    """One CRLF-terminated line without its CRLF; bare CR or LF is an error (RFC 9112 §2.2)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if boundary and not exc.partial:
            raise CleanEof from None
        raise FrameError(f"eof in {where} after {len(exc.partial)} bytes") from None
    except asyncio.LimitOverrunError:
        raise FrameError(f"{where}: line longer than {MAX_LINE} bytes") from None
    if not line.endswith(b"\r\n"):
        raise FrameError(f"{where}: bare LF ends the line {line[:80]!r}")
    line = line[:-2]
    if b"\r" in line:
        raise FrameError(f"{where}: bare CR in {line[:80]!r}")
    return line


def field(line: bytes, where: str) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise FrameError(f"{where}: obs-fold or leading whitespace {line[:80]!r}")
    match = FIELD_LINE.fullmatch(line)
    if match is None:
        raise FrameError(f"{where}: invalid field line {line[:80]!r}")
    return match.group(1), match.group(2)


async def read_fields(
    reader: asyncio.StreamReader, where: str, limit: int | None = None
) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    size = 0
    while True:
        line = await read_line(reader, where)
        if not line:
            return fields
        size += len(line) + 2
        if limit is not None and size > limit:
            raise FrameError(f"{where}: more than {limit} bytes")
        fields.append(field(line, where))
        if len(fields) > MAX_FIELDS:
            raise FrameError(f"{where}: more than {MAX_FIELDS} fields")


def values(fields: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in fields if n.lower() == name]


def tokens(fields: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    found: set[bytes] = set()
    for value in values(fields, name):
        found.update(t.strip().lower() for t in value.split(b","))
    return found


async def read_exactly(
    reader: asyncio.StreamReader, size: int, digest: hashlib._Hash, where: str
) -> None:
    left = size
    while left:
        piece = await reader.read(min(left, READ_PIECE))
        if not piece:
            raise FrameError(f"eof in {where} with {left} of {size} bytes missing")
        digest.update(piece)
        left -= len(piece)


class Request:
    __slots__ = ("body_len", "close", "digest", "fields", "method", "target", "version")

    def __init__(
        self, method: bytes, target: bytes, version: bytes, fields: list[tuple[bytes, bytes]]
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields
        self.body_len = 0
        self.digest = hashlib.sha256()
        conn = tokens(fields, b"connection")
        self.close = b"close" in conn or (version == b"HTTP/1.0" and b"keep-alive" not in conn)


async def read_head(reader: asyncio.StreamReader) -> Request:
    line = await read_line(reader, "request line", boundary=True)
    skipped = 0
    while not line:  # RFC 9112 §2.2: empty lines before the request line are ignored
        skipped += 1
        if skipped > MAX_LEADING_EMPTY:
            raise FrameError("too many empty lines before the request line")
        line = await read_line(reader, "request line", boundary=True)
    match = REQUEST_LINE.fullmatch(line)
    if match is None:
        raise FrameError(f"invalid request line {line[:120]!r}")
    method, target, version = match.groups()
    return Request(method, target, version, await read_fields(reader, "header"))


def body_framing(req: Request) -> int | None:
    """The body's length, or None for chunked (RFC 9112 §6.3)."""
    te = values(req.fields, b"transfer-encoding")
    cl = values(req.fields, b"content-length")
    if te and cl:
        raise FrameError("both Content-Length and Transfer-Encoding")
    if te:
        if req.version == b"HTTP/1.0":
            raise FrameError("Transfer-Encoding in HTTP/1.0")
        codings = [c.strip().lower() for c in b",".join(te).split(b",")]
        if codings != [b"chunked"]:
            raise FrameError(f"Transfer-Encoding is not exactly chunked: {b', '.join(te)!r}")
        return None
    if len(cl) > 1:
        raise FrameError(f"{len(cl)} Content-Length fields")
    if cl:
        if DIGITS.fullmatch(cl[0]) is None or len(cl[0].lstrip(b"0")) > 18:
            raise FrameError(f"invalid Content-Length {cl[0][:40]!r}")
        return int(cl[0])
    return 0


async def read_chunked(reader: asyncio.StreamReader, req: Request) -> None:
    while True:
        line = await read_line(reader, "chunk size line")
        match = CHUNK_LINE.fullmatch(line)
        if match is None:
            raise FrameError(f"invalid chunk size line {line[:80]!r}")
        digits = match.group(1).lstrip(b"0")
        if len(digits) > 15:
            raise FrameError(f"chunk size overflow {match.group(1)[:40]!r}")
        size = int(digits or b"0", 16)
        if size == 0:
            break
        await read_exactly(reader, size, req.digest, "chunk data")
        req.body_len += size
        try:
            end = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            raise FrameError("eof after chunk data") from None
        if end != b"\r\n":
            raise FrameError(f"chunk data not followed by CRLF but {end!r}")
    trailers = await read_fields(reader, "trailer", MAX_TRAILER_BYTES)
    if trailers:
        req.fields = [*req.fields, (b"", b""), *trailers]


def response(req: Request, name: str, conn: int, seq: int) -> bytes:
    body = f"conn={conn} seq={seq}\n".encode()
    head = [
        b"HTTP/1.1 200 OK",
        b"Content-Type: text/plain",
        b"Content-Length: %d" % len(body),
        b"X-Served-By: " + name.encode(),
        b"X-Recorder: %d %d" % (conn, seq),
    ]
    if req.close:
        head.append(b"Connection: close")
    out = b"\r\n".join(head) + b"\r\n\r\n"
    return out if req.method == b"HEAD" else out + body


class Recorder:
    def __init__(self, log: IO[bytes], name: str) -> None:
        self.log = log
        self.name = name
        self.conns = 0

    def write(self, entry: dict[str, object]) -> None:
        self.log.write(json.dumps(entry).encode() + b"\n")
        self.log.flush()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        conn = self.conns
        seq = 0
        try:
            while True:
                try:
                    req = await read_head(reader)
                    length = body_framing(req)
                    expect = {v.strip().lower() for v in values(req.fields, b"expect")}
                    if req.version == b"HTTP/1.1" and b"100-continue" in expect and length != 0:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    if length is None:
                        await read_chunked(reader, req)
                    elif length:
                        await read_exactly(reader, length, req.digest, "body")
                        req.body_len = length
                except CleanEof:
                    return
                except FrameError as exc:
                    self.write({"conn": conn, "error": str(exc)})
                    return
                seq += 1
                self.write(
                    {
                        "conn": conn,
                        "seq": seq,
                        "method": req.method.decode("latin-1"),
                        "target": req.target.decode("latin-1"),
                        "version": req.version.decode("latin-1"),
                        "headers": [
                            [n.decode("latin-1"), v.decode("latin-1")] for n, v in req.fields
                        ],
                        "body_len": req.body_len,
                        "body_sha256": req.digest.hexdigest(),
                    }
                )
                writer.write(response(req, self.name, conn, seq))
                await writer.drain()
                if req.close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()


async def serve(port: int, log_path: str, name: str) -> None:
    with open(log_path, "ab") as log:
        recorder = Recorder(log, name)
        server = await asyncio.start_server(recorder.handle, "127.0.0.1", port, limit=MAX_LINE)
        async with server:
            await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--name", default="recorder")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.log, args.name))


if __name__ == "__main__":
    main()
