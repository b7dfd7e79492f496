"""The ketama ring of nginx's `hash $key consistent`: fastlb's "ketama" table.

Why: many sites already balance with nginx's consistent hash. A table that maps every key
exactly as nginx does lets fastlb instances join or replace nginx instances in front of the
same servers without moving a key (tests/test_ketama.py checks 10,000 keys against a live
nginx).

What nginx does (src/http/modules/ngx_http_upstream_hash_module.c, read at nginx/nginx HEAD:
ngx_http_upstream_update_chash, ngx_http_upstream_find_chash_point,
ngx_http_upstream_init_chash_peer, ngx_http_upstream_get_chash_peer), and so what this does:

- Each server is known by the address written on its `server` line (`peer->server`, e.g.
  "127.0.0.1:8001", "[::1]:8001", "backend.example:80", "unix:/tmp/s"). That string, a member's
  *label* here, is split as nginx splits it: a "unix:" prefix leaves the path as the host and no
  port; otherwise the digits after the last ":" are the port and what comes before is the host
  (brackets of an IPv6 address included); with no such ":" the whole string is the host.
- Base hash: CRC32 over host, one 0 byte, port (Cache::Memcached::Fast's scheme).
- 160 points per unit of weight: point j continues the base CRC32 over the 4 bytes of the
  previous point's hash, little-endian (0 for the first), and is finalised.
- The points are sorted by hash and equal hashes kept once (the first after sorting).
- A key's point is the first whose hash is >= CRC32(key), wrapping to point 0 past the last;
  the key goes to that point's server. When that server is down nginx moves on to the next
  point (`hp->hash++`), which is what `candidates` walks.

CRC32 is the common one (zlib's, nginx's ngx_crc32_long): zlib.crc32(data, running) continues
a CRC over more bytes exactly as ngx_crc32_update does before ngx_crc32_final.

Where it cannot be nginx's: two *different* servers' points with the same 32-bit hash. nginx
keeps whichever its qsort (the C library's, not a stable sort everywhere) leaves first; this
table keeps the point of the label that sorts first. The chance that any such tie exists is
about P^2 / 2^33 for P points in all (1e-4 for 960 points, weights 1+2+3), and it moves at most
the keys of one arc. A host name in nginx's `server` line that resolves to several addresses
gives several peers under one label, balanced round-robin by nginx; fastlb has one member per
label and refuses two members with the same label.

Cost, measured on the development machine (2 vCPUs shared, CPython 3.11; best of 7 builds and
of 5 passes over 100,000 keys, members "Server1".."ServerN" of weight 1; `python -c "from
fastlb.ketama import _measure; _measure()"` reproduces it): compiled by mypyc, building takes
0.08, 0.3 and 4.3 ms for N = 3, 10 and 100 (160 CRC32s per unit of weight, then a sort of
ints), and 0.46-0.76 s (two runs) for the most weight it takes (KETAMA_MAX_WEIGHT = 4096
units, 655,360 points; 0.64 s from source); a lookup (one CRC32, one bucket read, a step or
two along the points) takes 76, 74 and 111 ns, beside Maglev's 75, 73 and 77 ns in the same
run (130-150 ns from source). A binary search (bisect over an array) took 250-330 ns compiled:
bisect reads the array through the generic sequence protocol, one new int per probe.
"""

from __future__ import annotations

import bisect
import json
import zlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

from fastlb.errors import TableError
from fastlb.limits import KETAMA_MAX_WEIGHT
from fastlb.table import check_members, fingerprint_of

__all__ = ["POINTS_PER_WEIGHT", "KetamaTable", "ketama_points", "split_server"]

#: nginx's points per unit of weight (ngx_http_upstream_update_chash: `peer->weight * 160`).
POINTS_PER_WEIGHT: Final = 160

_crc32: Final = zlib.crc32
_bisect_left: Final = bisect.bisect_left


def split_server(label: str) -> tuple[bytes, bytes]:
    """(host, port) of a server address as nginx splits it before hashing (see the module doc).

    >>> split_server("127.0.0.1:8001")
    (b'127.0.0.1', b'8001')
    >>> split_server("[::1]:8001")
    (b'[::1]', b'8001')
    """
    data = label.encode("utf-8")
    if len(data) >= 5 and data[:5].lower() == b"unix:":
        return data[5:], b""
    for j in range(len(data)):
        c = data[len(data) - j - 1]
        if c == 0x3A:  # ":"
            return data[: len(data) - j - 1], data[len(data) - j :]
        if c < 0x30 or c > 0x39:  # not a digit
            break
    return data, b""


