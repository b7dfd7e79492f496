"""Wiring: routing tables built off the event loop, and a balancer started in-process."""

from __future__ import annotations

import uvloop

from fastlb.config import Config, RoutingConfig
from fastlb.control.tables import TableBuilder

MEMBERS = [(f"Server{i}", 1) for i in range(1, 11)]


def test_table_built_in_a_worker_equals_the_inline_one() -> None:
    # How long the loop stalls either way is measured by `python -m bench.table_build`.
    builder = TableBuilder(Config().routing)
    try:
        table = uvloop.run(builder.build(MEMBERS))
    finally:
        builder.close()
    assert table == builder.build_now(MEMBERS)


def test_classic_table_builds_in_a_worker_too() -> None:
    config = Config(routing=RoutingConfig(table="classic"))
    builder = TableBuilder(config.routing)
    try:
        table = uvloop.run(builder.build(MEMBERS))
    finally:
        builder.close()
    assert table == builder.build_now(MEMBERS)
