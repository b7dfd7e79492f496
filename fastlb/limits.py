"""The facts that more than one part of fastlb checks or relies on, each written once.

Every entry here was written in two or more places before, free to drift apart: the config
file, the controller and the admin command language each spelled the replica-name rule and
each worded the weight bound their own way ("expected a positive integer", "expected an
integer 1..256", "weight must be an integer from 1 to 256"); the config and the Maglev table
each had a primality test; the config and the upstreams each listed the default histogram
buckets; the config, the table factory and the tables each listed the table kinds, the
classic ring's probes or Maglev's default size. Whoever accepts or refuses one of these now
asks this module and states the rule in the words it holds, so a name or a weight is accepted
or refused the same way, in the same words, whether it comes from the file, `fastlb ctl`, the
admin socket or POST /add.

Pure on purpose: the standard library only and no fastlb import, so that config, the tables,
the controller and the data path can all import it without an import circle and without
importing each other. Predicates return a verdict; the callers raise their own error types
(ConfigError with the file's position, ControlError, CommandError with the usage) around the
rule's words.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

__all__ = [
    "ACCESS_FORMATS",
    "CLASSIC_PROBES",
    "DURATION_BUCKETS",
    "KETAMA_MAX_WEIGHT",
    "MAGLEV_SIZE",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "REPLICA_NAME_MAX",
    "REPLICA_NAME_RULE",
    "TABLE_KINDS",
    "WEIGHT_RULE",
    "is_prime",
    "is_replica_name",
    "is_weight",
]

# ------------------------------------------------------------------ replica names
#: A replica's name is also its container's name and its host name, so it follows Docker's
#: container-name rule ([a-zA-Z0-9][a-zA-Z0-9_.-]*) within the 63 characters of a DNS label.
REPLICA_NAME_MAX: Final = 63
_REPLICA_NAME: Final = re.compile(rf"[a-zA-Z0-9][a-zA-Z0-9_.-]{{0,{REPLICA_NAME_MAX - 1}}}")
#: The rule as every refusal states it, after "expected ".
REPLICA_NAME_RULE: Final = (
    'a replica name (letters, digits, "_", "." or "-", starting with a letter or digit, '
    f"at most {REPLICA_NAME_MAX} characters)"
)


def is_replica_name(value: object) -> TypeGuard[str]:
    """Whether `value` may name a replica (REPLICA_NAME_RULE). ASCII only: a container or host
    name cannot hold other scripts' letters, so "Sérver" is refused here, not by Docker later."""
    return isinstance(value, str) and _REPLICA_NAME.fullmatch(value) is not None


# ------------------------------------------------------------------ weights
#: The bounds on a replica's weight, for the file and `set weight` alike. HAProxy's ceiling: a
#: weight is a relative share of keys, and a ratio of more than 256:1 between two replicas is
#: almost certainly a typo (30 meant as 3) rather than a wish.
MIN_WEIGHT: Final = 1
MAX_WEIGHT: Final = 256
#: The bound as every refusal states it, after "expected ".
WEIGHT_RULE: Final = f"an integer from {MIN_WEIGHT} to {MAX_WEIGHT}"


def is_weight(value: object) -> TypeGuard[int]:
    """Whether `value` is a weight (WEIGHT_RULE): an int, not a bool, not a whole float."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and MIN_WEIGHT <= value <= MAX_WEIGHT
    )


# ------------------------------------------------------------------ tables
#: The routing tables fastlb can build, the default first (fastlb.build.build_table).
TABLE_KINDS: Final = ("maglev", "classic", "ketama")
#: Maglev's table size unless [routing] maglev_size says otherwise: prime, and 100 slots or
#: more for each of up to 655 replicas (the paper's M >= 100 N).
MAGLEV_SIZE: Final = 65537
#: How the classic ring moves past a taken slot, the default first (fastlb.ring).
CLASSIC_PROBES: Final = ("linear", "quadratic")
#: The most units of weight, summed over the replicas, a ketama table takes: 160 points each
#: (nginx's), so 655,360 points, built in 0.46-0.76 s compiled (0.64 s from source). The
#: file's own bounds (1000 replicas of weight 256) would make 41 million points: seconds of
#: build and gigabytes.
KETAMA_MAX_WEIGHT: Final = 4096

# Deterministic Miller-Rabin bases: exact for every n < 3.3 * 10**24.
_MR_BASES: Final = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def is_prime(n: int) -> bool:
    """Whether `n` is prime: exactly, and at once even for a silly large configured size, where
    trial division of a typo would hang the config check. (Maglev's table size must be prime:
    each member walks the table with a step coprime to it, and only a prime size makes every
    step visit every slot.)"""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# ------------------------------------------------------------------ metrics
#: Upper bounds (seconds) of the response-time histogram buckets unless [metrics] buckets says
#: otherwise: 100 µs to 10 s in 1-2-5 steps. Prometheus' defaults start at 5 ms, where a replica
#: answering in about 1 ms falls wholly in the first bucket, and the status page's p50/p99 were
#: that bucket's interpolation (2.50 and 4.95 ms) whatever the replica did. 1-2-5 rather than
#: Prometheus' 1-2.5-5 because local replicas sit between 1 and 2 ms: a replica of 1.3 ms
#: measured from the client read p50 1.52 ms on the status page with these bounds, 1.79 ms
#: with 1-2.5-5, 2.55 ms with the old ones. 16 bounds: the data path's bucket scan stops at the
#: first bound above the duration, so a fast request walks a few of them and no more.
DURATION_BUCKETS: Final = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1.0, 2.0, 5.0, 10.0,
)


# ------------------------------------------------------------------ logs
#: `[log] access_format` values (fastlb/observe/access.py writes them): nginx's combined
#: format with fastlb's fields appended, or one JSON object a line.
ACCESS_FORMATS: Final = ("combined", "json")
