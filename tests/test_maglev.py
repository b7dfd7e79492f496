"""The Maglev table: the paper's algorithm, balance, weights, disruption, determinism, errors."""

from __future__ import annotations

import hashlib
import pickle
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb import maglev
from fastlb.errors import TableError
from fastlb.hashing import xxh64
from fastlb.maglev import MaglevTable, build_maglev_entries, check_size
from tests.conftest import output_under_hash_seed

DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=60)
ROOT = Path(__file__).resolve().parent.parent
M = 65537


def servers(n: int, weight: int = 1) -> list[tuple[str, int]]:
    return [(f"Server{i}", weight) for i in range(1, n + 1)]


def random_keys(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(12) for _ in range(count)]


KEYS = random_keys(100_000, 20240501)


def reference_entries(names: list[str], weights: list[int], m: int) -> list[int]:
    """Listing 1 of the paper, literally (permutation[i][j] = (offset + j * skip) mod M), with
    Envoy's weighted turns; slow and obvious, to check the fast build against."""
    n = len(names)
    offset = [xxh64(name.encode(), maglev._SEED_OFFSET) % m for name in names]
    skip = [xxh64(name.encode(), maglev._SEED_SKIP) % (m - 1) + 1 for name in names]
    permutation = [[(offset[i] + j * skip[i]) % m for j in range(m)] for i in range(n)]
    nxt = [0] * n
    target = [0] * n
    top = max(weights)
    entry = [-1] * m
    filled = 0
    iteration = 0
    while filled < m:
        iteration += 1
        for i in range(n):
            if filled == m:
                break
            if iteration * weights[i] < target[i]:
                continue
            target[i] += top
            c = permutation[i][nxt[i]]
            while entry[c] >= 0:
                nxt[i] += 1
                c = permutation[i][nxt[i]]
            entry[c] = i
            nxt[i] += 1
            filled += 1
    return entry


member_sets = st.lists(
    st.tuples(st.text("abcdefgh0123456789", min_size=1, max_size=6), st.integers(1, 4)),
    min_size=1,
    max_size=12,
    unique_by=lambda member: member[0],
)


@DETERMINISTIC
@given(member_sets, st.sampled_from([13, 251, 1009]))
def test_matches_the_papers_listing(members: list[tuple[str, int]], m: int) -> None:
    if len(members) > m:
        return
    table = MaglevTable(members, size=m)
    names = sorted(name for name, _ in members)
    weights = [dict(members)[name] for name in names]
    assert list(table.entries) == reference_entries(names, weights, m)


def test_matches_the_papers_listing_at_full_size() -> None:
    table = MaglevTable(servers(5), size=M)
    assert list(table.entries) == reference_entries(list(table.names), [1] * 5, M)


def test_pinned_table() -> None:
    # Seeds and algorithm are fixed forever: a change here moves every key of every user.
    table = MaglevTable(servers(3))
    digest = hashlib.sha256(bytes(table.entries)).hexdigest()
    assert digest == "32985ec5b9521c1f10726ece848a0033ceac72eb8a5cf9939990700b4263f271"
    assert [table.lookup(k) for k in (b"123456", b"/home", b"")] == [0, 2, 2]


# --- balance -------------------------------------------------------------------------------


def test_entries_are_split_evenly_for_n_up_to_100() -> None:
    # Maglev gives every member floor(M/N) or ceil(M/N) entries. Measured worst max/min share
    # ratio over N = 3..100 at M = 65537: 1.00153 (N = 100, 656 vs 655 entries). Every N up to
    # 100 takes 3 s, so a spread of them.
    worst = 1.0
    for n in [*range(3, 21), 31, 47, 64, 77, 99, 100]:
        counts = Counter(MaglevTable(servers(n)).entries)
        assert len(counts) == n
        assert max(counts.values()) - min(counts.values()) <= 1
        worst = max(worst, max(counts.values()) / min(counts.values()))
        for count in counts.values():
            assert abs(count / M - 1 / n) <= 0.01 / n  # within 1% of even
    assert worst == pytest.approx(656 / 655)


