"""The table contract: build_table's choice, check_members, and both tables against the Protocol."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb.build import build_table
from fastlb.config import RoutingConfig
from fastlb.errors import TableError
from fastlb.maglev import MaglevTable
from fastlb.ring import ClassicRing
from fastlb.table import Table, check_members

MEMBERS = [("Server3", 1), ("Server1", 2), ("Server2", 1)]


def test_default_is_maglev_at_the_configured_size() -> None:
    table = build_table(RoutingConfig(), MEMBERS)
    assert isinstance(table, MaglevTable)
    assert table.size == 65537
    assert table.names == ("Server1", "Server2", "Server3")
    small = build_table(RoutingConfig(maglev_size=251), MEMBERS)
    assert isinstance(small, MaglevTable) and small.size == 251


def test_classic_takes_probe_and_hash() -> None:
    routing = RoutingConfig(table="classic", classic_probe="quadratic", classic_hash="xxhash")
    table = build_table(routing, MEMBERS)
    assert isinstance(table, ClassicRing)
    assert (table.probe, table.hash, table.size, table.virtual) == ("quadratic", "xxhash", 512, 9)
    assert table.names == ("Server1", "Server2", "Server3")


def test_unknown_table() -> None:
    with pytest.raises(TableError, match=r"unknown routing table 'rendezvous'.*maglev, classic"):
        build_table(RoutingConfig(table="rendezvous"), MEMBERS)


def test_configuration_errors_surface_as_table_errors() -> None:
    with pytest.raises(TableError, match="not a prime"):
        build_table(RoutingConfig(maglev_size=65536), MEMBERS)
    with pytest.raises(TableError, match="unknown classic hash"):
        build_table(RoutingConfig(table="classic", classic_hash="crc32"), MEMBERS)
    with pytest.raises(TableError, match="unknown classic ring probe"):
        build_table(RoutingConfig(table="classic", classic_probe="double"), MEMBERS)
    with pytest.raises(TableError, match="at least one member"):
        build_table(RoutingConfig(), [])


def test_check_members_sorts_and_validates() -> None:
    assert check_members(MEMBERS) == (("Server1", "Server2", "Server3"), (2, 1, 1))
    for bad, match in [
        ([], "at least one"),
        ([("a", 1), ("a", 2)], "listed twice"),
        ([("a", 0)], "weight 0"),
        ([("a", 2.0)], "weight 2.0"),
        ([("a", False)], "weight False"),
        ([(3, 1)], "name 3"),
    ]:
        with pytest.raises(TableError, match=match):
            check_members(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "routing",
    [
        RoutingConfig(maglev_size=1009),
        RoutingConfig(table="classic"),
        RoutingConfig(table="classic", classic_probe="quadratic", classic_hash="fnv1a"),
        RoutingConfig(table="ketama"),
    ],
    ids=["maglev", "classic", "classic-quadratic-fnv1a", "ketama"],
)
@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    members=st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.integers(1, 3)),
        min_size=1,
        max_size=12,
        unique_by=lambda member: member[0],
    ),
    keys=st.lists(st.binary(max_size=20), min_size=1, max_size=10),
)
def test_both_tables_keep_the_contract(
    routing: RoutingConfig, members: list[tuple[str, int]], keys: list[bytes]
) -> None:
    table = build_table(routing, members)
    assert isinstance(table, Table)
    assert table.names == tuple(sorted(name for name, _ in members))
    shares = table.shares()
    assert list(shares) == list(table.names)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(0.0 <= share <= 1.0 for share in shares.values())
    for key in keys:
        index = table.lookup(key)
        assert 0 <= index < len(table.names)
        order = list(table.candidates(key))
        assert order[0] == index
        assert sorted(order) == list(range(len(table.names)))
    # Rebuilding from the same members in another order gives the same answers.
    again = build_table(routing, members[::-1])
    assert [again.lookup(key) for key in keys] == [table.lookup(key) for key in keys]
    assert again.fingerprint() == table.fingerprint()


@pytest.mark.parametrize(
    "routing",
    [
        RoutingConfig(),
        RoutingConfig(table="classic", classic_probe="quadratic"),
        RoutingConfig(table="ketama", labels=(("Server1", "127.0.0.1:8001"),)),
    ],
    ids=["maglev", "classic", "ketama"],
)
def test_tables_travel_between_processes(routing: RoutingConfig) -> None:
    # The wiring builds a table in a worker process and gets it back pickled.
    table = build_table(routing, MEMBERS)
    assert pickle.loads(pickle.dumps(table)) == table
    with ProcessPoolExecutor(max_workers=1) as pool:
        shipped = pool.submit(build_table, routing, MEMBERS).result()
    assert shipped == table
    keys = [b"123456", b"/home", b"10.0.0.1"]
    assert [shipped.lookup(k) for k in keys] == [table.lookup(k) for k in keys]
    assert shipped.shares() == table.shares()
    assert shipped.fingerprint() == table.fingerprint()
