"""The seed project's client: walk back one day at a time through the NASA-style feed.

    python -m bench.dates --port 5000 --start 2024-01-31 --days 30 --concurrency 8

For each day D from --start backwards it sends `GET /neo?start_date=D&end_date=D` through the
balancer, at most --concurrency at once, and logs one line per request: the path, the replica
that served it (the X-Served-By header the replicas add) and the response time. It ends with a
summary per replica (count, mean, p50, p99 in ms) and exits 1 if any request failed.

Why it exists: the seed project shipped this client, and it is the quickest way to see the
balancer spread a realistic workload (distinct paths, bodies of a few kB) over its replicas. It
uses fastlb's own small HTTP/1.1 client (fastlb.analysis.client), so it needs nothing beyond
fastlb, and counts replicas exactly as the analysis report does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/dates.py`: make `fastlb` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastlb.analysis.client import Connection, HttpError, percentile, replica_of

__all__ = [
    "Result",
    "SummaryRow",
    "log_line",
    "main",
    "neo_target",
    "render_summary",
    "run",
    "summarize",
    "walk",
]


def walk(start: date, days: int) -> list[date]:
    """`days` dates from `start` backwards, one day apart (the seed client's order)."""
    return [start - timedelta(days=offset) for offset in range(days)]


def neo_target(day: date) -> str:
    """The feed of one day: start_date = end_date, as the seed's client asks."""
    text = day.isoformat()
    return f"/neo?start_date={text}&end_date={text}"


@dataclass(frozen=True, slots=True)
class Result:
    day: date
    target: str
    replica: str | None  # None: no answer, or an answer without X-Served-By
    status: int  # 0: no response
    ms: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.replica is not None


def log_line(result: Result) -> str:
    """One request, as `key=value` fields so the log is both readable and greppable."""
    line = (
        f"path={result.target} served_by={result.replica or '-'} status={result.status} "
        f"ms={result.ms:.2f}"
    )
    return f"{line} error={result.error!r}" if result.error else line


async def run(
    host: str,
    port: int,
    days: Sequence[date],
    *,
    concurrency: int,
    timeout: float = 10.0,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Fetch every day's feed, at most `concurrency` requests in flight, each connection kept
    alive across its requests; results in the order they completed."""
    results: list[Result] = []
    pending: Iterator[date] = iter(days)

    async def worker() -> None:
        conn = Connection(host, port, timeout)
        try:
            for day in pending:
                target = neo_target(day)
                started = time.perf_counter()
                try:
                    reply = await conn.request("GET", target)
                except HttpError as exc:
                    ms = (time.perf_counter() - started) * 1e3
                    result = Result(day, target, None, 0, ms, str(exc))
                else:
                    replica = replica_of(reply)
                    error = (
                        "" if reply.status == 200 else reply.body[:120].decode("utf-8", "replace")
                    )
                    result = Result(day, target, replica, reply.status, reply.elapsed * 1e3, error)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(days))))))
    return results


@dataclass(frozen=True, slots=True)
class SummaryRow:
    replica: str
    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float


def summarize(results: Sequence[Result]) -> list[SummaryRow]:
    """One row per replica (by name), then `all`; failed requests are left out of the times."""
    by_replica: dict[str, list[float]] = {}
    for result in results:
        if result.ok and result.replica is not None:
            by_replica.setdefault(result.replica, []).append(result.ms)

    def row(name: str, times: list[float]) -> SummaryRow:
        return SummaryRow(
            name,
            len(times),
            statistics.fmean(times) if times else float("nan"),
            percentile(times, 50),
            percentile(times, 99),
        )

    rows = [row(name, by_replica[name]) for name in sorted(by_replica)]
    rows.append(row("all", [t for times in by_replica.values() for t in times]))
    return rows


def render_summary(rows: Sequence[SummaryRow], failed: int) -> str:
    lines = [f"{'replica':<16} {'requests':>8} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}"]
    for r in rows:
        lines.append(
            f"{r.replica:<16} {r.count:>8} {r.mean_ms:>9.2f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}"
        )
    lines.append(f"failed: {failed}")
    return "\n".join(lines)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dates",
        description="Walk back one day at a time through /neo via the balancer, logging the "
        "replica and response time of each request.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="the balancer's address")
    parser.add_argument("--port", type=int, default=5000, help="the balancer's port")
    parser.add_argument(
        "--start", type=_date, default=date.today(), help="first day, YYYY-MM-DD (today)"
    )
    parser.add_argument("--days", type=_positive, default=30, help="how many days to walk back")
    parser.add_argument("--concurrency", type=_positive, default=8, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = parser.parse_args(argv)

    def show(result: Result) -> None:
        print(log_line(result), flush=True)

    days = walk(args.start, args.days)
    started = time.perf_counter()
    results = asyncio.run(
        run(args.host, args.port, days, concurrency=args.concurrency, timeout=args.timeout,
            on_result=show)
    )
    wall = time.perf_counter() - started
    failed = sum(1 for r in results if not r.ok)
    print()
    print(render_summary(summarize(results), failed))
    print(f"{len(results)} requests in {wall:.2f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