@pytest.mark.parametrize("n", [3, 10, 100])
def test_lookups_agree_with_shares(n: int) -> None:
    table = MaglevTable(servers(n))
    shares = table.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    hits = Counter(table.lookup(key) for key in KEYS)
    expected = {i: shares[name] * len(KEYS) for i, name in enumerate(table.names)}
    chi2 = sum((hits[i] - e) ** 2 / e for i, e in expected.items())
    # Chi-square with n - 1 degrees of freedom; measured: 2.3 (n=3), 8.9 (n=10), 92.7 (n=100).
    # The bounds are the 0.999 quantiles: 13.8 (2 df), 27.9 (9 df), 148.2 (99 df).
    assert chi2 < {3: 13.8, 10: 27.9, 100: 148.2}[n]


# --- weights ---------------------------------------------------------------------------------


def test_weight_two_gets_twice_the_entries() -> None:
    table = MaglevTable([("a", 2), ("b", 1), ("c", 1)])
    counts = Counter(table.entries)
    assert counts[0] / counts[1] == pytest.approx(2.0, abs=0.001)
    assert counts[0] / counts[2] == pytest.approx(2.0, abs=0.001)
    hits = Counter(table.lookup(key) for key in KEYS)
    assert hits[0] / hits[1] == pytest.approx(2.0, rel=0.03)


@DETERMINISTIC
@given(st.lists(st.integers(1, 6), min_size=2, max_size=15), st.sampled_from([251, 1009, 4099]))
def test_entries_follow_weights(weights: list[int], m: int) -> None:
    table = MaglevTable([(f"m{i:02}", w) for i, w in enumerate(weights)], size=m)
    counts = Counter(table.entries)
    total = sum(weights)
    for i, weight in enumerate(table.weights):
        # Off by the round-off of the turns only: at most one entry per member.
        assert abs(counts[i] - m * weight / total) <= len(weights) + 1


def test_equal_weights_are_the_unweighted_table() -> None:
    assert MaglevTable(servers(7, weight=3)).entries == MaglevTable(servers(7)).entries


# --- disruption ------------------------------------------------------------------------------


def moved(before: MaglevTable, after: MaglevTable, removed: str) -> tuple[int, int]:
    """(keys that changed member, of which were not on the removed member)."""
    changed = stayed_elsewhere = 0
    for key in KEYS:
        a = before.names[before.lookup(key)]
        b = after.names[after.lookup(key)]
        if a != b:
            changed += 1
            if a != removed:
                stayed_elsewhere += 1
    return changed, stayed_elsewhere


# Measured with KEYS (100k keys), removing Server((n + 1) // 2):
#   n = 3: 33174 moved, 6 of them not on the removed member (0.995/N)
#   n = 5: 20049, 65 (1.002/N); n = 10: 10224, 279 (1.022/N); n = 20: 5254, 323 (1.051/N)
#   n = 50: 2401, 413 (1.200/N); n = 100: 1696, 635 (1.696/N) -- at M = 65537 the paper's
#   M >= 100 N is met only just; at M = 655373, n = 100 moves 1123 (1.12/N).
@pytest.mark.parametrize(
    ("n", "bound", "collateral"), [(3, 1.0, 10), (5, 1.01, 100), (10, 1.03, 300), (20, 1.06, 350)]
)
def test_removing_one_member_moves_about_one_nth(n: int, bound: float, collateral: int) -> None:
    removed = f"Server{(n + 1) // 2}"
    before = MaglevTable(servers(n))
    after = MaglevTable([m for m in servers(n) if m[0] != removed])
    changed, elsewhere = moved(before, after, removed)
    assert changed <= 1.2 * len(KEYS) / n
    assert changed <= bound * len(KEYS) / n
    # Keys that were not on the removed member mostly stay where they were.
    assert elsewhere <= collateral
    assert elsewhere <= 0.01 * len(KEYS)


