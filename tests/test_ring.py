"""The classic ring: the spec's placement and lookups, probing, weights, disruption, errors."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb.errors import TableError
from fastlb.hashing import xxh64
from fastlb.ring import ClassicRing, _probe, replica_id
from tests.conftest import output_under_hash_seed

DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=100)
ROOT = Path(__file__).resolve().parent.parent

_rng = random.Random(20240501)
IDS = [str(_rng.randint(100000, 999999)).encode() for _ in range(100_000)]  # the spec's ids


def servers(n: int, weight: int = 1) -> list[tuple[str, int]]:
    return [(f"Server{i}", weight) for i in range(1, n + 1)]


def slots_of(ring: ClassicRing, member: int) -> list[int]:
    return [slot for slot, owner in enumerate(ring.positions) if owner == member]


# --- the spec, by hand ------------------------------------------------------------------------


@pytest.mark.parametrize("probe", ["linear", "quadratic"])
def test_spec_placement_by_hand(probe: str) -> None:
    ring = ClassicRing(servers(3), probe=probe)
    assert ring.names == ("Server1", "Server2", "Server3")
    assert ring.ids == (1, 2, 3)
    # Phi(i, j) = i^2 + j^2 + 2j + 25: Server1 at 26 + j^2 + 2j, all free.
    assert slots_of(ring, 0) == [26, 29, 34, 41, 50, 61, 74, 89, 106]
    # Server2 at 29 + j^2 + 2j; 29 is Server1's (j = 1), so +1 -> 30 (both probes).
    assert slots_of(ring, 1) == [30, 32, 37, 44, 53, 64, 77, 92, 109]
    # Server3 at 34 + j^2 + 2j; 34 is Server1's -> 35, 37 is Server2's -> 38.
    assert slots_of(ring, 2) == [35, 38, 42, 49, 58, 69, 82, 97, 114]


def test_spec_lookups_by_hand() -> None:
    ring = ClassicRing(servers(3))
    # H(i) = i^2 + 2i + 17 mod 512, then the first virtual server at or after that slot.
    assert ring.slot_of(b"3") == 32 and ring.lookup(b"3") == 1  # 32 is Server2's
    assert ring.lookup(b"000003") == 1  # the same id
    assert ring.slot_of(b"5") == 52 and ring.lookup(b"5") == 1  # next is 53, Server2's
    assert ring.slot_of(b"7") == 80 and ring.lookup(b"7") == 2  # next is 82, Server3's
    assert ring.slot_of(b"0") == 17 and ring.lookup(b"0") == 0  # next is 26, Server1's
    # 123456 = 64 mod 512: H = 4096 + 128 + 17 = 145, past the last virtual server (114),
    # so around the ring to 26, Server1's.
    assert ring.slot_of(b"123456") == 145 and ring.lookup(b"123456") == 0
    assert list(ring.candidates(b"3")) == [1, 0, 2]  # 32 Server2, 34 Server1, 35 Server3


def test_non_numeric_keys_are_hashed_first() -> None:
    ring = ClassicRing(servers(3))
    assert ring.slot_of(b"/home") == ring.slot_of(str(xxh64(b"/home")).encode())


# --- probing ----------------------------------------------------------------------------------


def test_probe_sequences() -> None:
    positions = [-1] * 16
    for taken in (3, 4, 5):
        positions[taken] = 0
    assert _probe(positions, 3, "linear") == 6  # +1, +2, +3
    assert _probe(positions, 3, "quadratic") == 7  # +1 taken, +4 free
    assert _probe(positions, 2, "quadratic") == 2  # free: stays
    positions[15] = 0
    assert _probe(positions, 15, "linear") == 0  # wraps around


def test_quadratic_falls_back_to_linear_when_squares_miss() -> None:
    # k^2 mod 8 is 0, 1 or 4: from slot 0 quadratic probing can only reach 1 and 4.
    positions = [0, 0, -1, 0, 0, 0, 0, 0]
    assert _probe(positions, 0, "quadratic") == 2


def test_linear_and_quadratic_differ_once_collisions_chain() -> None:
    linear = ClassicRing(servers(5), probe="linear")
    quadratic = ClassicRing(servers(5), probe="quadratic")
    assert linear.positions != quadratic.positions
    for ring in (linear, quadratic):
        assert Counter(ring.positions) == {-1: 512 - 45, 0: 9, 1: 9, 2: 9, 3: 9, 4: 9}


@pytest.mark.parametrize("probe", ["linear", "quadratic"])
@pytest.mark.parametrize("family", ["spec", "xxhash", "fnv1a"])
def test_a_full_ring_is_filled(probe: str, family: str) -> None:
    ring = ClassicRing(servers(3), slots=27, probe=probe, hash=family)
    assert Counter(ring.positions) == {0: 9, 1: 9, 2: 9}
    big = ClassicRing(servers(64), slots=512, virtual=8, probe=probe, hash=family)
    assert Counter(big.positions) == dict.fromkeys(range(64), 8)
    assert set(big.owners) == set(range(64))


# --- balance and weights ----------------------------------------------------------------------


def test_spec_shares_are_exact_and_poor() -> None:
    ring = ClassicRing(servers(3))
    # Counted over the 512 residues of the id: H reaches only some slots, most of them between
    # Server3's last virtual server (114) and Server1's first (26).
    assert ring.shares() == {"Server1": 432 / 512, "Server2": 24 / 512, "Server3": 56 / 512}
    hits = Counter(ring.lookup(key) for key in IDS)
    assert hits == {0: 84441, 1: 4667, 2: 10892}  # 84.4%, 4.7%, 10.9% of the spec's ids


@pytest.mark.parametrize("family", ["spec", "xxhash", "fnv1a"])
@pytest.mark.parametrize("n", [2, 3, 6])
def test_lookups_agree_with_shares(family: str, n: int) -> None:
    ring = ClassicRing(servers(n), hash=family)
    shares = ring.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    hits = Counter(ring.lookup(key) for key in IDS[:20_000])
    for index, name in enumerate(ring.names):
        # 4.5 standard deviations of a binomial count, and one count for a share of 0.
        expected = shares[name] * 20_000
        assert abs(hits[index] - expected) <= 4.5 * (expected * (1 - shares[name])) ** 0.5 + 1


def test_weight_two_gets_twice_the_virtual_servers() -> None:
    for family in ("spec", "xxhash"):
        ring = ClassicRing([("a", 2), ("b", 1), ("c", 1)], hash=family)
        assert Counter(ring.positions) == {-1: 512 - 36, 0: 18, 1: 9, 2: 9}
    # With so few virtual servers the shares follow the weights only roughly (measured):
    ring = ClassicRing([("a", 2), ("b", 1), ("c", 1)], hash="xxhash")
    assert ring.shares() == {"a": 299 / 512, "b": 90 / 512, "c": 123 / 512}


# --- disruption -------------------------------------------------------------------------------


def moved(before: ClassicRing, after: ClassicRing, removed: str) -> tuple[int, int]:
    changed = elsewhere = 0
    for key in IDS:
        a = before.names[before.lookup(key)]
        if a != after.names[after.lookup(key)]:
            changed += 1
            elsewhere += a != removed
    return changed, elsewhere


@pytest.mark.parametrize(
    ("family", "probe", "n", "removed", "measured"),
    [
        # Of the 100,000 spec ids: (keys moved, of which not on the removed member).
        # The spec's ring, N = 3 without Server2: only Server2's 4.7% move.
        ("spec", "linear", 3, "Server2", (4667, 0)),
        ("spec", "quadratic", 5, "Server3", (2291, 0)),
        # N = 10 without Server5: 12.7%, and 8.0% between members that stay, because
        # virtual servers that had been probed past Server5's slots now stay home.
        ("spec", "linear", 10, "Server5", (12652, 7960)),
        ("xxhash", "linear", 10, "Server5", (6894, 0)),
        ("fnv1a", "linear", 5, "Server3", (8559, 0)),
    ],
)
def test_removing_one_member(
    family: str, probe: str, n: int, removed: str, measured: tuple[int, int]
) -> None:
    before = ClassicRing(servers(n), probe=probe, hash=family)
    after = ClassicRing([m for m in servers(n) if m[0] != removed], probe=probe, hash=family)
    assert moved(before, after, removed) == measured


# --- determinism ------------------------------------------------------------------------------


@DETERMINISTIC
@given(
    st.permutations([("alpha", 1), ("beta", 2), ("Server7", 1), ("S7", 1), ("gamma3", 3)]),
    st.sampled_from(["linear", "quadratic"]),
    st.sampled_from(["spec", "xxhash", "fnv1a"]),
)
def test_member_order_does_not_matter(
    members: list[tuple[str, int]], probe: str, family: str
) -> None:
    ring = ClassicRing(members, probe=probe, hash=family)
    reference = ClassicRing(sorted(members), probe=probe, hash=family)
    assert ring.names == reference.names
    assert ring.positions == reference.positions
    assert ring.owners == reference.owners


_DIGEST_SCRIPT = """
import hashlib
from fastlb.ring import ClassicRing
rings = [ClassicRing([("alpha", 2), ("Server3", 1), ("beta", 1)], probe=p, hash=h)
         for p in ("linear", "quadratic") for h in ("spec", "xxhash", "fnv1a")]
