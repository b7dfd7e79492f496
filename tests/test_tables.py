"""Routing tables built off the event loop, in the table worker process."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import pytest
import uvloop

from fastlb.config import Config, RoutingConfig
from fastlb.control.tables import TableBuilder
from fastlb.errors import FastlbError
from fastlb.maglev import MaglevTable
from fastlb.table import Table

MEMBERS = [(f"Server{i}", 1) for i in range(1, 11)]


def build_in_worker(builder: TableBuilder, *requests: Sequence[tuple[str, int]]) -> list[Table]:
    async def run() -> list[Table]:
        try:
            return [await builder.build(members) for members in requests]
        finally:
            await builder.close()

    return uvloop.run(run())


def test_table_built_in_a_worker_equals_the_inline_one() -> None:
    # How long the loop stalls either way is measured by `python -m bench.table_build`.
    builder = TableBuilder(Config().routing)
    (table,) = build_in_worker(builder, MEMBERS)
    assert table == builder.build_now(MEMBERS)


def test_classic_table_builds_in_a_worker_too() -> None:
    builder = TableBuilder(Config(routing=RoutingConfig(table="classic")).routing)
    (table,) = build_in_worker(builder, MEMBERS)
    assert table == builder.build_now(MEMBERS)


def test_one_worker_serves_builds_in_turn_and_takes_reloaded_settings() -> None:
    builder = TableBuilder(Config().routing)
    small = RoutingConfig(maglev_size=1009)

    async def run() -> tuple[list[Table], set[int]]:
        pids: set[int] = set()
        tables: list[Table] = []
        try:
            for i, members in enumerate((MEMBERS, MEMBERS[:3], MEMBERS[:5])):
                if i == 2:
                    builder.routing = small  # as a reload does
                tables.append(await builder.build(members))
                assert builder._worker is not None
                pids.add(builder._worker.pid)
        finally:
            await builder.close()
        return tables, pids

    expected = builder.build_now(MEMBERS)
    tables, pids = uvloop.run(run())
    assert len(pids) == 1
    assert tables[0] == expected
    assert tables[1] != tables[0]
    assert isinstance(tables[2], MaglevTable) and tables[2].size == 1009


def test_members_the_table_refuses_raise_the_same_error_here() -> None:
    builder = TableBuilder(Config().routing)
    bad = [("Server1", 1), ("Server1", 1)]
    with pytest.raises(FastlbError) as inline:
        builder.build_now(bad)
    with pytest.raises(FastlbError) as remote:
        build_in_worker(builder, bad)
    assert type(remote.value) is type(inline.value)
    assert str(remote.value) == str(inline.value)


def test_a_worker_that_dies_is_an_error_then_replaced() -> None:
    builder = TableBuilder(Config().routing)

    async def run() -> Table:
        try:
            await builder.build(MEMBERS)
            assert builder._worker is not None
            first = builder._worker.pid
            os.kill(first, signal.SIGKILL)
            await builder._worker.wait()
            # The dead worker is noticed when the pipe breaks or, here, by its exit code.
            table = await builder.build(MEMBERS)
            assert builder._worker.pid != first
            return table
        finally:
            await builder.close()

    assert uvloop.run(run()) == builder.build_now(MEMBERS)


def test_the_worker_exits_when_closed() -> None:
    builder = TableBuilder(Config().routing)

    async def run() -> int:
        await builder.build(MEMBERS[:2])
        assert builder._worker is not None
        worker = builder._worker
        await builder.close()
        assert worker.returncode is not None
        return worker.returncode

    assert uvloop.run(run()) == 0


def test_no_thread_is_started_for_it() -> None:
    # The point of the worker being a plain child (see TableBuilder): fastlb stays one thread.
    builder = TableBuilder(Config().routing)

    async def run() -> int:
        try:
            await builder.build(MEMBERS[:2])
            return len(os.listdir("/proc/self/task"))
        finally:
            await builder.close()

    before = len(os.listdir("/proc/self/task"))
    assert uvloop.run(run()) == before
