"""Two balancers from the same config show the same table fingerprint (issue 14, section 2).

Real processes: two fastlb instances over the same static backends, their entries listed in
different orders, each asked for /status.json and /metrics. The fingerprint must be the same
on both, be the one the table built from those members has, and change with a weight; after
the same adds and removes (reloads) applied in different orders, both show one fingerprint
again and send 2,000 keys to the same replicas.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
from collections.abc import Callable

import pytest

from fastlb.build import build_table, table_info
from fastlb.config import RoutingConfig
from tests.conftest import Backend, Fastlb, wait_for

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


def _totals(lb: Fastlb) -> dict[str, object]:
    status, _, body = lb.get("/status.json")
    assert status == 200
    totals: dict[str, object] = json.loads(body)["totals"]
    return totals


def _expected(table: str, backends: dict[str, Backend], members: dict[str, int]) -> str:
    """The fingerprint of the table fastlb builds from `members` (and their addresses)."""
    labels = tuple((n, f"127.0.0.1:{backends[n].port}") for n in members)
    built = build_table(RoutingConfig(table=table, labels=labels), list(members.items()))
    return table_info(built)[1]


def _reload(lb: Fastlb, text: str, fingerprint: str) -> None:
    """SIGHUP with `text` as the file; back once the table in place has `fingerprint` (the
    replica count in /status.json changes before the new table is published)."""
    lb.config.write_text(text.replace("{port}", str(lb.port)))
    lb.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _totals(lb)["table_fingerprint"] == fingerprint, 20.0, "the new table")


def _served_by(lb: Fastlb, keys: int) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    try:
        out = []
        for i in range(keys):
            conn.request("GET", f"/key/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            out.append(resp.getheader("X-Served-By") or "")
        return out
    finally:
        conn.close()


@pytest.mark.parametrize("table", ["maglev", "ketama"])
def test_the_same_adds_and_removes_in_another_order_end_in_one_table(
    table: str, start_backend: Callable[..., Backend], start_fastlb: Callable[[str], Fastlb]
) -> None:
    backends = {name: start_backend("echo", name=name) for name in ("b1", "b2", "b3", "b4")}
    weights = {"b1": 1, "b2": 2, "b3": 3, "b4": 2}

    def conf(names: list[str]) -> str:
        return _config(table, backends, names, weights)

    one = start_fastlb(conf(["b1", "b2", "b3"]))
    two = start_fastlb(conf(["b3", "b2", "b1"]))

    def fingerprint(names: str) -> str:
        return _expected(table, backends, {n: weights[n] for n in names.split()})

    before = fingerprint("b1 b2 b3")
    assert _totals(one)["table_fingerprint"] == _totals(two)["table_fingerprint"] == before
    # One instance adds b4 then removes b2; the other removes b2 then adds b4. Each step's
    # table is the one those members make, so both end in the same table.
    _reload(one, conf(["b1", "b2", "b3", "b4"]), fingerprint("b1 b2 b3 b4"))
    _reload(one, conf(["b1", "b3", "b4"]), fingerprint("b1 b3 b4"))
    _reload(two, conf(["b3", "b1"]), fingerprint("b1 b3"))
    _reload(two, conf(["b4", "b3", "b1"]), fingerprint("b1 b3 b4"))
    after = _totals(one)["table_fingerprint"]
    assert after != before
    assert _totals(two)["table_fingerprint"] == after
    wait_for(lambda: _totals(one)["up"] == _totals(two)["up"] == 3, 15.0, "b4 up on both")
    # And key for key, through both.
    through_one = _served_by(one, 2000)
    assert set(through_one) == {"b1", "b3", "b4"}
    assert _served_by(two, 2000) == through_one


def test_a_reload_that_moves_a_static_replica_rebuilds_a_ketama_table(
    start_backend: Callable[..., Backend], start_fastlb: Callable[[str], Fastlb]
) -> None:
    # ketama hashes the address: a replica that moves must move its points too, or the table
    # would go on disagreeing with an nginx that lists the new address.
    backends = {name: start_backend("echo", name=name) for name in WEIGHTS}
    lb = start_fastlb(_config("ketama", backends, list(WEIGHTS), WEIGHTS))
    assert _totals(lb)["table_fingerprint"] == _expected("ketama", backends, WEIGHTS)
    moved = {**backends, "b1": start_backend("echo", name="b1")}
    _reload(lb, _config("ketama", moved, list(WEIGHTS), WEIGHTS), _expected("ketama", moved, WEIGHTS))
    wait_for(lambda: _totals(lb)["up"] == 3, 15.0, "b1 up at its new address")


def _builds(lb: Fastlb) -> float:
    match = re.search(r"^fastlb_table_builds_total (\S+)$", lb.get("/metrics")[2].decode(), re.M)
    assert match is not None
    return float(match.group(1))


def test_a_reload_that_names_another_table_kind_builds_it_and_a_new_key_builds_nothing(
    start_backend: Callable[..., Backend], start_fastlb: Callable[[str], Fastlb]
) -> None:
    backends = {name: start_backend("echo", name=name) for name in WEIGHTS}
    lb = start_fastlb(_config("maglev", backends, list(WEIGHTS), WEIGHTS))
    assert _totals(lb)["table_fingerprint"] == _expected("maglev", backends, WEIGHTS)
    _reload(lb, _config("ketama", backends, list(WEIGHTS), WEIGHTS), _expected("ketama", backends, WEIGHTS))
    assert _totals(lb)["table"] == "ketama"
    builds = _builds(lb)
    # The routing key is read per request, not by the table: a reload changing it builds none.
    text = _config("ketama", backends, list(WEIGHTS), WEIGHTS).replace('"path"', '"client_ip"')
    lb.config.write_text(text.replace("{port}", str(lb.port)))
    lb.proc.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        events = json.loads(lb.get("/status.json")[2])["events"]
        return bool(sum(e["kind"] == "reloaded" for e in events) == 2)

    wait_for(reloaded, 20.0, "the second reload")
    assert _builds(lb) == builds
