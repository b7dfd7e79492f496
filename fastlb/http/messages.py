"""Responses fastlb writes itself, with bodies in the classic spec's shape:
`{"message": "<Error> ...", "status": "failure"}`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus


def json_response(
    status: int, payload: object, *, close: bool = False, fields: bytes = b""
) -> bytes:
    """A complete JSON response; `fields` are more header lines, each ending in CRLF."""
    body = json.dumps(payload).encode()
    reason = HTTPStatus(status).phrase.encode()
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        reason,
        len(body),
    )
    if close:
        head += b"Connection: close\r\n"
    return head + fields + b"\r\n" + body


def error_response(status: int, message: str, *, close: bool = False, fields: bytes = b"") -> bytes:
    """An error in the spec's shape; `message` is prefixed with `<Error> ` as the spec does."""
    payload = {"message": f"<Error> {message}", "status": "failure"}
    return json_response(status, payload, close=close, fields=fields)


def method_not_allowed(method: bytes, target: bytes, allowed: Sequence[bytes]) -> bytes:
    """The 405 of every route fastlb answers itself (the metrics and status pages, the classic
    admin routes): the spec's error shape, naming the methods the route takes, and the Allow
    header RFC 9110 section 15.5.6 requires of a 405, so a client can tell what to send."""
    methods = ", ".join(m.decode("latin-1") for m in allowed)
    path = target.partition(b"?")[0].decode("latin-1")
    message = f"{method.decode('latin-1')} is not allowed on {path}; use {methods}"
    return error_response(405, message, fields=b"Allow: %s\r\n" % methods.encode("latin-1"))


def unknown_path_message(path: bytes) -> str:
    """The spec's words for a path the replicas do not serve (a 400)."""
    return f"'{path.decode('latin-1')}' endpoint does not exist in server replicas"
