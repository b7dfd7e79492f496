"""Hash functions and the classic ring's hash families."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb import hashing
from fastlb.errors import TableError
from fastlb.hashing import (
    CLASSIC_HASHES,
    ClassicHash,
    classic_hash,
    fnv1a64,
    int_bytes,
    key_int,
    register_classic_hash,
    xxh64,
)

DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=200)


def test_xxh64_known_values() -> None:
    # The reference value of XXH64 on the empty input, seed 0.
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"abc") != xxh64(b"abc", seed=1)
    assert xxh64(b"abc", 7) == xxh64(b"abc", seed=7)


def test_fnv1a64_reference_vectors() -> None:
    # From the FNV authors' test suite (FNV-1a, 64 bits).
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_key_int_reads_digit_ids_as_numbers() -> None:
    assert key_int(b"123456") == 123456
    assert key_int(b"000003") == 3
    assert key_int(b"0") == 0


def test_key_int_hashes_overlong_digit_runs() -> None:
    assert key_int(b"9" * 32) == 10**32 - 1
    assert key_int(b"9" * 33) == xxh64(b"9" * 33)
    assert key_int(b"1" * 5000) == xxh64(b"1" * 5000)  # int() would raise past 4300 digits


def test_key_int_hashes_everything_else() -> None:
    for key in (b"/home", b"12a", b"-12", b" 12", b"1.5", b""):
        assert key_int(key) == xxh64(key), key
    # Non-ASCII digits are not digits here (int() would accept them).
    arabic = "\u0661\u0662".encode()
    assert key_int(arabic) == xxh64(arabic)


@DETERMINISTIC
@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_int_bytes_is_a_fixed_injective_encoding(i: int) -> None:
    encoded = int_bytes(i)
    assert len(encoded) >= 8
    assert int.from_bytes(encoded, "little", signed=True) == i
    if -(2**63) <= i < 2**63:
        assert len(encoded) == 8


def test_spec_functions_hand_computed() -> None:
    spec = CLASSIC_HASHES["spec"]
    # H(i) = i^2 + 2i + 17 mod 512
    assert spec.request_slot(0, 512) == 17
    assert spec.request_slot(1, 512) == 20  # 1 + 2 + 17
    assert spec.request_slot(3, 512) == 32  # 9 + 6 + 17
    assert spec.request_slot(22, 512) == 33  # 484 + 44 + 17 = 545
    assert spec.request_slot(123456, 512) == 145  # 123456 = 64 mod 512; 4096 + 128 + 17 = 4241
    # Phi(i, j) = i^2 + j^2 + 2j + 25 mod 512
    assert spec.virtual_slot(1, 0, 512) == 26
    assert spec.virtual_slot(1, 1, 512) == 29  # 1 + 1 + 2 + 25
    assert spec.virtual_slot(2, 3, 512) == 44  # 4 + 9 + 6 + 25
    assert spec.virtual_slot(3, 8, 512) == 114  # 9 + 64 + 16 + 25
    assert spec.virtual_slot(30, 0, 512) == 413  # 900 + 25 = 925
    assert spec.periodic


def test_registry_holds_the_three_families() -> None:
    assert {"spec", "xxhash", "fnv1a"} <= set(CLASSIC_HASHES)
    for name, family in CLASSIC_HASHES.items():
        assert family.name == name
        assert classic_hash(name) is family


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        CLASSIC_HASHES["mine"] = CLASSIC_HASHES["spec"]  # type: ignore[index]


def test_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(TableError) as info:
        classic_hash("md5")
    message = str(info.value)
    assert "'md5'" in message
    for name in ("spec", "xxhash", "fnv1a"):
        assert name in message


def test_register_a_family() -> None:
    family = ClassicHash("identity-test", lambda i, m: i % m, lambda i, j, m: (i + j) % m)
    register_classic_hash(family)
    try:
        assert classic_hash("identity-test") is family
        with pytest.raises(TableError, match="already registered"):
            register_classic_hash(family)
    finally:
        del hashing._REGISTRY["identity-test"]
    with pytest.raises(TableError):
        classic_hash("identity-test")


@DETERMINISTIC
@given(
    st.sampled_from(["spec", "xxhash", "fnv1a"]),
    st.integers(min_value=0, max_value=2**80),
    st.integers(min_value=0, max_value=4096),
    st.integers(min_value=1, max_value=10_000),
)
def test_families_stay_in_range(name: str, i: int, j: int, m: int) -> None:
    family = CLASSIC_HASHES[name]
    assert 0 <= family.request_slot(i, m) < m
    assert 0 <= family.virtual_slot(i, j, m) < m


@DETERMINISTIC
@given(st.integers(min_value=0, max_value=2**70), st.integers(min_value=1, max_value=4096))
def test_spec_request_slot_is_periodic(i: int, m: int) -> None:
    spec = CLASSIC_HASHES["spec"]
    assert spec.request_slot(i + m, m) == spec.request_slot(i, m)
    assert spec.request_slot(i, m) == spec.request_slot(i % m, m)


def test_byte_families_separate_i_and_j() -> None:
    for name in ("xxhash", "fnv1a"):
        family = CLASSIC_HASHES[name]
        slots = {family.virtual_slot(i, j, 2**61 - 1) for i in range(20) for j in range(20)}
        assert len(slots) == 400, name
