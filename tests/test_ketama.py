"""The ketama table: nginx's `hash $key consistent` ring, rebuilt point for point.

The live comparison with a real nginx is tests/test_ketama_nginx.py; these are the unit rules.
"""

from __future__ import annotations

import pickle
import zlib
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb.build import build_table, table_info
from fastlb.config import RoutingConfig
from fastlb.errors import TableError
from fastlb.ketama import POINTS_PER_WEIGHT, KetamaTable, ketama_points, split_server
from fastlb.maglev import MaglevTable
from fastlb.ring import ClassicRing
from fastlb.table import Table

MEMBERS = [("b1", 1), ("b2", 2), ("b3", 3)]
LABELS = {"b1": "127.0.0.1:8001", "b2": "127.0.0.1:8002", "b3": "127.0.0.1:8003"}
KEYS = [b"/path/%d" % i for i in range(2000)]


def _crc32_bitwise(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC-32 (reflected, poly 0xEDB88320) without the final xor: nginx's ngx_crc32_update on a
    running value, written out bit by bit so the table's use of zlib is checked against it."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


def _nginx_points(host: bytes, port: bytes, weight: int) -> list[int]:
    """ngx_http_upstream_update_chash, transcribed: init, update(host, "\\0", port), then per
    point a copy updated with the previous hash's 4 bytes and finalised."""
    base = _crc32_bitwise(host + b"\0" + port)
    out = []
    prev = 0
    for _ in range(weight * 160):
        prev = _crc32_bitwise(prev.to_bytes(4, "little"), base) ^ 0xFFFFFFFF
        out.append(prev)
    return out


def test_points_are_nginxs() -> None:
    assert POINTS_PER_WEIGHT == 160
    for label, host, port, weight in [
        ("127.0.0.1:8001", b"127.0.0.1", b"8001", 1),
        ("[::1]:80", b"[::1]", b"80", 2),
        ("backend.example", b"backend.example", b"", 1),
    ]:
        points = ketama_points(label, weight)
        assert len(points) == 160 * weight
        assert points == _nginx_points(host, port, weight)


@pytest.mark.parametrize(
    ("label", "split"),
    [
        ("127.0.0.1:8001", (b"127.0.0.1", b"8001")),
        ("[::1]:8001", (b"[::1]", b"8001")),
        ("[::1]", (b"[::1]", b"")),  # "]" is not a digit: no port
        ("host.example:80", (b"host.example", b"80")),
        ("host.example", (b"host.example", b"")),
        ("unix:/run/app.sock", (b"/run/app.sock", b"")),
        ("UNIX:/s", (b"/s", b"")),
        ("a:b1", (b"a:b1", b"")),  # the digits stop at "b", before any ":"
        ("h:", (b"h", b"")),
        ("Server1", (b"Server1", b"")),
    ],
)
def test_the_address_splits_as_nginx_splits_it(label: str, split: tuple[bytes, bytes]) -> None:
    assert split_server(label) == split


def test_points_are_sorted_deduplicated_and_160_per_weight() -> None:
    table = KetamaTable(MEMBERS, LABELS)
    every = sorted(h for name, w in MEMBERS for h in ketama_points(LABELS[name], w))
    assert len(every) == 160 * 6
    points = table.points
    assert [h for h, _ in points] == sorted(set(every))
    for h, index in points:
        name = table.names[index]
        assert h in ketama_points(LABELS[name], dict(MEMBERS)[name])


def test_lookup_is_the_first_point_at_or_after_the_keys_crc32() -> None:
    table = KetamaTable(MEMBERS, LABELS)
    points = table.points
    for key in KEYS:
        h = zlib.crc32(key)
        expected = next((owner for point, owner in points if point >= h), points[0][1])
        assert table.lookup(key) == expected
    # A key exactly on a point goes to that point's member.
    on_point = [p for p in points if p[0] == zlib.crc32(b"")]
    assert not on_point or table.lookup(b"") == on_point[0][1]


def test_lookup_wraps_around_to_the_first_point() -> None:
    table = KetamaTable(MEMBERS, LABELS)
    last = table.points[-1][0]
    beyond = next(k for k in (b"w%d" % i for i in range(10**6)) if zlib.crc32(k) > last)
    assert table.point_of(beyond) == 0
    assert table.lookup(beyond) == table.points[0][1]
    below = next(k for k in (b"w%d" % i for i in range(10**6)) if zlib.crc32(k) <= table.points[0][0])
    assert table.point_of(below) == 0


def test_candidates_start_at_lookup_and_list_every_member_once_in_ring_order() -> None:
    table = KetamaTable(MEMBERS, LABELS)
    owners = [owner for _, owner in table.points]
    for key in KEYS[:300]:
        order = list(table.candidates(key))
        assert order[0] == table.lookup(key)
        assert sorted(order) == [0, 1, 2]
        start = table.point_of(key)
        walked = owners[start:] + owners[:start]
        assert order == list(dict.fromkeys(walked))


def test_shares_are_arc_lengths_and_follow_weights() -> None:
    table = KetamaTable(MEMBERS, LABELS)
    shares = table.shares()
    assert list(shares) == ["b1", "b2", "b3"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    # The arcs are what keys hit: the share of 20,000 keys is close to each member's arc.
    keys = [b"/s/%d" % i for i in range(20000)]
    hits = [0, 0, 0]
    for key in keys:
        hits[table.lookup(key)] += 1
    for index, name in enumerate(table.names):
        assert hits[index] / len(keys) == pytest.approx(shares[name], abs=0.015)
    # 160 points per weight unit keep the shares near the weights (ketama's usual +-10%).
    for name, weight in MEMBERS:
        assert shares[name] == pytest.approx(weight / 6, rel=0.15)


def test_member_order_does_not_matter() -> None:
    first = KetamaTable(MEMBERS, LABELS)
    for order in permutations(MEMBERS):
        again = KetamaTable(list(order), LABELS)
        assert again == first and again.points == first.points
        assert again.fingerprint() == first.fingerprint()
        assert [again.lookup(k) for k in KEYS] == [first.lookup(k) for k in KEYS]


def test_a_member_without_a_label_is_hashed_by_its_name() -> None:
    table = KetamaTable(MEMBERS, {"b1": "127.0.0.1:8001"})
    assert table.labels == ("127.0.0.1:8001", "b2", "b3")
    assert KetamaTable(MEMBERS).labels == ("b1", "b2", "b3")
    # Labels of non-members (replicas out of the table) are ignored.
    assert KetamaTable(MEMBERS[:1], LABELS).labels == ("127.0.0.1:8001",)


def test_a_label_moves_the_points() -> None:
    assert KetamaTable(MEMBERS, LABELS).points != KetamaTable(MEMBERS).points


def test_two_members_with_one_label_are_refused() -> None:
    with pytest.raises(TableError, match=r"members 'b1' and 'b2' have the same label '127.0.0.1:1'"):
        KetamaTable(MEMBERS, {"b1": "127.0.0.1:1", "b2": "127.0.0.1:1"})
    with pytest.raises(TableError, match="at least one member"):
        KetamaTable([])


def test_pickling_round_trip() -> None:
    table = KetamaTable(MEMBERS, LABELS)
    again = pickle.loads(pickle.dumps(table, pickle.HIGHEST_PROTOCOL))
    assert again == table
    assert again.points == table.points
    assert again.fingerprint() == table.fingerprint()
    assert [again.lookup(k) for k in KEYS] == [table.lookup(k) for k in KEYS]


def test_built_from_the_routing_config_with_its_labels() -> None:
    routing = RoutingConfig(table="ketama", labels=tuple(LABELS.items()))
    table = build_table(routing, MEMBERS)
    assert isinstance(table, KetamaTable) and isinstance(table, Table)
    assert table == KetamaTable(MEMBERS, LABELS)
    assert table_info(table) == ("ketama", table.fingerprint())


# ------------------------------------------------------------------ fingerprints
def _tables(members: list[tuple[str, int]]) -> list[Table]:
    return [
        MaglevTable(members, size=1009),
        ClassicRing(members),
        KetamaTable(members, LABELS),
    ]


def test_fingerprints_ignore_member_order() -> None:
    for one, two in zip(_tables(MEMBERS), _tables(MEMBERS[::-1]), strict=True):
        assert one.fingerprint() == two.fingerprint()
        assert len(one.fingerprint()) == 16 and int(one.fingerprint(), 16) >= 0


def test_fingerprints_differ_with_weights_members_kind_and_parameters() -> None:
    base = [t.fingerprint() for t in _tables(MEMBERS)]
    heavier = [t.fingerprint() for t in _tables([("b1", 2), ("b2", 2), ("b3", 3)])]
    fewer = [t.fingerprint() for t in _tables(MEMBERS[:2])]
    assert all(a != b for a, b in zip(base, heavier, strict=True))
    assert all(a != b for a, b in zip(base, fewer, strict=True))
    assert len(set(base)) == 3  # one per kind
    assert MaglevTable(MEMBERS, size=1013).fingerprint() != base[0]
    assert ClassicRing(MEMBERS, probe="quadratic").fingerprint() != base[1]
    assert ClassicRing(MEMBERS, hash="xxhash").fingerprint() != base[1]
    assert KetamaTable(MEMBERS).fingerprint() != base[2]


def test_fingerprints_survive_pickling() -> None:
    for table in _tables(MEMBERS):
        assert pickle.loads(pickle.dumps(table)).fingerprint() == table.fingerprint()


def _nginx_lookup(points: list[tuple[int, int]], key: bytes) -> int:
    """ngx_http_upstream_find_chash_point, then `point[hp->hash % points->number]`."""
    h = _crc32_bitwise(key) ^ 0xFFFFFFFF
    i, j = 0, len(points)
    while i < j:
        k = (i + j) // 2
        if h > points[k][0]:
            i = k + 1
        elif h < points[k][0]:
            j = k
        else:
            i = k
            break
    return points[i % len(points)][1]


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    servers=st.lists(
        st.tuples(st.integers(1, 65535), st.integers(1, 4)),
        min_size=1,
        max_size=6,
        unique_by=lambda server: server[0],
    ),
    keys=st.lists(st.binary(max_size=30), min_size=1, max_size=30),
)
def test_lookup_is_nginxs_for_any_servers_and_keys(
    servers: list[tuple[int, int]], keys: list[bytes]
) -> None:
    # Members named in another order than their addresses, so names and labels are unrelated.
    members = [(f"m{65535 - port:05d}", weight) for port, weight in servers]
    labels = {f"m{65535 - port:05d}": f"10.1.2.3:{port}" for port, _ in servers}
    table = KetamaTable(members, labels)
    every = sorted(
        (h, table.names.index(name))
        for (name, weight) in members
        for h in _nginx_points(b"10.1.2.3", labels[name].rpartition(":")[2].encode(), weight)
    )
    deduped = [p for n, p in enumerate(every) if n == 0 or p[0] != every[n - 1][0]]
    assert table.points == deduped
    for key in keys:
        assert table.lookup(key) == _nginx_lookup(deduped, key)


def test_weight_beyond_the_points_limit_is_refused() -> None:
    with pytest.raises(TableError, match=r"weights sum to 4097: a ketama table takes at most 4096"):
        KetamaTable([("a", 4096), ("b", 1)])
    assert len(KetamaTable([("a", 4095), ("b", 1)]).points) <= 4096 * 160
