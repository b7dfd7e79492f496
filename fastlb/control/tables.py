"""Routing tables built without stalling the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
from collections.abc import Sequence

from fastlb.config import RoutingConfig
from fastlb.lifetime import die_with_parent
from fastlb.table import Table, build_table


class TableBuilder:
    """Builds routing tables without stalling the event loop.

    A Maglev table of 65537 entries takes tens of milliseconds of pure Python, and a thread
    would hold the GIL for up to the 5 ms switch interval at a time, so a rebuild while
    serving runs in a worker process and comes back pickled. Building before the listener
    opens stays inline. The worker is spawned (forking a process that runs an event loop is
    unsafe), a child of fastlb itself that dies with it (fastlb.lifetime): a forkserver would
    sit between them and outlive a SIGKILLed fastlb, worker and all.
    """

    def __init__(self, routing: RoutingConfig) -> None:
        #: Replaced on reload; the next build uses it.
        self.routing = routing
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def build_now(self, members: Sequence[tuple[str, int]]) -> Table:
        return build_table(self.routing, members)

    async def build(self, members: Sequence[tuple[str, int]]) -> Table:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, build_table, self.routing, list(members))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