def test_removing_one_of_100_at_the_default_size() -> None:
    before = MaglevTable(servers(100))
    after = MaglevTable([m for m in servers(100) if m[0] != "Server50"])
    changed, elsewhere = moved(before, after, "Server50")
    assert (changed, elsewhere) == (1696, 635)  # 1.7/N: M/N = 655 is the low end for Maglev


def test_adding_a_member_takes_from_everyone_evenly() -> None:
    before = MaglevTable(servers(9))
    after = MaglevTable(servers(10))
    changed = to_new = 0
    for key in KEYS:
        now = after.names[after.lookup(key)]
        changed += before.names[before.lookup(key)] != now
        to_new += now == "Server10"
    assert to_new <= changed <= 1.05 * to_new
    assert changed <= 1.1 * len(KEYS) / 10


# --- determinism -----------------------------------------------------------------------------


@DETERMINISTIC
@given(st.permutations([(f"node-{c}", 1 + (ord(c) % 3)) for c in "qwertyuiop"]))
def test_member_order_does_not_matter(members: list[tuple[str, int]]) -> None:
    table = MaglevTable(members, size=1009)
    reference = MaglevTable(sorted(members), size=1009)
    assert table == reference
    assert table.entries.tobytes() == reference.entries.tobytes()


_DIGEST_SCRIPT = """
import hashlib
from fastlb.maglev import MaglevTable
members = [("Server%d" % i, 1 + i % 2) for i in range(1, 11)][::-1]
print(hashlib.sha256(bytes(MaglevTable(members).entries)).hexdigest())
"""


def test_same_table_in_other_processes_and_hash_seeds() -> None:
    members = [(f"Server{i}", 1 + i % 2) for i in range(1, 11)]
    here = hashlib.sha256(bytes(MaglevTable(members).entries)).hexdigest()
    for seed in ("0", "12345"):
        assert output_under_hash_seed(_DIGEST_SCRIPT, seed) == here


# --- candidates --------------------------------------------------------------------------------


@DETERMINISTIC
@given(st.binary(max_size=32), st.integers(1, 40))
def test_candidates_are_every_member_once_lookup_first(key: bytes, n: int) -> None:
    table = _small_tables(n)
    order = list(table.candidates(key))
    assert sorted(order) == list(range(n))
    assert order[0] == table.lookup(key)


_TABLES: dict[int, MaglevTable] = {}


def _small_tables(n: int) -> MaglevTable:
    if n not in _TABLES:
        _TABLES[n] = MaglevTable(servers(n), size=4099)
    return _TABLES[n]


def test_candidates_with_a_tiny_weight_and_the_default_size() -> None:
    table = MaglevTable([("big", 1000), ("small", 1), ("mid", 10)])
    assert Counter(table.entries)[table.names.index("small")] >= 1
    for key in KEYS[:200]:
        order = list(table.candidates(key))
        assert sorted(order) == [0, 1, 2]
        assert order[0] == table.lookup(key)


def agreement(members: list[tuple[str, int]], keys: list[bytes]) -> int:
    """How many keys the rebuilt table without their first candidate gives to the second."""
    table = MaglevTable(members)
    without = {name: MaglevTable([m for m in members if m[0] != name]) for name in table.names}
    agree = 0
    for key in keys:
        first, second, *_ = table.candidates(key)
        smaller = without[table.names[first]]
        agree += smaller.names[smaller.lookup(key)] == table.names[second]
    return agree


@pytest.mark.parametrize(
    ("members", "measured"),
    [
        (servers(3), 4997),  # of 5000 keys: 99.9%
        (servers(5), 4985),  # 99.7%
        (servers(10), 4929),  # 98.6%
        ([("a", 2), ("b", 1), ("c", 1)], 4605),  # 92.1%
        ([("a", 1), ("b", 3), ("c", 1), ("d", 5), ("e", 2)], 4056),  # 81.1%
    ],
)
def test_second_candidate_is_where_the_key_goes_when_the_first_is_removed(
    members: list[tuple[str, int]], measured: int
) -> None:
    # Not guaranteed (the rebuilt table is a new fill), but close; walking the entry array
    # forward instead would agree for about 1/(N-1) of the keys or fewer.
    assert agreement(members, KEYS[:5000]) == measured


