"""Two balancers from the same config show the same table fingerprint (issue 14, section 2).

Real processes: two fastlb instances over the same three static backends, their entries listed
in opposite orders, each asked for /status.json and /metrics. The fingerprint must be the same
on both, be the one the table built from those members has, and change with a weight.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest

from fastlb.build import build_table, table_info
from fastlb.config import RoutingConfig
from tests.conftest import Backend, Fastlb

WEIGHTS = {"b1": 1, "b2": 2, "b3": 3}
INFO = re.compile(r'^fastlb_table_info\{fingerprint="([0-9a-f]+)",kind="([a-z]+)"\} 1\.0$', re.M)


def _config(table: str, backends: dict[str, Backend], order: list[str], weights: dict[str, int]) -> str:
    lines = [
        "[proxy]",
        'listen = "127.0.0.1:{port}"',
        "replica_paths = []",
        "[routing]",
        f'table = "{table}"',
        'key = "path"',
        "[replicas]",
        'provider = "static"',
    ]
    for name in order:
        lines += [
            "[[replicas.static]]",
            f'name = "{name}"',
            f'address = "127.0.0.1:{backends[name].port}"',
            f"weight = {weights[name]}",
        ]
    return "\n".join(lines) + "\n"


def _seen(lb: Fastlb) -> tuple[str, str, str | None]:
    """(fingerprint in /status.json, kind there, fingerprint in /metrics) once all 3 replicas
    are in the table (static replicas join after their first good heartbeat)."""
    deadline = time.monotonic() + 15
    while True:
        status, _, body = lb.get("/status.json")
        assert status == 200
        totals = json.loads(body)["totals"]
        if totals["up"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    status, _, metrics = lb.get("/metrics")
    assert status == 200
    series = INFO.findall(metrics.decode())
    assert len(series) <= 1
    assert not series or series[0][1] == totals["table"]
    return totals["table_fingerprint"], totals["table"], series[0][0] if series else None


@pytest.mark.parametrize("table", ["maglev", "ketama"])
def test_two_instances_of_one_config_show_one_fingerprint(
    table: str, start_backend: Callable[..., Backend], start_fastlb: Callable[[str], Fastlb]
) -> None:
    backends = {name: start_backend("echo", name=name) for name in WEIGHTS}
    one = start_fastlb(_config(table, backends, ["b1", "b2", "b3"], WEIGHTS))
    two = start_fastlb(_config(table, backends, ["b3", "b1", "b2"], WEIGHTS))
    heavier = start_fastlb(_config(table, backends, ["b1", "b2", "b3"], {**WEIGHTS, "b1": 2}))

    first, kind, in_metrics = _seen(one)
    assert kind == table
    assert first is not None and in_metrics == first
    assert _seen(two) == (first, table, first)
    # The very table fastlb builds from these members and addresses.
    routing = RoutingConfig(
        table=table, labels=tuple((n, f"127.0.0.1:{b.port}") for n, b in backends.items())
    )
    assert table_info(build_table(routing, list(WEIGHTS.items()))) == (table, first)
    # And a weight of difference is a fingerprint of difference.
    other, _, other_metrics = _seen(heavier)
    assert other != first and other_metrics == other
