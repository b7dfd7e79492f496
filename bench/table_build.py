"""How long a routing-table rebuild stalls the event loop: inline versus in the worker process.

    python -m bench.table_build [--members 3,10,100] [--repeat 5]

A ticker task sleeps 1 ms at a time; the longest gap between its wake-ups while a table is
built is the stall a request in flight would have seen.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from fastlb.config import RoutingConfig
from fastlb.control.tables import TableBuilder


async def measure(builder: TableBuilder, members: list[tuple[str, int]], inline: bool) -> float:
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = loop.time()
        while not done:
            await asyncio.sleep(0.001)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    gaps.clear()
    if inline:
        builder.build_now(members)
        await asyncio.sleep(0.005)
    else:
        await builder.build(members)
    done = True
    await ticker
    return max(gaps)


async def run(sizes: list[int], repeat: int, table: str) -> None:
    builder = TableBuilder(RoutingConfig(table=table))
    await builder.build([("warm", 1)])  # start the worker before measuring
    print(f"| {table} members | inline build ms | loop stall inline ms | loop stall in worker ms |")
    print("|--:|--:|--:|--:|")
    try:
        for n in sizes:
            members = [(f"Server{i}", 1) for i in range(1, n + 1)]
            builds, inline, worker = [], [], []
            for _ in range(repeat):
                started = time.perf_counter()
                builder.build_now(members)
                builds.append(time.perf_counter() - started)
                inline.append(await measure(builder, members, True))
                worker.append(await measure(builder, members, False))
            print(
                f"| {n} | {statistics.median(builds) * 1e3:.1f} "
                f"| {statistics.median(inline) * 1e3:.1f} | {statistics.median(worker) * 1e3:.1f} |"
            )
    finally:
        await builder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="3,10,100")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--table", default="maglev", choices=["maglev", "classic"])
    args = parser.parse_args()
    sizes = [int(n) for n in args.members.split(",")]
    uvloop.run(run(sizes, args.repeat, args.table))


if __name__ == "__main__":
    main()
