"""One replica on the data path: its pooled keep-alive connections and plain-int counters.

Counters are plain attributes bumped on the hot path and read at scrape time, never a metrics
library call per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Final, cast

from fastlb.errors import own_resource_error
from fastlb.http.response import ResponseReader
from fastlb.limits import DURATION_BUCKETS

if TYPE_CHECKING:
    from fastlb.proxy.client import ClientConnection


#: How long (s) a replica that refused a connection is passed over by new requests: nothing
#: listened at its address, so until the controller swaps in a table without it (or replaces
#: it), each request sent there would only pay for a second refusal before failing over. One
#: heartbeat interval: by then the controller knows as much as the data path does.
REFUSED_HOLD: Final = 0.5


def unconnected(data: bytes) -> object:
    """The `write` of a protocol whose connection_made has not run yet."""
    raise RuntimeError("no transport yet: connection_made has not run")


class BackendConnection:
    """A connection to a replica (an asyncio protocol by its methods, see ClientConnection).

    Between exchanges it idles in its upstream's pool; during one it belongs to exactly one
    client connection, which it hands every byte it reads."""

    __slots__ = ("client", "closed", "paused", "reader", "reused", "transport", "upstream", "write")

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        #: Reads this connection's response heads (one llhttp parser kept across responses).
        self.reader = ResponseReader()
        #: The transport's bound write, looked up once (see ClientConnection.write).
        self.write: Callable[[bytes], object] = unconnected
        self.client: ClientConnection | None = None
        self.closed = False
        #: Reading paused because the client could not take more (see ClientConnection).
        self.paused = False
        #: Taken from the pool rather than freshly opened: the replica may have closed it while
        #: it idled, so a failure before any response byte is retried on a fresh connection.
        self.reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.write = transport.write
        up = self.upstream
        transport.set_write_buffer_limits(up.high_water, up.low_water)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client.exchange.replica_data(data)
        else:
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self.close()

    def eof_received(self) -> bool:
        # The replica closed its end (it is stopping, or it died and the kernel closed for it).
        # The transport closes when this returns, but connection_lost only runs on the next
        # loop round: until then this connection must not be handed out of the pool, or a
        # request would be written to a closed transport.
        self.closed = True
        self.upstream.forget(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.upstream.forget(self)
        client = self.client
        if client is not None:
            self.client = None
            client.backend_lost(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.backend_full()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.backend_drained()

    def pause_reading(self) -> None:
        if not self.paused and not self.closed and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Upstream:
    """A replica's address, its idle connections (LIFO: the warmest first) and its counters."""

    __slots__ = (
        "active",
        "connect_failures",
        "connect_timeout",
        "connects",
        "duration_bounds",
        "duration_counts",
        "duration_scan",
        "duration_sum",
        "failures",
        "high_water",
        "host",
        "idle",
        "low_water",
        "name",
        "pool_size",
        "port",
        "refused_until",
        "requests",
        "retries",
        "status_counts",
        "up",
        "weight",
    )

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        weight: int = 1,
        pool_size: int = 64,
        connect_timeout: float = 2.0,
        high_water: int = 256 * 1024,
        low_water: int = 64 * 1024,
        duration_bounds: tuple[float, ...] = DURATION_BUCKETS,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.weight = weight
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.high_water = high_water
        self.low_water = low_water
        self.idle: list[BackendConnection] = []
        self.requests = 0  # requests sent to this replica (attempts, retries included)
        self.active = 0  # exchanges in flight on this replica: what a drain waits for
        #: Responses relayed (and errors fastlb sent for this replica), by status code: a list
        #: indexed by the code, so counting one is an index, not a dict update.
        self.status_counts = [0] * 1000
        self.failures = 0  # exchanges that ended in a 502/504 or a cut response
        self.retries = 0  # stale pooled connections retried on a fresh one
        self.connects = 0
        self.connect_failures = 0
        #: monotonic() until which new requests pass this replica over: a connect to it was
        #: refused (see REFUSED_HOLD).
        self.refused_until = 0.0
        #: The controller's health verdict, read when a request picks this replica (Pingora's
        #: model): a table lists members, not healthy ones, so a health flap moves no key of
        #: another replica and rebuilds nothing; a pick that lands on a replica that is down
        #: walks on through the table's candidates.
        self.up = True
        # Response time histogram, exported cumulatively at scrape time: counts[i] holds the
        # exchanges that took at most bounds[i] (and more than bounds[i-1]); the last slot,
        # those above every bound.
        self.duration_bounds = duration_bounds
        self.duration_counts = [0] * (len(duration_bounds) + 1)
        #: The bounds and an infinite one, for the data path's scan from the first bucket:
        #: most exchanges land in it, where a scan stops at once and a bisect would not.
        self.duration_scan = (*duration_bounds, math.inf)
        self.duration_sum = 0.0

    def __repr__(self) -> str:
        return f"<Upstream {self.name} {self.host}:{self.port} idle={len(self.idle)}>"

    def inherit(self, old: Upstream) -> None:
        """Carry the counters of the upstream this one replaces (same replica name).

        The status counts are taken over as the same list, not copied: exchanges that started
        on the old upstream still finish on it after the replacement (an error answered for a
        replica that died, say), and what they count must not be lost to /metrics."""
        self.requests += old.requests
        for status, n in enumerate(self.status_counts):
            if n:
                old.status_counts[status] += n
        self.status_counts = old.status_counts
        self.failures += old.failures
        self.retries += old.retries
        self.connects += old.connects
        self.connect_failures += old.connect_failures
        if old.duration_bounds == self.duration_bounds:
            for bucket, n in enumerate(self.duration_counts):
                old.duration_counts[bucket] += n
            self.duration_counts = old.duration_counts  # shared, as status_counts
            self.duration_sum += old.duration_sum

    @property
    def responses(self) -> dict[int, int]:
        """Responses by status code, for export: only the codes seen."""
        return {status: n for status, n in enumerate(self.status_counts) if n}

    def acquire(self) -> BackendConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            # `closed` is set by close(), eof_received() and connection_lost(); a transport
            # closing for another reason (an error uvloop saw) is checked too: a write to it
            # would raise.
            if not conn.closed:
                transport = conn.transport
                if transport is not None and not transport.is_closing():
                    conn.reused = True
                    return conn
                conn.closed = True
        return None

    def release(self, conn: BackendConnection) -> None:
        """Return a connection whose exchange completed cleanly; it idles or is closed."""
        conn.client = None
        if conn.closed:
            return
        idle = self.idle
        if len(idle) < self.pool_size:
            if conn.paused:
                conn.resume_reading()
            idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: BackendConnection) -> None:
        """A connection closed (by either side): it must not be handed out again."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    async def connect(self) -> BackendConnection:
        loop = asyncio.get_running_loop()
        self.connects += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cast(asyncio.Protocol, BackendConnection(self)), self.host, self.port
                ),
                self.connect_timeout,
            )
        except BaseException as exc:
            if not own_resource_error(exc):
                self.connect_failures += 1
            if isinstance(exc, ConnectionRefusedError):
                self.refused_until = monotonic() + REFUSED_HOLD
            raise
        return cast(BackendConnection, conn)

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()