def ketama_points(label: str, weight: int) -> list[int]:
    """The `160 * weight` point hashes of one server, in the order nginx generates them."""
    host, port = split_server(label)
    base = _crc32(port, _crc32(b"\0", _crc32(host)))
    points = []
    previous = 0
    for _ in range(weight * POINTS_PER_WEIGHT):
        previous = _crc32(previous.to_bytes(4, "little"), base)
        points.append(previous)
    return points


class KetamaTable:
    """nginx's consistent-hash ring over (name, weight) members; immutable once built.

    `labels` maps a member's name to the address nginx would hash (its `server` line); a member
    without one is hashed by its name. `names` are sorted, and `lookup`/`candidates` return
    indexes into them. The ring depends on the set of (name, weight, label) only, not on the
    order the members are given in.
    """

    __slots__ = (
        "_fingerprint",
        "_hashes",
        "_owner_at",
        "_shares",
        "_shift",
        "_start",
        "labels",
        "names",
        "weights",
    )

    names: tuple[str, ...]
    weights: tuple[int, ...]
    labels: tuple[str, ...]
    _hashes: list[int]  # the points' hashes, sorted
    _owner_at: list[int]  # the member of each point, and once more the first's (the wrap)
    _start: list[int]  # per bucket of hashes (the top bits), the first point at or after it
    _shift: int  # 32 - the bucket bits
    _shares: dict[str, float] | None
    _fingerprint: str | None

    def __init__(
        self, members: Sequence[tuple[str, int]], labels: Mapping[str, str] | None = None
    ) -> None:
        names, weights = check_members(members)
        given = labels or {}
        own = tuple(given.get(name, name) for name in names)
        seen: dict[str, str] = {}
        for name, label in zip(names, own, strict=True):
            if not isinstance(label, str) or not label:
                raise TableError(f"member {name!r} has label {label!r}: expected an address")
            if label in seen:
                raise TableError(
                    f"members {seen[label]!r} and {name!r} have the same label {label!r}: "
                    "their points would coincide and one would serve no key"
                )
            seen[label] = name
        if sum(weights) > KETAMA_MAX_WEIGHT:
            raise TableError(
                f"the members' weights sum to {sum(weights)}: a ketama table takes at most "
                f"{KETAMA_MAX_WEIGHT} units of weight ({POINTS_PER_WEIGHT} points each)"
            )
        # Sorted by (hash, label): equal hashes of two servers resolve the same way whatever
        # order the members came in (see the module doc on ties). Each point is one int,
        # hash << 16 | the label's rank, because sorting ints is several times faster than
        # sorting tuples (1.7 s -> 0.3 s for 655,360 points).
        by_rank = sorted(range(len(own)), key=lambda index: own[index])
        points: list[int] = []
        for rank, index in enumerate(by_rank):
            points.extend([h << 16 | rank for h in ketama_points(own[index], weights[index])])
        points.sort()
        hashes: list[int] = []
        owners: list[int] = []
        last = -1
        for point in points:
            h = point >> 16
            if h != last:
                hashes.append(h)
                owners.append(by_rank[point & 0xFFFF])
                last = h
        # Buckets by the hash's top bits, about one per point: a lookup starts at its bucket's
        # first point and steps past the few below its hash, instead of a binary search
        # (measured 2-3x faster compiled: see `lookup`).
        bits = max(4, min(16, len(hashes).bit_length()))
        shift = 32 - bits
        start: list[int] = []
        i = 0
        for bucket in range(1 << bits):
            floor = bucket << shift
            while i < len(hashes) and hashes[i] < floor:
                i += 1
            start.append(i)
        self.names = names
        self.weights = weights
        self.labels = own
        self._hashes = hashes
        self._owner_at = [*owners, owners[0]]
        self._start = start
        self._shift = shift
        self._shares = None
        self._fingerprint = None

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its members and labels on unpickling: 160 CRC32s per unit of weight.
        members = tuple(zip(self.names, self.weights, strict=True))
        return (_restore, (members, dict(zip(self.names, self.labels, strict=True))))

    def __repr__(self) -> str:
        return (
            f"KetamaTable(names={self.names!r}, weights={self.weights!r}, "
            f"labels={self.labels!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KetamaTable):
            return NotImplemented
        return (
            self.names == other.names
            and self.weights == other.weights
            and self.labels == other.labels
        )

    __hash__ = None  # type: ignore[assignment]  # equality by content, but not meant as a key

    @property
    def points(self) -> list[tuple[int, int]]:
        """(hash, member index) of every point, sorted by hash: for tests and analysis."""
        return list(zip(self._hashes, self._owner_at, strict=False))

    def point_of(self, key: bytes) -> int:
        """The index of `key`'s point: the first with hash >= CRC32(key), else point 0
        (a binary search: the reference `lookup` is checked against)."""
        i = _bisect_left(self._hashes, _crc32(key))
        return 0 if i == len(self._hashes) else i

    def lookup(self, key: bytes) -> int:
        """The member for `key`: one CRC32, one bucket read, a step or two along the points.

        The point after the last holds the first point's member, so the wrap costs no test.
        """
        h = _crc32(key)
        hashes = self._hashes
        count = len(hashes)
        i = self._start[h >> self._shift]
        while i < count and hashes[i] < h:
            i += 1
        return self._owner_at[i]

    def candidates(self, key: bytes) -> Iterator[int]:
        """Every member once, in the order their points come from `key`'s point on (wrapping):
        the order nginx tries servers in when the first is down (`hp->hash++`)."""
        owners = self._owner_at
        count = len(self._hashes)
        start = self.point_of(key)
        left = len(self.names)
        seen = bytearray(left)
        for step in range(count):
            member = owners[(start + step) % count]
            if not seen[member]:
                seen[member] = 1
                yield member
                left -= 1
                if not left:
                    return

    def shares(self) -> dict[str, float]:
        """The fraction of the 2^32 CRC32 values each member's arcs cover: point i takes the
        hashes after point i-1 up to its own, point 0 also those after the last point."""
        if self._shares is None:
            hashes = self._hashes
            owners = self._owner_at
            arcs = [0] * len(self.names)
            arcs[owners[0]] += hashes[0] + (1 << 32) - hashes[len(hashes) - 1]
            for i in range(1, len(hashes)):
                arcs[owners[i]] += hashes[i] - hashes[i - 1]
            self._shares = {
                name: arc / (1 << 32) for name, arc in zip(self.names, arcs, strict=True)
            }
        return dict(self._shares)

    def fingerprint(self) -> str:
        """xxh64 (hex) of the names, weights, labels and points: equal exactly when two
        tables route every key alike, so instances can compare one short string."""
        if self._fingerprint is None:
            header = json.dumps([self.names, self.weights, self.labels])
            self._fingerprint = fingerprint_of(
                "ketama", header, array("I", self._hashes), array("H", self._owner_at[:-1])
            )
        return self._fingerprint


def _restore(members: tuple[tuple[str, int], ...], labels: dict[str, str]) -> KetamaTable:
    return KetamaTable(members, labels)


def _measure() -> None:
    """Print build and lookup times as quoted in the module docstring."""
    import time

    from fastlb.maglev import MaglevTable

    keys = [b"/k/%d" % i for i in range(100_000)]

    def per_key(table: KetamaTable | MaglevTable) -> float:
        lookup = table.lookup
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for key in keys:
                lookup(key)
            best = min(best, time.perf_counter() - start)
        return best / len(keys) * 1e9

    for n, weight in ((3, 1), (10, 1), (100, 1), (256, 16)):
        members = [(f"Server{i}", weight) for i in range(1, n + 1)]
        best = float("inf")
        for _ in range(7 if n <= 100 else 3):
            start = time.perf_counter()
            table = KetamaTable(members)
            best = min(best, time.perf_counter() - start)
        line = f"N = {n}, weight {weight}: build {best * 1000:.2f} ms"
        if weight == 1:
            line += f", lookup {per_key(table):.0f} ns (maglev {per_key(MaglevTable(members)):.0f})"
        print(line)

