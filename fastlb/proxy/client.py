"""One client connection: the asyncio shell around the relay machine (fastlb/proxy/exchange.py).

The machine decides everything about an exchange: where heads and bodies end, which replica
is tried, how an exchange ends. This shell holds what belongs to the connection and its
transports: the client's transport and its bound write, the replica connection the exchange
holds, the pause bitmask (`Port.pauses`), whether the client's socket is full, and the one
`deadline` float the server's sweep reads. It feeds the machine what the transports read and
report, and implements `Port` with the transports and the outbox.

Flow control follows uvicorn's model: a transport whose write buffer passes its high water
mark pauses the reading side that feeds it, both directions, so a slow reader makes a fast
writer wait instead of making fastlb buffer. Timeouts are not timer objects: `deadline` is
compared with the clock by the server's single periodic sweep, so a request costs no timer.

`make compile` builds this module with mypyc (fastlb/_native.py), which is why the protocols
are plain classes, not asyncio.Protocol subclasses: uvloop calls their methods by name, and
mypyc can then compile them as native classes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, cast

from fastlb.errors import own_resource_error
from fastlb.http.response import ResponseReader
from fastlb.http.rewrite import forwarded_lines
from fastlb.proxy.exchange import (
    P_BACKEND,
    Exchange,
    LocalHandler,
    LocalRequest,
    Port,
)
from fastlb.proxy.upstream import BackendConnection, Upstream, unconnected

if TYPE_CHECKING:
    from fastlb.proxy.server import ProxyServer

__all__ = ["ClientConnection", "LocalHandler", "LocalRequest"]

log = logging.getLogger("fastlb.proxy")


class ClientConnection(Port):
    """One client connection: an asyncio protocol (uvloop calls these methods by name; not a
    subclass of asyncio.Protocol, so that mypyc can compile it as a native class)."""

    __slots__ = (
        "backend",
        "backend_write",
        "closed",
        "exchange",
        "out",
        "server",
        "transport",
        "wpaused",
        "write",
    )

    def __init__(self, server: ProxyServer) -> None:
        super().__init__()
        self.server = server
        #: Every write, to the client and to its replica, is queued here and made when the
        #: event loop's round ends (fastlb/proxy/outbox.py says why).
        self.out = server.outbox
        # Set on connect. `write` is the transport's bound write: the hot path queues it twice
        # per exchange, so the method is looked up once per connection, not once per write.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.write: Callable[[bytes], object] = unconnected
        #: The replica connection the exchange holds, and its bound write.
        self.backend: BackendConnection | None = None
        self.backend_write: Callable[[bytes], object] = unconnected
        #: The client's socket buffer is full: the replica connection is not read meanwhile.
        self.wpaused = False
        self.closed = False
        self.exchange = Exchange(server, self, b"", b"")

    # ----------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.write = transport.write
        server = self.server
        transport.set_write_buffer_limits(server.high_water, server.low_water)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        exchange = self.exchange
        exchange.ip = ip.encode("latin-1")
        exchange.xff = forwarded_lines(ip, server.scheme)  # "https" on a TLS listener
        # HAProxy's `timeout http-request`: the first head must come within header_timeout.
        self.deadline = monotonic() + server.header_timeout
        server.client_made(self)

    def data_received(self, data: bytes) -> None:
        self.exchange.client_data(data)

    def eof_received(self) -> bool:
        keep = self.exchange.client_eof()
        if self.server.tls is None:
            return keep
        # A close_notify: asyncio's TLS has no half-close, it shuts the connection down
        # whatever this returns (and warns per connection if asked to keep it). What the
        # replica still sends could not be delivered (uvloop warns at each such write), so
        # the replica is not read until connection_lost ends the exchange.
        self.pause_writing()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = 0.0
        self.server.clients.discard(self)
        self.exchange.client_lost()

    def pause_writing(self) -> None:
        # The client reads slower than the replica writes: stop reading the replica.
        self.wpaused = True
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        self.wpaused = False
        if self.backend is not None:
            self.backend.resume_reading()

    # ---------------------------------------------------------------- called by others
    def backend_full(self) -> None:
        self.pause(P_BACKEND)

    def backend_drained(self) -> None:
        self.resume(P_BACKEND)

    def backend_data(self, data: bytes) -> None:
        self.exchange.replica_data(data)

    def backend_lost(self, conn: BackendConnection) -> None:
        """The replica closed the connection the exchange holds."""
        self.backend = None
        self.exchange.replica_lost()

    def on_deadline(self) -> None:
        """Called by the server's sweep when `deadline` has passed."""
        self.exchange.deadline_passed()

    def shutdown(self) -> None:
        """fastlb is stopping: close now if idle, else after the current response (uvicorn's
        model: the server asks each connection, it does not read their state)."""
        self.exchange.shutdown()

    def terminate(self) -> None:
        """The shutdown grace is over: close now (a tunnel through its machine, which logs
        how it ended)."""
        if not self.exchange.terminate():
            self.transport.close()

    # ---------------------------------------------------------------- Port, with transports
    def to_client(self, data: bytes) -> None:
        self.out.send(self.write, data)

    def to_replica(self, data: bytes) -> None:
        self.out.send(self.backend_write, data)

    def open_replica(self, upstream: Upstream, pooled: bool) -> ResponseReader | None:
        if pooled:
            backend = upstream.acquire()
            if backend is not None:
                self._attach(backend)
                return backend.reader
        task = self.server.loop.create_task(upstream.connect())
        seq = self.exchange.seq
        task.add_done_callback(lambda t: self._connected(t, seq))
        return None

    def _connected(self, task: asyncio.Task[BackendConnection], seq: int) -> None:
        exchange = self.exchange
        if task.cancelled():
            exchange.connect_failed(seq, False)
            return
        exc = task.exception()
        if exc is not None:
            # Out of descriptors (or buffers, ports): fastlb's own want, not the replica's.
            exchange.connect_failed(seq, own_resource_error(exc))
            return
        conn = task.result()
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            # Opened, then closed by the replica before this callback ran (it is dying):
            # nothing was sent, so it is a failed connect.
            exchange.connect_failed(seq, False)
            return
        if self.closed or not exchange.awaits(seq):
            conn.upstream.release(conn)  # that exchange is over; the connection is still good
            return
        conn.reused = False
        self._attach(conn)
        exchange.replica_connected(conn.reader)

    def _attach(self, backend: BackendConnection) -> None:
        self.backend = backend
        self.backend_write = backend.write
        backend.client = self
        if self.wpaused:
            backend.pause_reading()

    def release_replica(self, keep: bool) -> None:
        backend = self.backend
        if backend is not None:
            self.backend = None
            if keep:
                backend.upstream.release(backend)
            else:
                backend.client = None
                self.out.flush()  # what is queued for it (a tunnel's last bytes) goes first
                backend.close()

    def pause(self, reason: int) -> None:
        if not self.pauses and not self.closed:
            self.transport.pause_reading()
        self.pauses |= reason

    def resume(self, reason: int) -> None:
        if self.pauses & reason:
            self.pauses &= ~reason
            if not self.pauses and not self.closed:
                self.transport.resume_reading()

    def run_local(self, handler: LocalHandler, request: LocalRequest) -> None:
        task = self.server.loop.create_task(handler(request))
        seq = self.exchange.seq
        task.add_done_callback(lambda t: self._local_done(t, seq))

    def _local_done(self, task: asyncio.Task[bytes], seq: int) -> None:
        exchange = self.exchange
        if task.cancelled():
            exchange.local_failed(seq, True, "fastlb is shutting down")
            return
        exc = task.exception()
        if exc is not None:
            log.error("admin handler failed", exc_info=exc)
            exchange.local_failed(seq, False, f"internal error: {exc}")
            return
        exchange.local_done(seq, task.result())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.deadline = 0.0
            self.server.clients.discard(self)
            self.out.flush()  # what is queued for this connection leaves before it closes
            self.transport.close()
