"""bench.fdlimit end to end at a small size: real fastlb and HAProxy under a descriptor limit."""

from __future__ import annotations

import json
from pathlib import Path

from bench import fdlimit
from fastlb.proxy.server import default_max_connections


def test_both_proxies_hold_what_the_limit_allows_and_recover(tmp_path: Path) -> None:
    out = tmp_path / "fdlimit.json"
    argv = ["--clients", "300", "--nofile", "256", "--hold", "2", "--json", str(out)]
    assert fdlimit.main(argv) == 0
    rows = {row["proxy"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"fastlb-httptools", "haproxy"}
    for row in rows.values():
        # Every client is accounted for: served, or waiting in the backlog; none reset.
        assert row["answered"] + row["closed"] + row["waiting"] + sum(
            row["other_status"].values()
        ) == 300, row
        assert row["closed"] == 0 and not row["other_status"], row
        assert row["second_ok"] == row["answered"], row  # the held ones are still served
        assert row["recovered"], row
    fastlb = rows["fastlb-httptools"]
    # fastlb holds what the limit leaves after its reserve (three replicas), no more.
    assert fastlb["answered"] == default_max_connections(256, 3), fastlb
    assert fastlb["log_replica_down"] == 0 and fastlb["log_cannot_accept"] == 0, fastlb
    assert fastlb["metrics"]["fastlb_max_connections"] == default_max_connections(256, 3)
    assert fastlb["metrics"]["fastlb_heartbeats_skipped_total"] == 0
    assert rows["haproxy"]["answered"] == (256 - 64) // 2  # its maxconn for that limit
