"""Wiring: config -> replicas from a provider -> upstreams -> routing table -> proxy server.

The one place that knows every part; the parts know nothing of each other beyond their
interfaces (cli -> app -> proxy/replicas -> table/config/http).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import signal
from collections.abc import Sequence

from fastlb.config import Config
from fastlb.errors import FastlbError
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.replicas import Provider, Replica, make_provider
from fastlb.routing import Route
from fastlb.table import Table, build_table

log = logging.getLogger("fastlb")


class TableBuilder:
    """Builds routing tables without stalling the event loop.

    A Maglev table of 65537 entries takes tens of milliseconds of pure Python, and a thread
    would hold the GIL for up to the 5 ms switch interval at a time, so a rebuild while
    serving runs in a worker process (forkserver: forking a process that runs an event loop
    is unsafe) and comes back pickled. Building before the listener opens stays inline.
    """

    def __init__(self, config: Config) -> None:
        self._routing = config.routing
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def build_now(self, members: Sequence[tuple[str, int]]) -> Table:
        return build_table(self._routing, members)

    async def build(self, members: Sequence[tuple[str, int]]) -> Table:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=context)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, build_table, self._routing, list(members))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Balancer:
    """One running fastlb: its replicas, its table and its listener."""

    def __init__(self, config: Config, provider: Provider | None = None) -> None:
        self.config = config
        self.provider = provider or make_provider(config.replicas)
        self.tables = TableBuilder(config)
        self.replicas: dict[str, Replica] = {}
        self.upstreams: dict[str, Upstream] = {}
        self.server: ProxyServer | None = None
        self._stopping = asyncio.Event()

    def _upstream(self, replica: Replica) -> Upstream:
        proxy = self.config.proxy
        return Upstream(
            replica.name,
            replica.host,
            replica.port,
            weight=replica.weight,
            pool_size=proxy.pool_size,
            connect_timeout=proxy.connect_timeout,
            high_water=proxy.high_water,
            low_water=proxy.low_water,
        )

    async def start(self) -> None:
        names = self.provider.names()
        results = await asyncio.gather(
            *(self.provider.start(name) for name in names), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        for replica in results:
            assert isinstance(replica, Replica)
            self.replicas[replica.name] = replica
            self.upstreams[replica.name] = self._upstream(replica)
        members = [(r.name, r.weight) for r in self.replicas.values()]
        route = Route.build(self.tables.build_now(members), self.upstreams)
        self.server = ProxyServer(self.config.proxy, self.config.routing.key, route)
        try:
            await self.server.start()
        except OSError as exc:
            proxy = self.config.proxy
            raise FastlbError(
                f"cannot listen on {proxy.host}:{proxy.port}: {exc.strerror or exc}; "
                "is another server using that port? Set [proxy] listen in the config"
            ) from None
        host, port = self.server.address
        listing = ", ".join(f"{r.name} ({r.host}:{r.port})" for r in self.replicas.values())
        log.info("listening on %s:%d, %s table, replicas: %s", host, port,
                 self.config.routing.table, listing)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        await self.provider.close()
        self.tables.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self._stopping.wait()
            log.info("stopping")
        finally:
            await self.stop()
        return 0