print(hashlib.sha256(repr([r.positions for r in rings]).encode()).hexdigest())
"""


def test_same_ring_in_other_processes_and_hash_seeds() -> None:
    rings = [
        ClassicRing([("alpha", 2), ("Server3", 1), ("beta", 1)], probe=p, hash=h)
        for p in ("linear", "quadratic")
        for h in ("spec", "xxhash", "fnv1a")
    ]
    here = hashlib.sha256(repr([r.positions for r in rings]).encode()).hexdigest()
    for seed in ("0", "4242"):
        assert output_under_hash_seed(_DIGEST_SCRIPT, seed) == here


# --- candidates -------------------------------------------------------------------------------


@DETERMINISTIC
@given(
    st.one_of(st.binary(max_size=16), st.integers(0, 10**7).map(lambda i: str(i).encode())),
    st.integers(1, 20),
    st.sampled_from(["linear", "quadratic"]),
    st.sampled_from(["spec", "xxhash", "fnv1a"]),
)
def test_candidates_are_every_member_once_lookup_first(
    key: bytes, n: int, probe: str, family: str
) -> None:
    ring = ClassicRing(servers(n), probe=probe, hash=family)
    order = list(ring.candidates(key))
    assert sorted(order) == list(range(n))
    assert order[0] == ring.lookup(key)


# --- replica ids ------------------------------------------------------------------------------


def test_replica_ids() -> None:
    assert replica_id("Server1") == 1
    assert replica_id("S10") == 10
    assert replica_id("Server01") == 1
    assert replica_id("42") == 42
    assert replica_id("web-3") == 3
    assert replica_id("alpha") == xxh64(b"alpha") % 2**20
    assert replica_id("node\u0663") == xxh64("node\u0663".encode()) % 2**20  # not ASCII


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "options", "match"),
    [
        ([], {}, "at least one member"),
        ([("a", 1), ("a", 1)], {}, "listed twice"),
        ([("a", 0)], {}, "weight"),
        (servers(57), {}, "513 virtual servers"),  # 57 * 9 > 512
        (servers(3, weight=19), {}, "do not fit"),  # 3 * 19 * 9 = 513
        (servers(3), {"slots": 26}, "do not fit"),
        (servers(3), {"hash": "sha1"}, "unknown classic hash 'sha1'"),
        (servers(3), {"probe": "cubic"}, "unknown classic ring probe"),
        (servers(3), {"virtual": 0}, "virtual servers"),
        (servers(3), {"slots": 0}, "slots"),
    ],
)
def test_errors(members: list[tuple[str, int]], options: dict[str, object], match: str) -> None:
    with pytest.raises(TableError, match=match):
        ClassicRing(members, **options)  # type: ignore[arg-type]


def test_unknown_hash_lists_the_known_ones() -> None:
    with pytest.raises(TableError, match="spec") as info:
        ClassicRing(servers(3), hash="nope")
    assert "xxhash" in str(info.value) and "fnv1a" in str(info.value)


def test_just_fits() -> None:
    ring = ClassicRing(servers(56))  # 504 virtual servers of 512
    assert len(ring.shares()) == 56
