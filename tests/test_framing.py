"""Chunked body framing: the end found across any split, bad framing refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlb.http.errors import HttpError
from fastlb.http.framing import MAX_CHUNK_LINE, ChunkedFramer

BODY = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n"


def feed_split(data: bytes, cuts: list[int]) -> tuple[int, int]:
    """Feed `data` in pieces; return (index of the piece where it ended, offset in it)."""
    framer = ChunkedFramer()
    bounds = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    for i, piece in enumerate(pieces):
        end = framer.feed(piece)
        if end >= 0:
            return i, end
    return -1, -1


def test_whole_body_ends_at_the_last_crlf() -> None:
    assert ChunkedFramer().feed(BODY + b"GET / HTTP/1.1\r\n") == len(BODY)


def test_incomplete_body_needs_more() -> None:
    framer = ChunkedFramer()
    assert framer.feed(BODY[:-1]) == -1
    assert framer.feed(BODY[-1:]) == 1
    assert framer.done


def test_feed_from_an_offset() -> None:
    data = b"HEAD" + BODY
    assert ChunkedFramer().feed(data, 4) == len(data)


@given(st.lists(st.integers(min_value=1, max_value=len(BODY) - 1), max_size=12))
def test_any_split_finds_the_same_end(cuts: list[int]) -> None:
    bounds = sorted({c for c in cuts if 0 < c < len(BODY)})
    index, offset = feed_split(BODY, cuts)
    last_start = ([0, *bounds])[index]
    assert last_start + offset == len(BODY)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8))
def test_any_body_round_trips(chunks: list[bytes]) -> None:
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    assert ChunkedFramer().feed(encoded) == len(encoded)


@pytest.mark.parametrize(
    "bad",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"-1\r\nab\r\n0\r\n\r\n",  # sign
        b"\r\n",  # empty size
        b"1\r\nab\r\n0\r\n\r\n",  # data longer than its size
        b"11111111111111111\r\n",  # 17 hex digits: overflow attempt
        b"2\nab\r\n0\r\n\r\n",  # bare LF
        b"0\r\nnot a trailer\r\n\r\n",
        b"0x10\r\n",
    ],
)
def test_bad_framing_is_refused(bad: bytes) -> None:
    with pytest.raises(HttpError) as info:
        ChunkedFramer().feed(bad)
    assert info.value.status == 400


def test_endless_size_line_is_refused() -> None:
    framer = ChunkedFramer()
    with pytest.raises(HttpError):
        for _ in range(MAX_CHUNK_LINE):
            framer.feed(b"1" * 64)


def test_large_chunk_is_skipped_not_buffered() -> None:
    framer = ChunkedFramer()
    size = 10 * 1024 * 1024
    assert framer.feed(b"%x\r\n" % size) == -1
    block = b"x" * 65536
    for _ in range(size // len(block)):
        assert framer.feed(block) == -1
    assert framer.feed(b"\r\n0\r\n\r\n") == 7
