"""The analysis report (`python -m fastlb.analyze`).

Why: the report's numbers are quoted as what fastlb does, so the arithmetic behind them (spread,
keys moved, the pure-table prediction) is unit-tested, and one reduced run (`--quick`) checks that
every experiment still runs end to end against real balancers and that the report it writes is
complete and consistent with itself.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from fastlb.analysis.client import Reply, percentile, replica_of
from fastlb.analysis.distribution import (
    TABLES,
    moves,
    predicted_counts,
    replica_names,
    request_ids,
    spread,
)
from fastlb.analysis.progress import Progress
from fastlb.config import RoutingConfig
from tests.conftest import PY, ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHARTS = ("a1.png", "a2.png", "a3_timeline.png", "a4_a1.png", "a4_a2.png", "a4_moves.png")


# --- pure parts ------------------------------------------------------------------------------


def test_request_ids_are_seeded_six_digit_numbers() -> None:
    ids = request_ids(500, seed=7)
    assert ids == request_ids(500, seed=7)
    assert ids != request_ids(500, seed=8)
    assert all(len(i) == 6 and i.isdigit() and i[0] != "0" for i in ids)


def test_predicted_counts_cover_every_id_in_name_order() -> None:
    ids = request_ids(2000, seed=1)
    for kind in TABLES:
        counts = predicted_counts(kind.routing, replica_names(4), ids)
        assert list(counts) == ["Server1", "Server2", "Server3", "Server4"]
        assert sum(counts.values()) == 2000


def test_spread_of_an_even_and_an_uneven_split() -> None:
    even = spread({"a": 10, "b": 10})
    assert (even.mean, even.std, even.cv, even.peak) == (10, 0, 0, 1)
    lopsided = spread({"a": 30, "b": 10, "c": 20})
    assert (lopsided.low, lopsided.high, lopsided.mean) == (10, 30, 20)
    assert lopsided.peak == pytest.approx(1.5)
    assert lopsided.std == pytest.approx((200 / 3) ** 0.5)


def test_maglev_moves_about_one_nth_and_a_ring_moves_only_the_removed_keys() -> None:
    ids = request_ids(5000, seed=3)
    for n in (3, 5):
        m = moves(RoutingConfig(), n, ids)
        assert m.moved == pytest.approx(1 / n, abs=0.03)
        assert m.removed_share == pytest.approx(1 / n, abs=0.03)
    # A ring reshuffles nothing between survivors unless probing moved their virtual servers.
    ring = moves(RoutingConfig(table="classic", classic_hash="xxhash"), 4, ids)
    assert ring.moved >= ring.removed_share
    assert ring.moved - ring.removed_share < 0.05


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_replica_is_read_from_the_home_body_then_the_header() -> None:
    home = b'{"message": "Hello from Server: Server2", "status": "successful"}'
    assert replica_of(Reply(200, {"x-served-by": "other"}, home, 0.0)) == "Server2"
    assert replica_of(Reply(200, {"x-served-by": "Server3"}, b"{}", 0.0)) == "Server3"
    assert replica_of(Reply(200, {}, b"{}", 0.0)) is None


def test_progress_prints_one_line_per_experiment_off_a_terminal() -> None:
    out = io.StringIO()
    with Progress("A-1 maglev", 10, stream=out, tty=False) as bar:
        for _ in range(10):
            bar.advance()
        bar.done("fine")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("A-1 maglev: fine (")


def test_progress_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    bar = Progress("A-2", 4, stream=out, tty=True)
    bar.advance(4)
    bar.done("ok")
    text = out.getvalue()
    assert text.startswith("\rA-2") and text.endswith("\n")
    assert "[" in text and "]" in text  # the bar was drawn
    assert text.rsplit("\r", 1)[-1].startswith("A-2: ok (")


# --- the report, at reduced size --------------------------------------------------------------


def _section(text: str, start: str, end: str | None) -> str:
    begin = text.index(start)
    stop = text.index(end, begin) if end else len(text)
    return text[begin:stop]


def test_quick_report_is_complete_and_consistent(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(
        [PY, "-m", "fastlb.analyze", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Off a terminal: one line per experiment, no carriage returns.
    assert "\r" not in proc.stderr
    assert "A-1 maglev N=3" in proc.stderr and "A-3 kill a replica" in proc.stderr

    report = (out / "report.md").read_text()
    for name in CHARTS:
        data = (out / name).read_bytes()
        assert len(data) > 5000 and data.startswith(PNG_MAGIC), name
        assert f"]({name})" in report, name

    # the counts per replica add up to the requests answered, and nothing failed.
    a1 = _section(report, "## A-1", "## A-2")
    sent, answered, failed = map(
        int, re.search(r"Requests sent: (\d+); answered: (\d+); failed: (\d+)", a1).groups()  # type: ignore[union-attr]
    )
    assert sent == 1000 and failed == 0 and answered == sent
    counts = [int(c) for c in re.findall(r"^\| Server\d+ \| (\d+) \|", a1, re.M)]
    assert len(counts) == 3 and sum(counts) == answered
    assert "exactly the ones the pure table gives for the same ids: yes" in a1

    # one row per N, each matching the pure table.
    a2 = _section(report, "## A-2", "## A-3")
    rows = re.findall(r"^\| (\d) \| .* \| (yes|no) \|$", a2, re.M)
    assert [int(n) for n, _ in rows] == [2, 3, 4, 5, 6]
    assert all(match == "yes" for _, match in rows)

    # every endpoint answered as the spec says, the kill detected and failures counted.
    a3 = _section(report, "## A-3", "## A-4")
    statuses = re.findall(r"^\d+\. `(\w+) (\S+)` → \*\*(\d+)\*\*", a3, re.M)
    assert ("GET", "/other", "400") in statuses
    assert ("GET", "/rep", "200") in statuses and ("POST", "/add", "200") in statuses
    assert ("DELETE", "/rm", "200") in statuses and ("GET", "/heartbeat", "200") in statuses
    assert len(statuses) == 11
    failed_kill = re.search(r"Failed requests: (\d+) of (\d+)", a3)
    assert failed_kill is not None and int(failed_kill.group(2)) > 0
    assert re.search(r"\| detected: the `died` event .* \| \d+\.\d+ \| \d+ \|", a3)
    assert re.search(r"\| `replaced` event .* \| \d+\.\d+ \| \d+ \|", a3)

    # Maglev moves about 1/N of the keys when one replica goes, whichever it is; the
    # spec's ring moves far more than that when its busiest replica goes.
    a4 = _section(report, "### Keys that move", "Of those")
    header = re.search(r"^\| table \| (.*) \|$", a4, re.M)
    assert header is not None
    ns = [int(cell.removeprefix("N=")) for cell in header.group(1).split(" | ")]
    assert ns == [2, 3, 4, 5, 6]

    def moved(table: str) -> list[tuple[float, float, float]]:
        row = re.search(rf"^\| {table} \| (.*) \|$", a4, re.M)
        assert row is not None, table
        cells = row.group(1).split(" | ")
        assert len(cells) == len(ns)
        shares = [[float(x) / 100 for x in re.findall(r"([0-9.]+)%", cell)] for cell in cells]
        return [(mean, best, worst) for mean, best, worst in shares]

    for n, (mean, best, worst) in zip(ns, moved("maglev"), strict=True):
        assert mean == pytest.approx(1 / n, abs=0.02), (n, mean)
        assert 1 / n - 0.06 < best <= mean <= worst < 1 / n + 0.06, (n, best, worst)
    assert all(worst > 1.5 / n for n, (_, _, worst) in zip(ns, moved("classic-spec"), strict=True))

    assert (out / "run.log").exists() and "](run.log)" in report

    results = json.loads((out / "results.json").read_text())
    assert sum(results["a1"]["maglev"]["counts"].values()) == answered
    assert results["kill"]["failed"] == int(failed_kill.group(1))
