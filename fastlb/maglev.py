"""Maglev hashing: fastlb's default routing table.

The lookup table of Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
Balancer", NSDI 2016, section 3.4. Each member has a permutation of the M table slots
(offset + j * skip mod M, from two hashes of its name), and the members take turns, round-robin,
claiming the next slot of their permutation that nobody holds yet, until all M slots are held.
Why this table rather than a ring: every member holds M/N entries give or take one, so the load is
even by construction (a ring with a few virtual nodes per member is off by tens of percent); and
removing one member of N moves about 1/N of the keys (measured with 100k keys at M = 65537:
1.00/N for N = 3, 1.02/N for N = 10, 1.05/N for N = 20, 1.2/N for N = 50, 1.7/N for N = 100,
where M/N = 655 is at the paper's lower limit; 1.12/N for N = 100 at M = 655373). A lookup is one
hash and one array read.

M is fixed (65537 by default) and must be prime, so that every skip in 1..M-1 makes the
permutation visit every slot. It must not follow N: the keys' slots (hash % M) would all change.
The paper advises M >= 100 N.

Build cost, measured on the development machine (2 vCPUs, CPython 3.11.7), for M = 65537 and
members "Server1".."ServerN" of weight 1: `python -m fastlb.maglev` (which reproduces it) times
`MaglevTable(members)` with `time.perf_counter` and keeps the best of 15 runs; it was run in 10
processes, and the figures are the best process (an idle machine) and the median one (the
machine shared with benchmarks, as it was):

    N = 3: 9.0 ms (median 12.6)    N = 10: 15.6 ms (22.1)    N = 100: 21.7 ms (31.1)
    N = 1000: 24.0 ms (31.7)

That is the whole constructor: hashing the names, populating, and packing the entries into an
array. Populating dominates: M claims plus the probes of slots already held by others, which
grow with N (1.9 M of them for N = 3, 5.5 M for N = 10, 8.5 M for N = 100), at about 30 ns a
step in the interpreter's specialised loop. The loop below is the fastest of the variants
tried, 2.6-2.9x faster than the literal listing (permutation iterators chained through C-level
map/filter, and a two-phase fill that sorts the last free slots, were both slower).
Compiled by mypyc (`make compile`, fastlb/_native.py), the same constructor takes 3.6, 4.1
and 6.7 ms for N = 3, 10 and 100 (`python -m bench.table_build`, one run). A rebuild
above 5 ms is therefore meant to run in a worker process: `build_maglev_entries` there and
`MaglevTable.from_entries` on the loop (0.1 ms), or a pickled `MaglevTable`, which travels as
its packed entries.

Weights follow Envoy's weighted Maglev (source/extensions/load_balancing_policies/maglev/
maglev_lb.cc): in iteration t = 1, 2, ... a member of weight w takes its turn only if
t * w >= its target, and each turn raises its target by the largest weight W. A member of the
largest weight takes a turn in every iteration, one of weight W/3 in every third, so members hold
entries in proportion to their weights. With all weights equal this is the paper's plain
round-robin, and the table is the same as the unweighted one.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Final

import xxhash

from fastlb.errors import TableError
from fastlb.limits import MAGLEV_SIZE, is_prime
from fastlb.table import check_members, fingerprint_of

__all__ = [
    "DEFAULT_SIZE",
    "MAX_MEMBERS",
    "MaglevTable",
    "build_maglev_entries",
    "check_size",
]

DEFAULT_SIZE: Final = MAGLEV_SIZE
MAX_MEMBERS: Final = 65536  # member indexes are stored as unsigned 16-bit integers

# Fixed forever: changing any of them moves every key. The request seed differs from the two
# permutation seeds so that a key which happens to equal a member's name is not drawn to that
# member's first-choice slot.
_SEED_OFFSET: Final = 0x6D61676C65762D6F  # "maglev-o"
_SEED_SKIP: Final = 0x6D61676C65762D73  # "maglev-s"
_SEED_KEY: Final = 0x6D61676C65762D6B  # "maglev-k"

_xxh64: Final = xxhash.xxh64_intdigest


def check_size(size: int, members: int) -> None:
    """Raise TableError unless a table of `size` entries can hold `members` members."""
    if isinstance(size, bool) or not isinstance(size, int) or not is_prime(size):
        raise TableError(
            f"maglev table size {size!r} is not a prime number: the permutations need a prime "
            f"size ({MAGLEV_SIZE} is the default; 655373 suits more than 655 members)"
        )
    if members > size:
        raise TableError(f"{members} members do not fit a maglev table of {size} entries")
    if members > MAX_MEMBERS:
        raise TableError(f"{members} members: a maglev table holds at most {MAX_MEMBERS}")


def _typecode(members: int) -> str:
    # One byte per entry up to 256 members: half the memory, and every lookup result is one of
    # CPython's cached small ints, so a lookup allocates nothing but the hash.
    return "B" if members <= 256 else "H"


def _populate(names: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """The member index of each of the `size` entries (Maglev's Populate, listing 1)."""
    m = size
    # One small list per member: [next slot, skip, m - skip, index (, weight, target)].
    # Unpacking it is cheaper than indexing parallel lists, and stepping the slot as
    # "c + skip if c < m - skip else c - (m - skip)" avoids a modulo per probe.
    states: list[list[int]] = []
    for index, name in enumerate(names):
        data = name.encode("utf-8")
        skip = _xxh64(data, _SEED_SKIP) % (m - 1) + 1
        states.append([_xxh64(data, _SEED_OFFSET) % m, skip, m - skip, index])
    entry: list[int | None] = [None] * m

    if min(weights) == max(weights):
        # Plain round-robin: whole rounds, then the first `rest` members once more.
        rounds, rest = divmod(m, len(states))
        for _ in range(rounds):
            for st in states:
                c, s, t, i = st
                while entry[c] is not None:
                    if c < t:
                        c += s
                    else:
                        c -= t
                entry[c] = i
                st[0] = c + s if c < t else c - t
        for st in states[:rest]:
            c, s, t, i = st
            while entry[c] is not None:
                if c < t:
                    c += s
                else:
                    c -= t
            entry[c] = i
        return entry  # type: ignore[return-value]  # every slot was filled

    top = max(weights)
    for st, weight in zip(states, weights, strict=True):
        st += [weight, 0]
    filled = 0
    iteration = 0
    while True:
        iteration += 1
        for st in states:
            c, s, t, i, w, target = st
            if iteration * w < target:
                continue
            st[5] = target + top
            while entry[c] is not None:
                if c < t:
                    c += s
                else:
                    c -= t
            entry[c] = i
            st[0] = c + s if c < t else c - t
            filled += 1
            if filled == m:
                return entry  # type: ignore[return-value]  # every slot was filled


def _pack(entries: list[int], members: int) -> array[int]:
    if members <= 256:
        return array("B", bytes(entries))  # bytes() converts a list of ints 3x faster
    return array("H", entries)


def build_maglev_entries(names: Sequence[str], weights: Sequence[int], size: int) -> bytes:
    """The packed entries of the table for `names` (sorted, unique) with `weights`.

    A plain function of plain data, so that it can run in a worker process; the bytes go back to
    `MaglevTable.from_entries(names, entries, weights)`. `names` must already be in name order
    (`fastlb.table.check_members` gives them so): the table is a function of that order.
    """
    if list(names) != sorted(names):
        raise TableError("build_maglev_entries needs the member names sorted")
    check_size(size, len(names))
    if len(weights) != len(names):
        raise TableError(f"{len(names)} member names but {len(weights)} weights")
    return _pack(_populate(names, weights, size), len(names)).tobytes()


class MaglevTable:
    """A Maglev lookup table over (name, weight) members; immutable once built.

    `names` are sorted, and `lookup`/`candidates` return indexes into them.
    """

    __slots__ = ("_entries", "_fingerprint", "_shares", "_walks", "names", "size", "weights")

    names: tuple[str, ...]
    weights: tuple[int, ...]
    size: int
    _entries: array[int]
    _shares: dict[str, float] | None
    _walks: tuple[tuple[int, int, int], ...] | None
    _fingerprint: str | None

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        size: int = DEFAULT_SIZE,
        *,
        _entries: array[int] | None = None,
    ) -> None:
        # `_entries`: already built and checked (from_entries), instead of populating.
        names, weights = check_members(members)
        check_size(size, len(names))
        self.names = names
        self.weights = weights
        self.size = size
        if _entries is None:
            _entries = _pack(_populate(names, weights, size), len(names))
        self._entries = _entries
        self._shares = None
        self._walks = None
        self._fingerprint = None

    @classmethod
    def from_entries(
        cls,
        names: Sequence[str],
        entries: bytes | bytearray | memoryview,
        weights: Sequence[int] | None = None,
    ) -> MaglevTable:
        """A table from entries built elsewhere (`build_maglev_entries` in a worker process).

        Costs a copy of the bytes and a scan for out-of-range indexes (0.1 ms for N <= 256 at
        M = 65537); it does not re-check that the entries are the ones the names would produce.
        """
        names_t = tuple(names)
        weights_t = tuple(weights) if weights is not None else (1,) * len(names_t)
        if len(weights_t) != len(names_t):
            raise TableError(f"{len(names_t)} member names but {len(weights_t)} weights")
        checked, _ = check_members(list(zip(names_t, weights_t, strict=True)))
        if checked != names_t:
            raise TableError("from_entries needs the member names sorted")
        table = array(_typecode(len(names_t)))
        try:
            table.frombytes(entries)
        except ValueError as exc:
            raise TableError(f"maglev entries do not fit member indexes: {exc}") from None
        n = len(names_t)
        check_size(len(table), n)
        # One byte per entry: deleting every valid index must leave nothing (a C-speed scan,
        # 20 times faster than max()).
        bad = table.tobytes().translate(None, bytes(range(n))) if n <= 256 else None
        if bad or (bad is None and max(table) >= n):
            raise TableError(f"maglev entries refer to member {max(table)}, but there are {n}")
        return cls(list(zip(names_t, weights_t, strict=True)), len(table), _entries=table)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled as its packed entries: a worker process returns a table without a rebuild.
        return (_restore, (self.names, self._entries.tobytes(), self.weights))

    def __repr__(self) -> str:
        return f"MaglevTable(names={self.names!r}, weights={self.weights!r}, size={self.size})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaglevTable):
            return NotImplemented
        return (
            self.names == other.names
            and self.weights == other.weights
            and self._entries == other._entries
        )

    __hash__ = None  # type: ignore[assignment]  # equality by content, but not meant as a key

    @property
    def entries(self) -> memoryview:
        """The member index of every entry (read-only): for tests, digests and analysis."""
        return memoryview(self._entries).toreadonly()

    def lookup(self, key: bytes) -> int:
        """The member for `key`: one xxh64 and one array read."""
        return self._entries[_xxh64(key, _SEED_KEY) % self.size]

    def candidates(self, key: bytes) -> Iterator[int]:
        """Every member once, in preference order: `lookup(key)`, then the others in the order
        the rebuilt tables would most likely give the key to them.

        Without member X, the key's slot goes to whichever other member's permutation reaches it
        first; members walk their permutations at a speed proportional to their weight, so the
        order is the slot's position in each permutation divided by the weight. Measured over
        20,000 keys, the second candidate is the member the key moves to once the first is
        removed for 99.96% of keys at N = 3, 99.7% at N = 5, 98.4% at N = 10, 96.9% at N = 30
        (equal weights), 82-93% with mixed weights. So a key that fails over stays put when its
        member is then removed. (Walking the entry array forward instead agrees for only 43%,
        21%, 8% and 5%: the neighbouring entry is unrelated to the key's next choice.)
        Like the table, the fallbacks of a member's keys spread evenly over the other members.
        """
        size = self.size
        slot = _xxh64(key, _SEED_KEY) % size
        first = self._entries[slot]
        yield first
        if len(self.names) == 1:
            return
        walks = self._walks
        if walks is None:
            walks = self._walks = _walk_params(self.names, self.weights, size)
        order = sorted(
            ((slot - offset) * inverse % size / weight, index)
            for index, (offset, inverse, weight) in enumerate(walks)
            if index != first
        )
        for _, index in order:
            yield index

    def shares(self) -> dict[str, float]:
        """The fraction of entries, hence of uniformly hashed keys, that each member holds."""
        if self._shares is None:
            counts = Counter(self._entries)
            self._shares = {name: counts[i] / self.size for i, name in enumerate(self.names)}
        return dict(self._shares)


    def fingerprint(self) -> str:
        """xxh64 (hex) of the names, weights and entries (the size is their count): equal
        exactly when two tables route every key alike. Hashing 65537 one-byte entries takes
        microseconds, and the result is kept."""
        if self._fingerprint is None:
            header = json.dumps([list(self.names), list(self.weights), self.size])
            self._fingerprint = fingerprint_of("maglev", header, self._entries)
        return self._fingerprint


def _walk_params(
    names: Sequence[str], weights: Sequence[int], size: int
) -> tuple[tuple[int, int, int], ...]:
    """(offset, inverse of skip mod M, weight) per member: slot c is at position
    (c - offset) * inverse mod M of the member's permutation."""
    params = []
    for name, weight in zip(names, weights, strict=True):
        data = name.encode("utf-8")
        skip = _xxh64(data, _SEED_SKIP) % (size - 1) + 1
        params.append((_xxh64(data, _SEED_OFFSET) % size, pow(skip, -1, size), weight))
    return tuple(params)


def _restore(names: tuple[str, ...], entries: bytes, weights: tuple[int, ...]) -> MaglevTable:
    return MaglevTable.from_entries(names, entries, weights)


def _measure() -> None:
    """Print build times as quoted in the module docstring."""
    import time

    for n in (3, 10, 100, 1000):
        members = [(f"Server{i}", 1) for i in range(1, n + 1)]
        best = float("inf")
        for _ in range(15):
            start = time.perf_counter()
            MaglevTable(members)
            best = min(best, time.perf_counter() - start)
        print(f"N = {n}: {best * 1000:.1f} ms")


if __name__ == "__main__":
    _measure()
