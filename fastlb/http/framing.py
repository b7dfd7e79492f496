"""Finding where an HTTP/1.1 body ends without copying it.

The proxy relays body bytes exactly as received, so it never decodes a body: it only needs the
offset where the message ends (to keep pipelined requests apart and to know when a pooled
backend connection is free again). A Content-Length body is counted; a chunked body is
scanned chunk header by chunk header, jumping over the data, so a large body costs a few
Python steps per chunk, not per byte. Malformed chunk framing is an `HttpError`: 400 for a
client's request, and the caller maps it to 502 for a replica's response.
"""

from __future__ import annotations

from typing import Final

from fastlb.http.errors import HttpError

#: A chunk-size line (size, extensions, CRLF) longer than this is refused, like a header line.
MAX_CHUNK_LINE: Final = 4096
#: Total trailer bytes accepted after the last chunk.
MAX_TRAILERS: Final = 16384
#: 16 hex digits already mean 16 EiB; more is an overflow attempt.
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
    if not size_part or len(size_part) > MAX_SIZE_DIGITS or not _HEX.issuperset(size_part):
        shown = line[:40].decode("ascii", "backslashreplace")
        raise HttpError(400, f"invalid chunk size {shown!r}")
    return int(size_part, 16)