def test_failover_spreads_over_the_other_members() -> None:
    table = MaglevTable(servers(5))
    seconds = Counter(
        order[1] for key in KEYS[:20000] if (order := list(table.candidates(key)))[0] == 0
    )
    assert set(seconds) == {1, 2, 3, 4}
    assert max(seconds.values()) / min(seconds.values()) < 1.1


# --- building elsewhere -------------------------------------------------------------------------


def test_from_entries_and_pickle_round_trip() -> None:
    table = MaglevTable([*servers(4, weight=2), ("Zed", 1)])
    names, weights = table.names, table.weights
    rebuilt = MaglevTable.from_entries(names, build_maglev_entries(names, weights, M), weights)
    assert rebuilt == table
    restored = pickle.loads(pickle.dumps(table))
    assert restored == table
    assert [restored.lookup(k) for k in KEYS[:100]] == [table.lookup(k) for k in KEYS[:100]]
    assert restored.shares() == table.shares()


def test_wide_tables_use_two_bytes_per_entry() -> None:
    table = MaglevTable(servers(300), size=4099)
    assert table.entries.itemsize == 2
    assert MaglevTable(servers(256), size=4099).entries.itemsize == 1
    names = table.names
    again = MaglevTable.from_entries(names, build_maglev_entries(names, table.weights, 4099))
    assert again == table


def test_build_in_a_worker_process() -> None:
    members = servers(20)
    names = tuple(sorted(name for name, _ in members))
    with ProcessPoolExecutor(max_workers=1) as pool:
        entries = pool.submit(build_maglev_entries, names, (1,) * 20, M).result()
        shipped = pool.submit(MaglevTable, members).result()
    assert MaglevTable.from_entries(names, entries) == MaglevTable(members)
    assert shipped == MaglevTable(members)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([], "at least one member"),
        ([("a", 1), ("b", 1), ("a", 2)], "listed twice"),
        ([("a", 0)], "weight"),
        ([("a", -1)], "weight"),
        ([("a", 1.5)], "weight"),
        ([("a", True)], "weight"),
        ([("", 1)], "name"),
    ],
)
def test_bad_members(members: list[tuple[str, int]], match: str) -> None:
    with pytest.raises(TableError, match=match):
        MaglevTable(members, size=251)


@pytest.mark.parametrize("size", [0, 1, 4, 65536, 65535, 561, 2**32 + 1])
def test_size_must_be_prime(size: int) -> None:
    with pytest.raises(TableError, match="not a prime"):
        MaglevTable(servers(3), size=size)


def test_more_members_than_entries() -> None:
    with pytest.raises(TableError, match="do not fit"):
        MaglevTable(servers(8), size=7)
    assert len(MaglevTable(servers(7), size=7).shares()) == 7


def test_from_entries_rejects_inconsistent_data() -> None:
    entries = build_maglev_entries(("a", "b"), (1, 1), 251)
    with pytest.raises(TableError, match="sorted"):
        MaglevTable.from_entries(("b", "a"), entries)
    with pytest.raises(TableError, match="refer to member"):
        MaglevTable.from_entries(("a",), entries)
    with pytest.raises(TableError, match="not a prime"):
        MaglevTable.from_entries(("a", "b"), entries[:-1])
    with pytest.raises(TableError, match="sorted"):
        build_maglev_entries(("b", "a"), (1, 1), 251)
    with pytest.raises(TableError, match="weights"):
        build_maglev_entries(("a", "b"), (1,), 251)


def test_check_size_accepts_the_default() -> None:
    check_size(65537, 100)
    with pytest.raises(TableError):
        check_size(True, 1)
