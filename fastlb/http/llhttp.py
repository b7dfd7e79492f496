"""llhttp (through httptools) as fastlb uses it: a validator that calls no Python code.

The parsers are given no callback object with methods: a Python call per field or per piece
of URL would cost more than the rest of reading a head. fastlb reads what it needs from the
validated bytes itself (`head.read_request_head`, `response`).
"""

from __future__ import annotations

from typing import Final

from httptools import HttpRequestParser, HttpResponseParser


class _NoCallbacks:
    __slots__ = ()


_NO_CALLBACKS: Final = _NoCallbacks()


def request_validator() -> HttpRequestParser:
    """A fresh llhttp request parser with no callbacks."""
    return HttpRequestParser(_NO_CALLBACKS)


def response_validator() -> HttpResponseParser:
    """A fresh llhttp response parser with no callbacks."""
    return HttpResponseParser(_NO_CALLBACKS)
