"""Responses fastlb writes itself, with bodies in the classic spec's shape:
`{"message": "<Error> ...", "status": "failure"}`."""

from __future__ import annotations

import json
from http import HTTPStatus


def json_response(status: int, payload: object, *, close: bool = False) -> bytes:
    body = json.dumps(payload).encode()
    reason = HTTPStatus(status).phrase.encode()
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        reason,
        len(body),
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def error_response(status: int, message: str, *, close: bool = False) -> bytes:
    """An error in the spec's shape; `message` is prefixed with `<Error> ` as the spec does."""
    payload = {"message": f"<Error> {message}", "status": "failure"}
    return json_response(status, payload, close=close)


def unknown_path_message(path: bytes) -> str:
    """The spec's words for a path the replicas do not serve (a 400)."""
    return f"'{path.decode('latin-1')}' endpoint does not exist in server replicas"
