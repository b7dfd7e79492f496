"""bench/dates.py, the seed project's date-walking client.

Why: it is the documented way to see the balancer spread the NASA-style workload, so its walk,
its log lines and its summary are checked, once without a server and once against a real fastlb.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable
from datetime import date

from bench.dates import Result, log_line, neo_target, render_summary, summarize, walk
from tests.conftest import PY, ROOT, Fastlb

LOG = re.compile(
    r"path=/neo\?start_date=(\d{4}-\d\d-\d\d)&end_date=(\d{4}-\d\d-\d\d) "
    r"served_by=(\S+) status=(\d+) ms=(\d+\.\d\d)"
)


def test_walk_goes_back_one_day_at_a_time() -> None:
    assert walk(date(2024, 3, 2), 3) == [date(2024, 3, 2), date(2024, 3, 1), date(2024, 2, 29)]
    assert neo_target(date(2024, 1, 5)) == "/neo?start_date=2024-01-05&end_date=2024-01-05"


def test_summary_per_replica_leaves_failures_out_of_the_times() -> None:
    day = date(2024, 1, 1)
    results = [
        Result(day, "/a", "S1", 200, 1.0),
        Result(day, "/b", "S1", 200, 3.0),
        Result(day, "/c", "S2", 200, 2.0),
        Result(day, "/d", None, 0, 9000.0, "timeout"),
    ]
    rows = {row.replica: row for row in summarize(results)}
    assert list(rows) == ["S1", "S2", "all"]
    assert (rows["S1"].count, rows["S1"].mean_ms, rows["S1"].p50_ms) == (2, 2.0, 1.0)
    assert rows["all"].count == 3 and rows["all"].p99_ms == 3.0
    text = render_summary(list(rows.values()), failed=1)
    assert text.splitlines()[-1] == "failed: 1"
    assert log_line(results[3]).endswith("error='timeout'")
    assert math.isnan(summarize([])[0].mean_ms)


def test_walks_five_days_through_fastlb(start_fastlb: Callable[[str], Fastlb]) -> None:
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\n')
    proc = subprocess.run(
        [PY, "-m", "bench.dates", "--port", str(lb.port), "--start", "2024-01-31",
         "--days", "5", "--concurrency", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logged = [LOG.fullmatch(line) for line in proc.stdout.splitlines() if line.startswith("path=")]
    assert len(logged) == 5 and all(logged)
    days = sorted(m.group(1) for m in logged if m)
    assert days == ["2024-01-27", "2024-01-28", "2024-01-29", "2024-01-30", "2024-01-31"]
    assert all(m.group(1) == m.group(2) and m.group(4) == "200" for m in logged if m)
    served = [m.group(3) for m in logged if m]
    assert set(served) <= {"Server1", "Server2", "Server3"}

    summary = {
        fields[0]: fields[1:]
        for fields in (line.split() for line in proc.stdout.splitlines())
        if fields and fields[0] in {"Server1", "Server2", "Server3", "all"}
    }
    assert int(summary["all"][0]) == 5
    assert sum(int(v[0]) for k, v in summary.items() if k != "all") == 5
    for name in set(served):
        assert int(summary[name][0]) == served.count(name)
        mean, p50, p99 = map(float, summary[name][1:4])
        assert 0 < p50 <= p99 and mean > 0
    assert "failed: 0" in proc.stdout
