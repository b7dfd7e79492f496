"""Finding where an HTTP/1.1 body ends without copying it.

The proxy relays body bytes exactly as received, so it never decodes a body: it only needs the
offset where the message ends (to keep pipelined requests apart and to know when a pooled
backend connection is free again). A Content-Length body is counted; a chunked body is
scanned chunk header by chunk header, jumping over the data, so a large body costs a few
Python steps per chunk, not per byte. Malformed chunk framing is an `HttpError`: 400 for a
client's request, and the caller maps it to 502 for a replica's response.

A replica's chunked response is relayed as received (`ChunkedFramer.feed` only finds its
end). A client's chunked request is stricter (`RequestChunks.relay`): each line is validated
before any byte of it leaves, and the body is forwarded re-encoded, so a lenient replica can
never read a chunk line another way than fastlb did (the "funky chunks" desync class).
"""

from __future__ import annotations

import re
from typing import Final

from fastlb.http.accept import FIELD_RE, TCHAR
from fastlb.http.errors import HttpError

#: A chunk-size line (size, extensions, CRLF) longer than this is refused, like a header line.
MAX_CHUNK_LINE: Final = 4096
#: Total trailer bytes accepted after the last chunk.
MAX_TRAILERS: Final = 16384
#: 16 significant hex digits already mean 16 EiB; more is an overflow attempt (responses).
MAX_SIZE_DIGITS: Final = 16

_HEX: Final = frozenset(b"0123456789abcdefABCDEF")

# Chunked scanner states.
_SIZE: Final = 0  # reading a chunk-size line
_DATA: Final = 1  # skipping `remaining` data bytes
_DATA_CRLF: Final = 2  # expecting the CRLF after the data
_TRAILER: Final = 3  # reading trailer lines until an empty one
_DONE: Final = 4


