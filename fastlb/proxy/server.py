"""The listener, the current routing snapshot, and the sweep that enforces every timeout."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from fastlb.config import ProxyConfig
from fastlb.http.parsers import HeadParser, make_head_parser
from fastlb.proxy.client import ClientConnection
from fastlb.proxy.upstream import Upstream
from fastlb.routing import KeyFunction, Route, make_key

log = logging.getLogger("fastlb.proxy")


class ProxyServer:
    """Accepts clients and relays their requests by `route`, which is swapped, never edited."""

    def __init__(self, config: ProxyConfig, key_spec: str, route: Route[Upstream]) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.route = route
        key_header, key_fn = make_key(key_spec)
        self.key_fn: KeyFunction = key_fn
        self.parser: HeadParser = make_head_parser(
            config.http, key_header, config.max_header_fields, config.max_header_bytes
        )
        # Copied to plain attributes: the hot path reads them on every request.
        self.paths: frozenset[bytes] | None = (
            frozenset(p.encode("latin-1") for p in config.replica_paths)
            if config.replica_paths
            else None
        )
        self.forwarded = config.forwarded_headers
        self.max_header_bytes = config.max_header_bytes
        self.header_timeout = config.header_timeout
        self.backend_timeout = config.backend_timeout
        self.idle_timeout = config.idle_timeout
        self.high_water = config.high_water
        self.low_water = config.low_water
        self.clients: set[ClientConnection] = set()
        # Plain-int counters, read at scrape time.
        self.requests = 0  # request heads parsed and dispatched (or answered by fastlb)
        self.refused = 0  # malformed or refused requests (4xx from fastlb, connection closed)
        self.rejected = 0  # paths the replicas do not serve (the spec's 400)
        self.retries = 0  # requests sent again: to the next candidate or on a fresh connection
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        timeouts = (config.header_timeout, config.backend_timeout, config.idle_timeout)
        #: Timeouts are enforced to within this much; a quarter of the shortest keeps them honest.
        self.tick = min(1.0, max(0.05, min(timeouts) / 4))

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        # uvloop's Server has asyncio.Server's interface without being its subclass.
        sockname = cast(asyncio.Server, self._server).sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def start(self) -> None:
        cfg = self.config
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self),
            cfg.host,
            cfg.port,
            backlog=cfg.backlog,
            reuse_address=True,
        )
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    def set_route(self, route: Route[Upstream]) -> None:
        self.route = route

    def _sweep(self) -> None:
        now = self.loop.time()
        for client in [c for c in self.clients if 0.0 < c.deadline < now]:
            client.on_deadline()
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let exchanges in flight finish (up to `grace` s), close the rest."""
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while any(c.state != 0 or c.buf for c in self.clients) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for client in list(self.clients):
            client.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for upstream in self.route.upstreams:
            upstream.close_idle()
        if self._server is not None:
            await self._server.wait_closed()
