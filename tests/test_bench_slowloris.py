"""bench/slowloris.py: its --quick run end to end (real fastlb, HAProxy, replicas, wrk), and
the pure parts it rests on (the attack's split, status lines, /proc/net/tcp, config edits).

Why end to end: the bench's numbers are only worth reading if every attack connection is
accounted for (failed to connect, closed by the proxy, or still open at the window's end) and
both proxies were measured with and without the attack; a unit test of the table would not
catch an attack that never connected or a wrk run that measured nothing. Nothing here asserts
on a time or a speed: those are the bench's output, not its correctness.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peers import REPO_ROOT, fastlb_toml, find_binary, haproxy_cfg
from bench.slowloris import (
    KINDS,
    AttackConn,
    fastlb_config,
    haproxy_config,
    proxy_side_states,
    split_attack,
    summarize_kind,
)

QUICK_CONNECTIONS = 40
QUICK_WINDOW = 14.0


def test_the_attack_is_split_evenly_over_the_four_kinds() -> None:
    assert split_attack(1000) == dict.fromkeys(KINDS, 250)
    assert split_attack(42) == {"trickled-head": 11, "slow-body": 11, "slow-reader": 10, "idle": 10}


def test_the_status_is_read_from_the_first_bytes_of_the_answer() -> None:
    assert AttackConn("idle", head=b"HTTP/1.1 408 Request Timeout\r\n").status == "408"
    assert AttackConn("slow-reader", head=b"HTTP/1.1 200 O").status == "200"
    assert AttackConn("slow-reader", head=b"HTTP/1.1 2").status == "none"
    assert AttackConn("idle").status == "none"


def test_a_summary_accounts_for_every_connection() -> None:
    conns = [
        AttackConn("idle", connect_s=0.1, closed_s=10.0, how="fin", head=b"HTTP/1.1 408 x"),
        AttackConn("idle", connect_s=0.1),
        AttackConn("idle", error="ConnectionRefusedError"),
        AttackConn("slow-body", connect_s=0.2),
    ]
    s = summarize_kind("idle", conns)
    assert (s.planned, s.connected, s.closed, s.open_at_end) == (3, 2, 1, 1)
    assert s.connect_errors == {"ConnectionRefusedError": 1}
    assert s.statuses == {"408": 1, "none": 1}
    assert s.closed_s == [10.0]
    assert s.accounted


def test_the_proxys_side_of_each_connection_is_read_by_peer_port(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000\n"
        "   2: 0100007F:1F90 0100007F:C351 04 00000000:00000000 00:00000000\n"
        "   3: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000\n"
        "   4: 0100007F:1F91 0100007F:C352 01 00000000:00000000 00:00000000\n"
    )
    assert proxy_side_states(8080, table) == {0: "0A", 50000: "01", 50001: "04"}


def test_the_config_edits_find_what_they_change() -> None:
    fastlb = fastlb_config(fastlb_toml(5000, "httptools", {"b1": 1, "b2": 2, "b3": 3}))
    assert 'key = "request_id"' in fastlb and "timeout" not in fastlb
    haproxy = haproxy_config(
        haproxy_cfg("/p", 1, {"b1": 2, "b2": 3, "b3": 4}, maxconn=512)
    )
    assert "timeout http-keep-alive 60s" in haproxy
    assert "balance roundrobin" in haproxy and "balance uri" not in haproxy
    assert "timeout http-request 10s" in haproxy and "timeout server 30s" in haproxy


@pytest.mark.skipif(
    find_binary("haproxy") is None or find_binary("wrk") is None, reason="needs haproxy and wrk"
)
def test_quick_run_measures_both_proxies_and_accounts_for_every_attack_connection(
    tmp_path: Path,
) -> None:
    out = tmp_path / "slowloris.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.slowloris", "--quick", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for proxy in ("fastlb-httptools", "haproxy"):
        rows = [line for line in table.splitlines() if line.startswith(proxy)]
        # The medians row, then one attack row per kind (one round: no "all" rows).
        assert len(rows) == 1 + len(KINDS), table
    assert "fastlb / haproxy" in table
    data = json.loads(out.read_text())
    ms = data["measurements"]
    assert sorted(m["proxy"] for m in ms) == ["fastlb-httptools", "haproxy"]
    plan = split_attack(QUICK_CONNECTIONS)
    for m in ms:
        assert m["failure"] is None, m
        for phase in ("baseline", "attacked"):
            wrk = m[phase]
            assert wrk["requests"] > 0 and wrk["rps"] > 0, (m["proxy"], phase, wrk)
            assert 0 < wrk["p50_ms"] <= wrk["p99_ms"], (m["proxy"], phase, wrk)
        assert m["ramp_s"] is not None, m  # every attack connection connected or failed
        assert m["rss_base_kib"] > 0 and m["rss_peak_kib"] > 0, m
        kinds = {k["kind"]: k for k in m["attack"]}
        assert list(kinds) == list(KINDS)
        for kind, k in kinds.items():
            where = (m["proxy"], kind, k)
            assert k["planned"] == plan[kind], where
            assert sum(k["connect_errors"].values()) + k["connected"] == k["planned"], where
            assert k["closed"] + k["open_at_end"] == k["connected"], where
            assert len(k["closed_s"]) == k["closed"] == sum(k["how"].values()), where
            assert all(0 <= t <= QUICK_WINDOW for t in k["closed_s"]), where
            assert sum(k["statuses"].values()) == k["connected"], where
        # A head never finished can only be answered by a timeout; what a slow reader asked
        # for exists, so its answer can only be a 200 (read at the window's end at the latest).
        assert set(kinds["trickled-head"]["statuses"]) <= {"408", "none"}, kinds
        assert set(kinds["slow-reader"]["statuses"]) <= {"200"}, kinds
