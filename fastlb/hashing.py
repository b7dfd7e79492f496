"""Hash functions for the routing tables, and the classic ring's pluggable hash families.

Everything here must give the same answer in every process on every machine: a table is rebuilt in
worker processes, compared across restarts, and its keys must not move because the interpreter was
started with another PYTHONHASHSEED. So nothing uses Python's `hash()`: xxh64 (fast, in C, stable
by definition) for real work, and plain integer arithmetic for the spec's ring.

The classic ring's families are a registry rather than an if/else because the spec's analysis (A-4)
asks to swap the ring's hash functions and compare: a family is registered once by name and the
configuration (`routing.classic_hash`) picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import xxhash

from fastlb.errors import TableError

__all__ = [
    "CLASSIC_HASHES",
    "MAX_ID_DIGITS",
    "ClassicHash",
    "classic_hash",
    "fnv1a64",
    "int_bytes",
    "key_int",
    "register_classic_hash",
    "xxh64",
]

_xxh64_intdigest = xxhash.xxh64_intdigest


def xxh64(data: bytes, seed: int = 0) -> int:
    """64-bit xxHash of `data`: the one general-purpose hash of fastlb (stable across processes)."""
    return _xxh64_intdigest(data, seed)


MAX_ID_DIGITS = 32


def key_int(key: bytes) -> int:
    """A request key as the integer the classic ring's H(i) takes.

    The spec's request ids are decimal numbers (random 6-digit ids) and its H is defined on that
    number, so a digits-only key is read as the number (so the spec's hand-worked examples hold);
    any other key (a path, an address, a cookie) is hashed to an integer. So is a run of more
    than MAX_ID_DIGITS digits: no id the spec knows, and it keeps int()'s superlinear parse (and
    its 4300-digit ValueError) off the request path.
    """
    # bytes.isdigit() is ASCII-only, so int() cannot meet a non-ASCII digit it would accept.
    if key.isdigit() and len(key) <= MAX_ID_DIGITS:
        return int(key)
    return _xxh64_intdigest(key, 0)


def int_bytes(i: int) -> bytes:
    """A fixed encoding of an integer for the byte-oriented families (8 bytes little-endian for
    anything that fits in a signed 64-bit integer, longer only for larger ones)."""
    return i.to_bytes(max(8, (i.bit_length() + 8) // 8), "little", signed=True)


_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a (Fowler/Noll/Vo): a simple, well-known alternative to compare xxh64 with."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


@dataclass(frozen=True, slots=True)
class ClassicHash:
    """One hash family of the classic ring.

    `request_slot(i, m)` places request id `i` on a ring of `m` slots (the spec's H);
    `virtual_slot(i, j, m)` places virtual server `j` of replica id `i` (the spec's Phi).
    Both return a slot in range(m).

    `periodic` says that `request_slot(i, m)` depends only on `i mod m` (true of any polynomial
    mod m, such as the spec's H). The ring then knows exactly how requests spread over its slots
    (the histogram of i in range(m)) instead of assuming a uniform spread, which the spec's H,
    a quadratic, is far from.
    """

    name: str
    request_slot: Callable[[int, int], int]
    virtual_slot: Callable[[int, int, int], int]
    description: str = ""
    periodic: bool = False


def _spec_request(i: int, m: int) -> int:
    return (i * i + 2 * i + 17) % m


def _spec_virtual(i: int, j: int, m: int) -> int:
    return (i * i + j * j + 2 * j + 25) % m


def _xxhash_request(i: int, m: int) -> int:
    return _xxh64_intdigest(int_bytes(i), 0) % m


def _xxhash_virtual(i: int, j: int, m: int) -> int:
    # j is appended at a fixed width, so (i, j) pairs never collide as byte strings.
    return _xxh64_intdigest(int_bytes(i) + j.to_bytes(8, "little", signed=True), 0) % m


def _fnv1a_request(i: int, m: int) -> int:
    return fnv1a64(int_bytes(i)) % m


def _fnv1a_virtual(i: int, j: int, m: int) -> int:
    return fnv1a64(int_bytes(i) + j.to_bytes(8, "little", signed=True)) % m


_REGISTRY: dict[str, ClassicHash] = {}

CLASSIC_HASHES: Mapping[str, ClassicHash] = MappingProxyType(_REGISTRY)
"""Read-only view of the registered families, by name; `register_classic_hash` adds to it."""


def register_classic_hash(family: ClassicHash) -> ClassicHash:
    """Add a family to the registry (the analysis adds its own); a name is registered once."""
    if family.name in _REGISTRY:
        raise TableError(f"classic hash {family.name!r} is already registered")
    _REGISTRY[family.name] = family
    return family


def classic_hash(name: str) -> ClassicHash:
    """The family registered as `name`; an unknown name is an error that lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise TableError(f"unknown classic hash {name!r}: known hashes are {known}") from None


register_classic_hash(
    ClassicHash(
        "spec",
        _spec_request,
        _spec_virtual,
        "the spec's H(i) = i^2 + 2i + 17 and Phi(i, j) = i^2 + j^2 + 2j + 25, mod M",
        periodic=True,
    )
)
register_classic_hash(
    ClassicHash("xxhash", _xxhash_request, _xxhash_virtual, "xxh64 of the integers' bytes")
)
register_classic_hash(
    ClassicHash("fnv1a", _fnv1a_request, _fnv1a_virtual, "64-bit FNV-1a of the integers' bytes")
)
