"""From a request to a replica: the routing key, and the snapshot the proxy routes by.

A `Route` is immutable: the table and the upstreams it indexes are built together and swapped
in as one reference, so a request never sees a table from one generation and upstreams from
another (Pingora's model: discovery -> backends -> a selection table rebuilt on change).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from fastlb.errors import ConfigError
from fastlb.http.head import RequestHead
from fastlb.table import Table

__all__ = ["KeyFunction", "Route", "make_key"]

#: (request head, client ip) -> the bytes the table hashes.
KeyFunction = Callable[[RequestHead, bytes], bytes]

U = TypeVar("U")

_random: Final = random.random


def _random_id() -> bytes:
    # The spec's request id: a random 6-digit number, so identical requests still spread.
    # random() and a multiply: randrange is a Python function, several times slower.
    return b"%d" % (100000 + int(900000 * _random()))


def _by_request_id(head: RequestHead, client_ip: bytes) -> bytes:
    return head.key_value or _random_id()


def _by_path(head: RequestHead, client_ip: bytes) -> bytes:
    # The request target as sent, query included, like nginx's $request_uri.
    return head.target


def _by_client_ip(head: RequestHead, client_ip: bytes) -> bytes:
    return client_ip


def _by_header(head: RequestHead, client_ip: bytes) -> bytes:
    # Without the header there is nothing to be sticky to: spread like request_id does.
    return head.key_value or _random_id()


def _cookie_key(name: bytes) -> KeyFunction:
    prefix = name + b"="

    def by_cookie(head: RequestHead, client_ip: bytes) -> bytes:
        cookies = head.key_value
        if cookies:
            for part in cookies.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    return part[len(prefix) :]
        return _random_id()

    return by_cookie


def make_key(spec: str) -> tuple[bytes | None, KeyFunction]:
    """The header the parser must capture (lower-cased) and the key function for `spec`.

    `spec` is the config's routing.key: request_id, path, client_ip, header:NAME or cookie:NAME.
    """
    kind, _, name = spec.partition(":")
    if kind == "request_id" and not name:
        return b"x-request-id", _by_request_id
    if kind == "path" and not name:
        return None, _by_path
    if kind == "client_ip" and not name:
        return None, _by_client_ip
    if kind == "header" and name:
        return name.lower().encode("latin-1"), _by_header
    if kind == "cookie" and name:
        return b"cookie", _cookie_key(name.encode("latin-1"))
    raise ConfigError(
        f"routing key {spec!r}: expected request_id, path, client_ip, header:NAME or cookie:NAME"
    )


class Route(Generic[U]):
    """One generation of routing state: `upstreams[i]` serves `table.names[i]`.

    Immutable: its attributes are Final (mypy refuses an assignment), and a change builds a
    new Route. A plain class rather than a frozen dataclass, so that mypyc can compile it."""

    __slots__ = ("table", "upstreams")

    def __init__(self, table: Table, upstreams: tuple[U, ...]) -> None:
        self.table: Final = table
        self.upstreams: Final = upstreams

    def __repr__(self) -> str:
        return f"Route(table={self.table!r}, upstreams={self.upstreams!r})"

    @classmethod
    def build(cls, table: Table, by_name: dict[str, U]) -> Route[U]:
        return cls(table, tuple(by_name[name] for name in table.names))
