"""The routing-table contract shared by the Maglev table and the classic ring.

A table is pure and immutable: built from (name, weight) members, it maps a key to a member
index. A change of members builds a new table, and the proxy swaps one reference to it, so a
request in flight never sees a half-built table and lookups need no lock.

Three implementations: `fastlb.maglev.MaglevTable` (the default: even load, little disruption),
`fastlb.ring.ClassicRing` (the course spec's ring, kept so that its behaviour can be reproduced
and compared) and `fastlb.ketama.KetamaTable` (nginx's `hash $key consistent`, to agree with
nginx). `fastlb.build.build_table` picks one from the configuration.

Imports run one way: this contract <- the tables (maglev, ring, ketama) <- the factory (build). This
module imports neither, so the tables can take `check_members` from it at import time.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Protocol, runtime_checkable

import xxhash

from fastlb.errors import TableError

__all__ = ["Table", "TableError", "check_members", "fingerprint_of"]


@runtime_checkable
class Table(Protocol):
    """What the proxy needs from a routing table.

    `names` are the members sorted by name, so an index means the same member in every table
    built from the same members, whatever order they were given in.
    """

    @property
    def names(self) -> tuple[str, ...]:
        """The members, sorted by name; `lookup` and `candidates` return indexes into it."""
        ...

    def lookup(self, key: bytes) -> int:
        """The member that serves `key`, in O(1): this is on every request's path."""
        ...

    def candidates(self, key: bytes) -> Iterator[int]:
        """Every member index once, in preference order; the first is `lookup(key)`.

        The proxy walks it when the preferred member is down, so a key falls back to the same
        member every time, and as nearly as the table allows to the one it would move to if the
        first member were removed (then failing over now moves no key twice).
        """
        ...

    def shares(self) -> dict[str, float]:
        """The fraction of the key space each member serves (the values sum to 1)."""
        ...

    def fingerprint(self) -> str:
        """A hash (xxh64, hex) of what defines the table: kind, names, weights, entries.

        Two tables with equal fingerprints route every key alike, so balancers that should
        agree (several instances behind DNS or ECMP) can be compared by one short string
        (`fastlb ctl show table`, /status.json, the fastlb_table_info metric).
        """
        ...


def fingerprint_of(kind: str, header: str, *blobs: array[int] | bytes) -> str:
    """xxh64 (hex) of `kind`, `header` (the parameters, as text) and the packed `blobs`.

    Each part is preceded by its length, so no two different contents run together into the
    same bytes; arrays are hashed little-endian whatever the machine, so an x86 and an arm64
    balancer built from the same members show the same fingerprint.
    """
    digest = xxhash.xxh64()
    for part in (kind.encode("utf-8"), header.encode("utf-8"), *blobs):
        if isinstance(part, array):
            if sys.byteorder != "little":
                part = array(part.typecode, part)
                part.byteswap()
            data = part.tobytes()
        else:
            data = part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def check_members(members: Sequence[tuple[str, int]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The members sorted by name, as (names, weights), or a TableError saying what is wrong.

    Sorting first is what makes a table a function of the member *set*: the proxy's list of
    replicas changes order as replicas come and go, and the keys must not move because of that.
    """
    if not members:
        raise TableError("a routing table needs at least one member, and none were given")
    for name, weight in members:
        if not isinstance(name, str) or not name:
            raise TableError(f"member name {name!r} is not a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise TableError(
                f"member {name!r} has weight {weight!r}: a weight must be an integer >= 1"
            )
    ordered = sorted(members, key=lambda member: member[0])
    names = tuple(name for name, _ in ordered)
    weights = tuple(weight for _, weight in ordered)
    for previous, name in pairwise(names):
        if previous == name:
            raise TableError(f"member {name!r} is listed twice: member names must be unique")
    return names, weights
