"""The course spec's consistent-hash ring ("classic" table), kept to reproduce and compare it.

M = 512 slots; each replica has K = log2(M) = 9 virtual servers, virtual server j of replica id i
at slot Phi(i, j), moved on to the next free slot by linear (+1, +2, ...) or quadratic (+1, +4,
+9, ...) probing when taken; a request with id i lands on slot H(i) and is served by the first
virtual server clockwise from there (the one on its slot, if any). H and Phi come from a hash
family of `fastlb.hashing`, the spec's own by default, so that the analysis can swap them (A-4).

The ring is small, so it is resolved once at build time into an owner array of M entries: a
lookup is H and one read, whatever the number of virtual servers. The spec's functions spread
keys poorly (H is a quadratic: it reaches only some slots, and Phi puts one replica's virtual
servers close together); that is the point of keeping them, and `shares()` reports the spread
requests really get, not the slot count.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterator, Sequence
from itertools import chain

from fastlb.errors import TableError
from fastlb.hashing import classic_hash, key_int, xxh64
from fastlb.limits import CLASSIC_PROBES
from fastlb.table import check_members, fingerprint_of

__all__ = ["DEFAULT_SLOTS", "DEFAULT_VIRTUAL", "PROBES", "ClassicRing", "replica_id"]

DEFAULT_SLOTS = 512
DEFAULT_VIRTUAL = 9  # log2(512)
PROBES = CLASSIC_PROBES

_TRAILING_DIGITS = re.compile(r"[0-9]+\Z")


def replica_id(name: str) -> int:
    """The integer i a replica's virtual servers are placed with (Phi(i, j)).

    The spec numbers its replicas, so the number at the end of a name is the id (Server1 -> 1),
    which makes the spec's worked examples come out the same; a name without one is hashed.
    Two names with the same number (S1, Server1) get the same id: their virtual servers then
    compete for the same slots, and probing separates them.
    """
    match = _TRAILING_DIGITS.search(name)
    if match is not None:
        return int(match.group())
    return xxh64(name.encode("utf-8")) % 2**20


def _probe(ring: list[int], home: int, probe: str) -> int:
    """The free slot a virtual server whose slot is `home` ends up in."""
    size = len(ring)
    if ring[home] < 0:
        return home
    if probe == "quadratic":
        # k*k mod M does not reach every slot (M = 512 is a power of two); when the k*k probes
        # find none free, fall back to linear probing, so a ring with room is always filled.
        for k in range(1, size):
            slot = (home + k * k) % size
            if ring[slot] < 0:
                return slot
    for k in range(1, size):
        slot = (home + k) % size
        if ring[slot] < 0:
            return slot
    raise AssertionError("no free slot: the caller checked that the virtual servers fit")


class ClassicRing:
    """The spec's ring over (name, weight) members; immutable once built.

    A member of weight w has w * `virtual` virtual servers. Members are placed in name order,
    so the ring depends only on the set of members. `names` are sorted, and `lookup` and
    `candidates` return indexes into them.
    """

    __slots__ = (
        "_by_residue",
        "_fingerprint",
        "_owners",
        "_positions",
        "_request_slot",
        "_shares",
        "hash",
        "ids",
        "names",
        "probe",
        "size",
        "virtual",
        "weights",
    )

    names: tuple[str, ...]
    weights: tuple[int, ...]
    ids: tuple[int, ...]
    size: int
    virtual: int
    probe: str
    hash: str

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        slots: int = DEFAULT_SLOTS,
        virtual: int = DEFAULT_VIRTUAL,
        probe: str = PROBES[0],
        hash: str = "spec",
    ) -> None:
        names, weights = check_members(members)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise TableError(f"classic ring slots must be an integer >= 1, not {slots!r}")
        if isinstance(virtual, bool) or not isinstance(virtual, int) or virtual < 1:
            raise TableError(
                f"classic ring virtual servers must be an integer >= 1, not {virtual!r}"
            )
        if probe not in PROBES:
            raise TableError(
                f"unknown classic ring probe {probe!r}: known probes are {', '.join(PROBES)}"
            )
        family = classic_hash(hash)
        total = virtual * sum(weights)
        if total > slots:
            raise TableError(
                f"{total} virtual servers ({len(names)} members, {virtual} each per unit of "
                f"weight) do not fit a ring of {slots} slots"
            )

        positions = [-1] * slots  # the member whose virtual server sits on each slot
        ids = tuple(replica_id(name) for name in names)
        virtual_slot = family.virtual_slot
        for index, (rid, weight) in enumerate(zip(ids, weights, strict=True)):
            for j in range(weight * virtual):
                home = virtual_slot(rid, j, slots) % slots
                positions[_probe(positions, home, probe)] = index

        # owners[s]: the first virtual server clockwise from s, s included. Walk backwards,
        # starting with the first occupied slot, which is the owner past the end of the ring.
        owners = [0] * slots
        current = next(member for member in positions if member >= 0)
        for slot in range(slots - 1, -1, -1):
            if positions[slot] >= 0:
                current = positions[slot]
            owners[slot] = current

        self.names = names
        self.weights = weights
        self.ids = ids
        self.size = slots
        self.virtual = virtual
        self.probe = probe
        self.hash = hash
        self._positions = tuple(positions)
        self._owners = tuple(owners)
        self._request_slot = family.request_slot
        # H of a periodic family depends on the id mod M only: resolve it for every residue
        # too, so that a lookup is one read and no call of H.
        self._by_residue = (
            tuple(owners[family.request_slot(i, slots) % slots] for i in range(slots))
            if family.periodic
            else None
        )
        # Exact for a periodic family (uniform ids spread over the residues evenly, and so
        # over the slots as H sends them); otherwise each slot counts as equally likely.
        counts = [0] * len(names)
        for owner in self._by_residue or owners:
            counts[owner] += 1
        self._shares = {name: count / slots for name, count in zip(names, counts, strict=True)}
        self._fingerprint: str | None = None

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its parameters on unpickling (a fraction of a millisecond), so that a
        # ring built in a worker process carries no function objects across.
        members = tuple(zip(self.names, self.weights, strict=True))
        return (ClassicRing, (members, self.size, self.virtual, self.probe, self.hash))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassicRing):
            return NotImplemented
        return (
            self.names == other.names
            and self.weights == other.weights
            and self.virtual == other.virtual
            and self.probe == other.probe
            and self.hash == other.hash
            and self._positions == other._positions
        )

    __hash__ = None  # type: ignore[assignment]  # equality by content, but not meant as a key

    def __repr__(self) -> str:
        return (
            f"ClassicRing(names={self.names!r}, weights={self.weights!r}, slots={self.size}, "
            f"virtual={self.virtual}, probe={self.probe!r}, hash={self.hash!r})"
        )

    @property
    def positions(self) -> tuple[int, ...]:
        """The member whose virtual server sits on each slot, -1 for a free slot."""
        return self._positions

    @property
    def owners(self) -> tuple[int, ...]:
        """The member serving each request slot."""
        return self._owners

    def slot_of(self, key: bytes) -> int:
        """The request slot of `key`: H(key_int(key)) mod M."""
        return self._request_slot(key_int(key), self.size) % self.size

    def lookup(self, key: bytes) -> int:
        """The member for `key`: H of the key's integer, then one read of the owner array."""
        by_residue = self._by_residue
        if by_residue is not None:
            return by_residue[key_int(key) % self.size]
        return self._owners[self._request_slot(key_int(key), self.size) % self.size]

    def candidates(self, key: bytes) -> Iterator[int]:
        """Every member once, in the order their virtual servers come clockwise from `key`'s
        slot; the first is `lookup(key)`."""
        slot = self.slot_of(key)
        left = len(self.names)
        seen = bytearray(left)
        positions = self._positions
        for index in chain(range(slot, self.size), range(slot)):
            member = positions[index]
            if member >= 0 and not seen[member]:
                seen[member] = 1
                yield member
                left -= 1
                if not left:
                    return

    def shares(self) -> dict[str, float]:
        """The fraction of uniformly random request ids (or hashed keys) each member serves.

        With the spec's H it is computed exactly from H's spread over the slots (see
        `ClassicHash.periodic`); with a family that makes no such promise, each slot counts as
        equally likely.
        """
        return dict(self._shares)

    def fingerprint(self) -> str:
        """xxh64 (hex) of the names, weights, ring parameters and the slots' virtual servers
        (the hash family is named: it decides which slot a key lands on)."""
        if self._fingerprint is None:
            header = json.dumps(
                [list(self.names), list(self.weights), self.size, self.virtual, self.probe,
                 self.hash]
            )
            positions = array("i", self._positions)
            self._fingerprint = fingerprint_of("classic", header, positions)
        return self._fingerprint