class ChunkedFramer:
    """Tracks a chunked body across arbitrary splits of the byte stream.

    `feed(data, pos)` consumes `data[pos:]` and returns the offset just past the body's final
    CRLF when the body ends inside `data`, or -1 when it needs more bytes. Partial lines are
    kept in a small buffer; chunk data is never buffered.
    """

    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes, pos: int = 0) -> int:
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                got = self._read_line(data, pos)
                if got < 0:
                    return -1
                pos, line = got, self._take_line()
                if line:
                    raise HttpError(400, "chunk data is not followed by CRLF")
                self._state = _SIZE
            elif state == _SIZE:
                got = self._read_line(data, pos)
                if got < 0:
                    return -1
                pos = got
                size = _parse_chunk_size(self._take_line())
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._remaining = size
                    self._state = _DATA
            elif state == _TRAILER:
                got = self._read_line(data, pos)
                if got < 0:
                    return -1
                pos, line = got, self._take_line()
                if not line:
                    self._state = _DONE
                    return pos
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > MAX_TRAILERS or b":" not in line:
                    raise HttpError(400, "malformed or oversize chunked trailer")
            else:
                return pos
        return pos if self._state == _DONE else -1

    def _read_line(self, data: bytes, pos: int) -> int:
        """Append up to the next LF to the line buffer; the offset past it, or -1 if none yet."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self._line += data[pos:]
            if len(self._line) > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk-size line too long")
            return -1
        self._line += data[pos : nl + 1]
        if len(self._line) > MAX_CHUNK_LINE:
            raise HttpError(400, "chunk-size line too long")
        return nl + 1

    def _take_line(self) -> bytes:
        line = self._line
        self._line = b""
        if not line.endswith(b"\r\n"):
            raise HttpError(400, "chunked framing line does not end in CRLF")
        return line[:-2]


def _parse_chunk_size(line: bytes) -> int:
    size_part = line.split(b";", 1)[0].rstrip(b" \t")
    significant = size_part.lstrip(b"0")  # leading zeros are allowed (RFC 9112 §7.1)
    if not size_part or len(significant) > MAX_SIZE_DIGITS or not _HEX.issuperset(size_part):
        shown = line[:40].decode("ascii", "backslashreplace")
        raise HttpError(400, f"invalid chunk size {shown!r}")
    return int(size_part, 16)


#: A request's chunk-size line (RFC 9112 §7.1): chunk-size, then chunk-ext =
#: *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ), then CRLF. Whitespace after
#: the size is allowed only before a ";" (`5 \r\n` is refused: the "funky chunks" class).
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN: Final = rb"[" + TCHAR + rb"]+"
_CHUNK_LINE: Final = re.compile(
    rb"0*([0-9A-Fa-f]*)(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*\r\n"
)
#: Significant hex digits a request chunk size may have: 15 (60 bits) cannot overflow a
#: 64-bit size in any replica's parser (a 16-digit `8000000000000005` wraps to 5 in some).
MAX_REQUEST_SIZE_DIGITS: Final = 15


class RequestChunks:
    """A client's chunked request body, validated line by line before any byte of a line is
    forwarded, and forwarded re-encoded (RFC 9112 §7.1): each size in canonical hex, chunk
    extensions dropped (§7.1.1: a recipient MUST ignore those it does not understand, and
    fastlb understands none), data bytes as received, trailer fields as received once each
    is a valid field line (§7.1.2). Whatever reaches the replica is thus framed the one way
    fastlb read it.

    `relay(data)` returns the bytes to forward for `data`; a line cut off at the end of
    `data` is held back until its end arrives. When the body ends inside `data`, `done` is
    set and `end` is the offset just past it (the rest is the next request). Bad framing is
    HttpError(400), and nothing of the piece it came in is returned.
    """

    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes", "done", "end")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0
        self.done = False
        self.end = 0

    def relay(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                out.append(data if pos == 0 and take == end else data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                # Exactly CRLF after the data: checked byte by byte, so a wrong byte is
                # refused at once rather than held as the start of a "line".
                need = b"\r\n"[len(self._line) :]
                got = data[pos : pos + len(need)]
                if not need.startswith(got):
                    raise HttpError(400, "chunk data is not followed by CRLF")
                pos += len(got)
                if len(got) < len(need):
                    self._line = b"\r"
                    break
                self._line = b""
                out.append(b"\r\n")
                self._state = _SIZE
            else:
                line_end = self._read_line(data, pos)
                if line_end < 0:
                    break
                pos = line_end
                line = self._line
                self._line = b""
                if state == _SIZE:
                    size = _request_chunk_size(line)
                    if size == 0:
                        out.append(b"0\r\n")
                        self._state = _TRAILER
                    else:
                        out.append(b"%x\r\n" % size)
                        self._remaining = size
                        self._state = _DATA
                else:  # _TRAILER
                    if line == b"\r\n":
                        out.append(line)
                        self._state = _DONE
                        self.done = True
                        self.end = pos
                        break
                    self._trailer_bytes += len(line)
                    if self._trailer_bytes > MAX_TRAILERS:
                        raise HttpError(400, f"chunked trailers over {MAX_TRAILERS} bytes")
                    _check_trailer(line)
                    out.append(line)
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _read_line(self, data: bytes, pos: int) -> int:
        """Add up to the next LF to the line buffer: the offset past it, or -1 (held)."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self._line += data[pos:]
            line = self._line
            if len(line) > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk-size or trailer line too long")
            cr = line.find(b"\r")
            if 0 <= cr < len(line) - 1:
                # A CR not followed by LF can never become a valid line end (RFC 9112 §2.2):
                # refused now, not when the body timeout ends the wait for an LF.
                raise HttpError(400, "a bare CR in a chunk-size or trailer line (RFC 9112 §2.2)")
            return -1
        self._line += data[pos : nl + 1]
        if len(self._line) > MAX_CHUNK_LINE:
            raise HttpError(400, "chunk-size or trailer line too long")
        return nl + 1


def _request_chunk_size(line: bytes) -> int:
    """The size of a request's chunk-size line (with its CRLF), or HttpError(400)."""
    m = _CHUNK_LINE.fullmatch(line)
    if m is None or m.end(1) == 0:  # end 0: not one hex digit (leading zeros count)
        shown = line[:40].decode("latin-1")
        raise HttpError(400, f"invalid chunk-size line {shown!r} (RFC 9112 §7.1)")
    digits = m.group(1)
    if len(digits) > MAX_REQUEST_SIZE_DIGITS:
        raise HttpError(400, f"chunk size over {MAX_REQUEST_SIZE_DIGITS} hex digits (overflow)")
    return int(digits, 16) if digits else 0


def _check_trailer(line: bytes) -> None:
    """A trailer line (with its CRLF) is a field line (RFC 9112 §7.1.2, §5)."""
    if not line.endswith(b"\r\n") or FIELD_RE.fullmatch(line, 0, len(line) - 2) is None:
        shown = line[:40].decode("latin-1")
        raise HttpError(400, f"invalid chunked trailer field {shown!r} (RFC 9112 §7.1.2)")
