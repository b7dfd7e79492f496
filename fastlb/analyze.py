"""The spec's analysis, A-1..A-4, run against real balancers and written up as a report.

    python -m fastlb.analyze [--out report] [--requests 10000] [--quick]
    fastlb analyze ...        (the same)

Writes OUT/report.md, its PNG charts and OUT/results.json (every number in the report). Why a
command rather than a notebook: the numbers the README quotes must be reproducible by anyone with
the repo in a few minutes, and the test suite runs the same code at a reduced size. The request
ids are seeded, so the load counts are the same on every run; only times (and the A-3 timeline)
vary.

The experiments run fresh fastlb balancers in this process, each with its own local replica
processes, one after another; the whole report takes under 3 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import uvloop

from fastlb import __version__
from fastlb.analysis.distribution import TABLES, moves, predicted_counts, replica_names, request_ids
from fastlb.analysis.experiments import exercise_endpoints, kill_run, load_run, running_balancer
from fastlb.analysis.progress import Progress
from fastlb.analysis.render import Params, Results, render_json, render_markdown

__all__ = ["LOG_NAME", "QUICK", "draw", "main", "run"]

LOG_NAME = "run.log"  # in the output folder: what the replicas and fastlb wrote during the run

# The sizes of `--quick`: every experiment still runs, in about half a minute.
QUICK = Params(
    requests=1000,
    concurrency=32,
    quick=True,
    kill_duration=3.0,
    kill_at=1.0,
    kill_concurrency=16,
)


def _environment() -> dict[str, str]:
    return {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "fastlb": __version__,
        "uvloop": importlib.metadata.version("uvloop"),
    }


async def run(params: Params, stream: TextIO | None = None) -> Results:
    """Every experiment, in order; the results, without the charts."""
    started = time.perf_counter()
    results = Results(
        params=params,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        environment=_environment(),
    )
    ids = request_ids(params.requests, params.seed)
    by_key = {kind.key: kind for kind in TABLES}

    # A-1 with every table: the default (Maglev) first, it is A-1 proper.
    for key in ("maglev", *(k.key for k in TABLES if k.key != "maglev")):
        kind = by_key[key]
        with Progress(f"A-1 {key} N={params.a1_n}", len(ids), stream=stream) as bar:
            run_ = await load_run(kind, params.a1_n, ids, params.concurrency, bar)
            bar.done(_load_summary(run_.throughput, run_.failed, run_.matches_table))
        results.a1[key] = run_

    # A-2 through Maglev balancers; N = a1_n is A-1's run, the same ids on the same table.
    for n in params.ns:
        if n == params.a1_n:
            results.a2.append(results.a1["maglev"])
            continue
        with Progress(f"A-2 maglev N={n}", len(ids), stream=stream) as bar:
            run_ = await load_run(by_key["maglev"], n, ids, params.concurrency, bar)
            bar.done(_load_summary(run_.throughput, run_.failed, run_.matches_table))
        results.a2.append(run_)

    # the endpoints, then a replica killed under load, on one balancer.
    names = replica_names(params.a1_n)
    with Progress("A-3 endpoints", 11, stream=stream) as bar:
        bar.note(f"starting {len(names)} replicas")
        async with running_balancer(names, by_key["maglev"].routing) as (balancer, port):
            bar.note("")
            results.exchanges = await exercise_endpoints(port, bar)
            bar.done(" ".join(str(ex.status) for ex in results.exchanges))
            with Progress("A-3 kill a replica", params.kill_duration, unit="s",
                          stream=stream) as kill_bar:
                results.kill = await kill_run(
                    balancer,
                    port,
                    params.victim,
                    duration=params.kill_duration,
                    kill_at=params.kill_at,
                    bin_width=params.kill_bin,
                    concurrency=params.kill_concurrency,
                    seed=params.seed,
                    progress=kill_bar,
                )
                kill = results.kill
                replaced = (
                    f"replaced after {(kill.replaced_at - kill.kill_at) * 1e3:.0f} ms"
                    if kill.replaced_at is not None
                    else "not replaced"
                )
                kill_bar.done(f"{replaced}, {kill.failed} of {kill.sent} failed")

    # A-4 on the pure tables: A-2 for each, and the keys that move.
    steps = len(TABLES) * len(params.ns)
    with Progress("A-4 pure tables", steps * 2, stream=stream) as bar:
        for kind in TABLES:
            series: list[tuple[int, dict[str, int]]] = []
            for n in params.ns:
                series.append((n, predicted_counts(kind.routing, replica_names(n), ids)))
                bar.advance()
            results.a2_pure[kind.key] = series
            rows = []
            for n in params.ns:
                rows.append(moves(kind.routing, n, ids))
                bar.advance()
            results.moves[kind.key] = rows
        worst = ", ".join(f"{m.worst:.1%}" for m in results.moves["maglev"])
        bar.done(f"maglev moves at worst {worst} of the keys")
    results.runtime = time.perf_counter() - started
    return results


def _load_summary(throughput: float, failed: int, matches: bool) -> str:
    check = "= table" if matches else "differs from the table"
    return f"{throughput:.0f} req/s, {failed} failed, {check}"


def draw(results: Results, out: Path, stream: TextIO | None = None) -> None:
    """Every chart of the report into `out`; their file names into `results.charts`."""
    from fastlb.analysis import plots  # matplotlib: only now

    p = results.params
    with Progress("charts", 6, stream=stream) as bar:
        a1 = results.a1["maglev"]
        results.charts["a1"] = plots.a1_figure(
            a1.counts,
            f"A-1: {p.requests} requests on N = {p.a1_n} (Maglev)",
            out / "a1.png",
        )
        bar.advance()
        results.charts["a2"] = plots.a2_figure(
            [(run_.n, run_.counts) for run_ in results.a2],
            f"A-2: load per replica, {p.requests} requests per N (Maglev, through the balancer)",
            out / "a2.png",
            requests=p.requests,
        )
        bar.advance()
        if results.kill is not None:
            results.charts["a3"] = plots.timeline(results.kill, out / "a3_timeline.png")
        bar.advance()
        results.charts["a4_a1"] = plots.side_by_side_bars(
            [(kind.label, results.a1[kind.key].counts) for kind in TABLES],
            f"A-4: A-1 for each table ({p.requests} requests, N = {p.a1_n}, through the balancer)",
            out / "a4_a1.png",
        )
        bar.advance()
        results.charts["a4_a2"] = plots.side_by_side_lines(
            [(kind.label, results.a2_pure[kind.key]) for kind in TABLES],
            f"A-4: A-2 for each table ({p.requests} request ids per N, pure tables)",
            out / "a4_a2.png",
            requests=p.requests,
        )
        bar.advance()
        results.charts["a4_moves"] = plots.moves_chart(
            [(kind.label, results.moves[kind.key]) for kind in TABLES], out / "a4_moves.png"
        )
        bar.advance()
        bar.done(f"{len(results.charts)} PNG files")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlb analyze",
        description="Run the spec's analysis (A-1..A-4) against fresh fastlb balancers and "
        "write a report with charts.",
    )
    parser.add_argument("--out", default="report", help="output folder (default: report)")
    parser.add_argument(
        "--requests", type=int, help="requests per load run (default: 10000; 1000 with --quick)"
    )
    parser.add_argument(
        "--concurrency", type=int, help="keep-alive connections of the client (default: 64)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the request ids")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (for tests): about half a minute"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show fastlb's log lines and the replicas' output on the terminal (they go to "
        f"OUT/{LOG_NAME} otherwise)",
    )
    return parser


def params_from(args: argparse.Namespace) -> Params:
    params = QUICK if args.quick else Params()
    params = replace(params, seed=args.seed)
    if args.requests is not None:
        params = replace(params, requests=args.requests)
    if args.concurrency is not None:
        params = replace(params, concurrency=args.concurrency)
    return params


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.requests is not None and args.requests < 1:
        print("fastlb analyze: --requests must be at least 1", file=sys.stderr)
        return 2
    if args.concurrency is not None and args.concurrency < 1:
        print("fastlb analyze: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "fastlb analyze: the charts need matplotlib: pip install 'fastlb[report]'",
            file=sys.stderr,
        )
        return 2
    if args.verbose:
        logging.basicConfig(level="INFO", format="fastlb: %(message)s", stream=sys.stderr)
    else:
        # A replica killed on purpose is logged as a warning; it would break the progress lines.
        logging.getLogger("fastlb").setLevel(logging.ERROR)
    params = params_from(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG_NAME
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        terminal = None if args.verbose else stack.enter_context(_output_to(log))
        results = uvloop.run(run(params, terminal))
        draw(results, out, terminal)
    results.runtime = time.perf_counter() - started
    if not args.verbose:
        text = log.read_text(errors="replace")
        results.log = LOG_NAME
        results.log_errors = text.count("Traceback (most recent call last)")
    (out / "report.md").write_text(render_markdown(results), encoding="utf-8")
    (out / "results.json").write_text(render_json(results), encoding="utf-8")
    print(f"report written to {out / 'report.md'} ({results.runtime:.0f} s)", file=sys.stderr)
    if results.log_errors:
        print(
            f"fastlb analyze: {results.log_errors} error traceback(s) were logged during the run: "
            f"see {log}",
            file=sys.stderr,
        )
    return 0


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[TextIO]:
    """Send file descriptor 2 to `log` for the duration, and yield a stream on the terminal.

    Why: every replica process inherits fd 2 and announces itself there, and fastlb's warnings
    and the event loop's error tracebacks go there too; on the terminal they would break the
    progress lines. In the log they are kept (the report says how many tracebacks it holds)
    while the terminal shows only the progress.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "wb") as file:
        os.dup2(file.fileno(), 2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield terminal
    finally:
        terminal.close()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
