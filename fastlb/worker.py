"""A worker process: `python -m fastlb.worker PARENT_PID INDEX`, started by
fastlb.workers.WorkerPool when [proxy] workers is more than 1.

It serves the data port and nothing else: one ProxyServer on its own SO_REUSEPORT listener on
[proxy] listen, the kernel spreading new connections over the workers' listeners. Everything
of the control plane (replicas, heartbeats, tables, the admin socket, reload) stays in the
main process, which speaks to the worker over its stdin and stdout with the table worker's
framing (fastlb.control.tables.frame: a 4-byte length, then a pickle). The messages are listed
in fastlb.workers; in short, the worker is told its config, the route (the table object as
the main process built it, so its bytes are the same, and each upstream's name, address and
weight), every health change (`up` flags, a message of a few bytes), a reload, a stop; it says
when it listens, what it suspects (a replica that refused or reset), and its counters when
asked. The admin and observability routes are relayed to the main process whole (the request
as parsed, the peer's address with it, so the token rule of fastlb.control.classic holds) and
its answer sent back: the main process is the one that knows the whole balancer.

stdout is the protocol's: it is moved to a private descriptor at start and fd 1 pointed at
stderr, so a stray print (a library's, a debugging line) cannot corrupt a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import sys
from typing import Any

import uvloop

from fastlb.config import Config
from fastlb.control.tables import LENGTH_BYTES, frame
from fastlb.lifetime import die_with_parent
from fastlb.observe.access import AccessLog
from fastlb.proxy.client import LocalHandler, LocalRequest
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.routing import Route
from fastlb.table import Table
from fastlb.tls import context_for, quiet_transport_noise
from fastlb.workers import UpstreamSpec, snapshot

log = logging.getLogger("fastlb.worker")


class Worker:
    """One worker's ProxyServer, fed by the main process's messages."""

    def __init__(self, index: int, reader: asyncio.StreamReader, out: int) -> None:
        self.index = index
        self.reader = reader
        self.loop = asyncio.get_running_loop()
        self._out = out
        self._write: Any = None
        self.server: ProxyServer | None = None
        self.config: Config | None = None
        self.upstreams: dict[str, Upstream] = {}
        self.table: Table | None = None
        self._asks = itertools.count(1)
        self._answers: dict[int, asyncio.Future[bytes]] = {}
        self.stopped = asyncio.Event()
        self._stopping = False

    async def open(self) -> None:
        transport, _ = await self.loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(self._out, "wb", buffering=0)
        )
        self._write = transport.write

    def send(self, message: tuple[object, ...]) -> None:
        self._write(frame(message))

    # ------------------------------------------------------------------ from the main process
    async def run(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(LENGTH_BYTES)
                message = pickle.loads(await self.reader.readexactly(int.from_bytes(head, "big")))
                await self.handle(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the main process is gone or done with us: drain and leave
        if not self._stopping and self.config is not None:
            await self.stop(self.config.proxy.shutdown_timeout)

    async def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "up":
            for name, up, weight in message[1]:
                upstream = self.upstreams.get(name)
                if upstream is not None:
                    upstream.up = up
                    upstream.weight = weight
        elif kind == "route":
            self.set_route(message[1], message[2], message[3])
        elif kind == "stats":
            server = self.server
            if server is not None:
                self.send(("stats", message[1], snapshot(server, self.upstreams)))
        elif kind == "local":
            future = self._answers.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(message[2])
        elif kind == "start":
            await self.start(message[1], message[2])
        elif kind == "config":
            self.reconfigure(message[1])
        elif kind == "reopen":
            if self.server is not None and self.server.access_log is not None:
                self.server.access_log.reopen()
        elif kind == "stop":
            self.loop.create_task(self.stop(message[1]))

    async def start(self, config: Config, local_paths: list[bytes]) -> None:
        self.config = config
        tls = context_for(config)
        if tls is not None:
            quiet_transport_noise()
        local: dict[bytes, LocalHandler] | None = None
        if local_paths:
            local = {path: self._relay(path) for path in local_paths}
        server = ProxyServer(config.proxy, config.routing.key, None, local=local, tls=tls)
        server.reuse_port = True
        server.balance_factor = config.routing.balance_factor
        server.on_suspect = lambda name: self.send(("suspect", name))
        if config.log.access:
            server.access_log = AccessLog(config.log.access_file, config.log.access_format)
        self.server = server
        try:
            await server.start()
        except OSError as exc:
            host, port = server.listen
            self.send(("failed", f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
            self.stopped.set()
            return
        self.send(("ready", os.getpid()))

    def reconfigure(self, config: Config) -> None:
        """A reload: the new [proxy] and [routing] settings for requests from now on, the TLS
        certificate read again (a renewed one; a bad one keeps the context in place: the main
        process has said why already)."""
        self.config = config
        server = self.server
        if server is None:
            return
        server.reconfigure(config.proxy, config.routing.key)
        server.balance_factor = config.routing.balance_factor
        access = server.access_log
        if access is not None:  # as the main process does with one process (app.py)
            access.format = config.log.access_format
            if config.log.access_file != access.path:
                access.reopen(config.log.access_file)
        if server.tls is not None and config.proxy.tls_cert:
            with contextlib.suppress(Exception):
                server.tls = context_for(config)

    def set_route(self, generation: int, table: Table | None, specs: list[UpstreamSpec]) -> None:
        """Put the main process's route in place, whole: its table (None: the one last sent),
        upstreams by name. An upstream whose replica kept its address keeps its pool and
        counters; one replaced at a new address starts a new pool and inherits the counters,
        as in the main process (Cluster's replacement path)."""
        server = self.server
        config = self.config
        if server is None or config is None:
            return
        if table is not None:
            self.table = table
        if not specs or self.table is None:
            server.set_route(None)
            self.send(("routed", generation))
            return
        proxy = config.proxy
        upstreams: dict[str, Upstream] = {}
        for name, host, port, weight, up in specs:
            old = self.upstreams.get(name)
            if old is not None and (old.host, old.port) == (host, port):
                upstream = old
            else:
                upstream = Upstream(
                    name,
                    host,
                    port,
                    weight=weight,
                    pool_size=proxy.pool_size,
                    connect_timeout=proxy.connect_timeout,
                    high_water=proxy.high_water,
                    low_water=proxy.low_water,
                    duration_bounds=config.metrics.buckets,
                )
                if old is not None:
                    upstream.inherit(old)
                    old.close_idle()
            upstream.up = up
            upstream.weight = weight
            upstreams[name] = upstream
        for name, old in self.upstreams.items():
            if name not in upstreams:
                old.close_idle()
        self.upstreams = upstreams
        server.set_route(Route(self.table, tuple(upstreams[n] for n in self.table.names)))
        self.send(("routed", generation))

    # ------------------------------------------------------------------ admin routes, relayed
    def _relay(self, path: bytes) -> LocalHandler:
        async def relay(request: LocalRequest) -> bytes:
            ask = next(self._asks)
            future: asyncio.Future[bytes] = self.loop.create_future()
            self._answers[ask] = future
            head = request.head
            # As plain values: RequestHead and LocalRequest are compiled classes that do not
            # pickle; fastlb.workers.local_request puts them together again.
            fields = (
                head.raw,
                head.method,
                head.target,
                head.http11,
                head.keep_alive,
                head.length,
                head.rewrite,
                head.key_value,
                head.upgrade,
            )
            self.send(("local", ask, path, (fields, request.body, request.client_ip)))
            try:
                return await future
            finally:
                self._answers.pop(ask, None)

        return relay

    async def stop(self, grace: float) -> None:
        if self._stopping:
            return
        self._stopping = True
        server = self.server
        if server is not None:
            await server.stop(grace)
            if server.access_log is not None:
                server.access_log.close()
        for future in self._answers.values():
            if not future.done():
                future.set_result(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
        self.stopped.set()


async def serve(index: int, out: int) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    worker = Worker(index, reader, out)
    await worker.open()
    # SIGINT reaches the whole process group from a terminal: the main process decides, and
    # tells us. SIGTERM sent to a worker alone drains it, as it would the balancer.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    grace = 10.0
    loop.add_signal_handler(
        signal.SIGTERM,
        lambda: loop.create_task(
            worker.stop(worker.config.proxy.shutdown_timeout if worker.config else grace)
        ),
    )
    reading = loop.create_task(worker.run())
    await worker.stopped.wait()
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    return 0


def main(argv: list[str]) -> int:
    die_with_parent(int(argv[1]))
    index = int(argv[2])
    out = os.dup(1)  # the protocol's descriptor; fd 1 becomes stderr
    os.dup2(2, 1)
    logging.basicConfig(
        level=os.environ.get("FASTLB_LOG_LEVEL", "INFO"),
        format=f"fastlb[worker {index}]: %(message)s",
        stream=sys.stderr,
    )
    return uvloop.run(serve(index, out))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
