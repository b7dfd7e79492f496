"""What a routing table does with a set of request ids, computed from the pure tables.

Why this is valid for the balancer: fastlb routes a request by its X-Request-ID through
`build_table(config.routing, members)`, the same pure function called here, so routing the same
ids through the table in this process gives exactly the counts the balancer would produce (the
report checks that on every balancer run it makes). That lets A-2 and A-4 cover many tables and
replica counts in seconds, and makes their numbers exact and deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fastlb.build import build_table
from fastlb.config import RoutingConfig

__all__ = [
    "TABLES",
    "Moves",
    "Spread",
    "TableKind",
    "moves",
    "predicted_counts",
    "replica_names",
    "request_ids",
    "spread",
]


@dataclass(frozen=True, slots=True)
class TableKind:
    """One routing table the analysis compares."""

    key: str  # short name used in file names and tables
    label: str  # for the charts
    routing: RoutingConfig
    description: str  # for the report


TABLES: tuple[TableKind, ...] = (
    TableKind(
        "classic-spec",
        "classic ring, spec's H and Φ",
        RoutingConfig(table="classic", classic_hash="spec"),
        "the spec's ring: M = 512 slots, K = 9 virtual servers per replica, "
        "H(i) = i² + 2i + 17 and Φ(i, j) = i² + j² + 2j + 25 (mod M), linear probing",
    ),
    TableKind(
        "classic-xxhash",
        "classic ring, xxh64",
        RoutingConfig(table="classic", classic_hash="xxhash"),
        "the same ring (M = 512, K = 9, linear probing) with H and Φ replaced by xxh64 "
        "of the integers' bytes",
    ),
    TableKind(
        "classic-fnv1a",
        "classic ring, FNV-1a",
        RoutingConfig(table="classic", classic_hash="fnv1a"),
        "the same ring with H and Φ replaced by 64-bit FNV-1a of the integers' bytes",
    ),
    TableKind(
        "maglev",
        "Maglev (fastlb default)",
        RoutingConfig(),
        "fastlb's default: a Maglev lookup table of M = 65537 entries, xxh64 of the key",
    ),
)


def replica_names(n: int) -> list[str]:
    """The replicas of an N-replica run: Server1..ServerN, the spec's and fastlb's default names
    (the classic ring takes each replica's id i from the number in its name)."""
    return [f"Server{i}" for i in range(1, n + 1)]


def request_ids(count: int, seed: int) -> list[str]:
    """`count` random 6-digit request ids, the spec's, from a seeded generator: every run of the
    report sends the same ids, so its counts are reproducible."""
    rng = random.Random(seed)
    return [str(rng.randrange(100000, 1000000)) for _ in range(count)]


def predicted_counts(
    routing: RoutingConfig, names: Sequence[str], ids: Iterable[str]
) -> dict[str, int]:
    """How many of `ids` the table for `names` sends to each replica (in `names` order)."""
    table = build_table(routing, [(name, 1) for name in names])
    lookup = table.lookup
    by_index = [0] * len(table.names)
    for key in ids:
        by_index[lookup(key.encode("ascii"))] += 1
    counts = dict(zip(table.names, by_index, strict=True))
    return {name: counts[name] for name in names}


@dataclass(frozen=True, slots=True)
class Spread:
    """How evenly requests were spread over the replicas."""

    n: int
    total: int
    mean: float
    low: int  # the least loaded replica's count
    high: int  # the most loaded replica's count
    std: float  # population standard deviation of the counts
    cv: float  # std / mean: 0 is a perfectly even split
    peak: float  # high / mean: how much more than its share the busiest replica got


def spread(counts: Mapping[str, int]) -> Spread:
    values = list(counts.values())
    n = len(values)
    total = sum(values)
    mean = total / n if n else 0.0
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n) if n else 0.0
    return Spread(
        n=n,
        total=total,
        mean=mean,
        low=min(values, default=0),
        high=max(values, default=0),
        std=std,
        cv=std / mean if mean else 0.0,
        peak=max(values, default=0) / mean if mean else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Moves:
    """Keys that change replica when one of N replicas is removed, averaged over which one.

    A perfect consistent hash moves only the removed replica's keys, and with an even split those
    are 1/N of all keys; `moved` above `removed_share` is keys reshuffled between survivors.
    """

    n: int
    moved: float  # mean fraction of all keys whose replica changed (1/N for any ring: see below)
    removed_share: float  # mean fraction of keys the removed replica held (the minimum to move)
    best: float  # smallest moved fraction over the choices of replica to remove
    worst: float  # largest moved fraction over the choices of replica to remove
    ideal: float  # 1 / N

    # The mean over which replica goes of the keys it held is always 1/N (the shares sum to 1),
    # so `moved` is near 1/N for every table that moves only the removed replica's keys; what
    # tells tables apart is the range best..worst (how uneven the shares are) and
    # moved - removed_share (keys reshuffled between replicas that stayed).


def moves(routing: RoutingConfig, n: int, ids: Sequence[str]) -> Moves:
    """Remove each of Server1..ServerN in turn and count the keys that move."""
    names = replica_names(n)
    keys = [key.encode("ascii") for key in ids]
    before = build_table(routing, [(name, 1) for name in names])
    owner = [before.names[before.lookup(key)] for key in keys]
    moved: list[float] = []
    held: list[float] = []
    for gone in names:
        after = build_table(routing, [(name, 1) for name in names if name != gone])
        lookup, after_names = after.lookup, after.names
        changed = sum(1 for key, was in zip(keys, owner, strict=True)
                      if after_names[lookup(key)] != was)
        moved.append(changed / len(keys))
        held.append(sum(1 for was in owner if was == gone) / len(keys))
    return Moves(
        n=n,
        moved=sum(moved) / n,
        removed_share=sum(held) / n,
        best=min(moved),
        worst=max(moved),
        ideal=1 / n,
    )
