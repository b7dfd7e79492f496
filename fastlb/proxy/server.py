"""The listener, the current routing snapshot, and the sweep that enforces every timeout."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from time import monotonic
from typing import Any, cast

from fastlb.config import ProxyConfig
from fastlb.http.parsers import HeadParser, make_head_parser
from fastlb.observe.access import AccessLog
from fastlb.proxy.client import ClientConnection, LocalHandler
from fastlb.proxy.outbox import Outbox
from fastlb.proxy.upstream import Upstream
from fastlb.routing import KeyFunction, Route, make_key

log = logging.getLogger("fastlb.proxy")


class ProxyServer:
    """Accepts clients and relays their requests by `route`, which is swapped, never edited."""

    def __init__(
        self,
        config: ProxyConfig,
        key_spec: str,
        route: Route[Upstream] | None,
        *,
        local: dict[bytes, LocalHandler] | None = None,
        forward: bool = True,
        listen: tuple[str, int] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        #: None while no replica can take requests: clients get a 503 at once.
        self.route = route
        #: Routes fastlb answers itself (the admin API), by path.
        self.local = local
        #: False for an admin-only listener: anything but `local` is a 404.
        self.forward = forward
        self.listen = listen or (config.host, config.port)
        #: Set while shutting down: each connection closes after its current response.
        self.draining = False
        #: Set when [log] access is on; the data path adds a line per request to it.
        self.access_log: AccessLog | None = None
        #: Called with a replica's name when the data path saw it refuse or reset.
        self.on_suspect: Callable[[str], None] | None = None
        self.reconfigure(config, key_spec)
        #: The writes of the connections, sent when the event loop's round ends.
        self.outbox = Outbox(self.loop)
        self.clients: set[ClientConnection] = set()
        # Plain-int counters, read at scrape time.
        self.requests = 0  # request heads parsed and dispatched (or answered by fastlb)
        self.refused = 0  # malformed or refused requests (4xx from fastlb, connection closed)
        self.rejected = 0  # paths the replicas do not serve (the spec's 400)
        self.retries = 0  # requests sent again: to the next candidate or on a fresh connection
        self.own_responses: dict[int, int] = {}  # status -> errors fastlb sent with no replica
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._servers
        # uvloop's Server has asyncio.Server's interface without being its subclass, and its
        # `sockets` is a list, not the tuple typeshed promises (mypyc checks such types).
        sockets: Any = cast(Any, self._servers[0]).sockets
        sockname = sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def start(self) -> None:
        """Listen on every address the listen host resolves to (as create_server would)."""
        host, port = self.listen
        try:
            for sock in listening_sockets(host, port, self.config.backlog):
                self._servers.append(
                    await self.loop.create_server(
                        lambda: cast(asyncio.Protocol, ClientConnection(self)), sock=sock
                    )
                )
        except BaseException:
            self.stop_accepting()
            raise
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    def reconfigure(self, config: ProxyConfig, key_spec: str) -> None:
        """Take new settings (on reload) for the requests that start from now on. The listen
        address is the one setting that needs a restart."""
        self.config = config
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
        timeouts = (config.header_timeout, config.backend_timeout, config.idle_timeout)
        #: Timeouts are enforced to within this much; a quarter of the shortest keeps them honest.
        self.tick = min(1.0, max(0.05, min(timeouts) / 4))

    def set_route(self, route: Route[Upstream] | None) -> None:
        self.route = route

    def suspect(self, upstream: Upstream) -> None:
        """The data path saw `upstream` refuse or reset a connection (the control side probes)."""
        if self.on_suspect is not None:
            self.on_suspect(upstream.name)

    def _sweep(self) -> None:
        now = monotonic()  # the clock of every connection's `deadline`
        for client in [c for c in self.clients if 0.0 < c.deadline < now]:
            client.on_deadline()
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    def stop_accepting(self) -> None:
        for server in self._servers:
            server.close()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let exchanges in flight finish (up to `grace` s), close the rest.

        Idle keep-alive connections close at once; busy ones close after their current
        response (`draining`), so a client that keeps sending cannot hold the shutdown open.
        """
        self.stop_accepting()
        self.draining = True
        self.outbox.flush()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline:
            for client in [c for c in self.clients if c.state == 0 and not c.buf]:
                client.transport.close()
                self.clients.discard(client)
            if not self.clients:
                break
            await asyncio.sleep(0.01)
        for client in list(self.clients):
            client.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.route is not None:
            for upstream in self.route.upstreams:
                upstream.close_idle()
        for server in self._servers:
            await server.wait_closed()


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Sockets bound and listening on each address `host` resolves to.

    Bound here, not by create_server(host, port): uvloop resolves the host there in libuv's
    thread pool, which starts four threads that then idle for fastlb's whole life, and a
    process with threads pays for them on every socket call of the data path (the kernel counts
    file references atomically, glibc takes its malloc and cancellation locks). The blocking
    resolution here runs once, before anything is served.
    """
    infos = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    bound: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in bound:
                continue
            bound.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family gets its own socket, as asyncio does: "::" must not also claim
                # the IPv4 port the next socket binds.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
