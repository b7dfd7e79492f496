"""bench/locustfile.py: the date-walking workload under locust.

Why: the locustfile is only ever run by locust, so a short headless run against a real fastlb is
the test that it still loads, walks the dates, names requests by replica and sees no failures.
Skipped where locust is not installed (it is in the `dev` extras).
"""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PY, ROOT, Fastlb

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed"
)


def test_locust_walks_dates_through_fastlb(
    start_fastlb: Callable[[str], Fastlb], tmp_path: Path
) -> None:
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\n')
    prefix = tmp_path / "locust"
    proc = subprocess.run(
        [PY, "-m", "locust", "-f", "bench/locustfile.py", "--headless", "-u", "3", "-r", "3",
         "-t", "5s", "--host", f"http://127.0.0.1:{lb.port}", "--only-summary",
         "--csv", str(prefix), "--start-date", "2024-01-31", "--days", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    total = next(row for row in rows if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
    named = [row for row in rows if row["Name"] != "Aggregated"]
    assert named and all(re.fullmatch(r"/neo \[Server[123]\]", row["Name"]) for row in named)
    assert sum(int(row["Request Count"]) for row in named) == int(total["Request Count"])
