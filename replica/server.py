"""The replica's HTTP/1.1 server: an asyncio.Protocol on uvloop, fed through httptools.

No framework and no streams, because the replica is benchmarked behind the balancer and must not
be what the benchmark measures: /home and /heartbeat are a dict lookup returning prebuilt bytes,
and the responses to everything parsed from one read go out in one write. The shape follows
uvicorn's httptools_impl: the parser's callbacks collect a request, on_message_complete answers it.

    fastlb-replica --name NAME --port PORT [--host 127.0.0.1] [--latency-ms X] [--jitter-ms Y]
    fastlb-replica --name NAME --fd N ...   (serve on an inherited listening socket: fastlb)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import random
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Final, cast

import httptools
import uvloop

from replica.api import CLOSE, KEEP_ALIVE, KEEP_ALIVE_10, Api, check_name
from replica.data import Dataset, DatasetError, load

__all__ = ["Replica", "ReplicaProtocol", "main"]

DEFAULT_PORT: Final = 5000  # the classic spec's containers listen on 5000
MAX_TARGET: Final = 8192
# A bound on memory, not a precise limit: whole reads are counted while a request's head is open.
MAX_HEAD: Final = 1024 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request we refuse (the status is kept)."""


class Replica:
    """What every connection of one listener shares: the routes, the delay, the open connections."""

    __slots__ = ("api", "connections", "jitter", "latency", "loop", "random")

    def __init__(
        self,
        api: Api,
        loop: asyncio.AbstractEventLoop,
        latency: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        self.api = api
        self.loop = loop
        self.latency = latency  # seconds
        self.jitter = jitter
        self.random = random.Random().random
        self.connections: set[ReplicaProtocol] = set()

    @property
    def delayed(self) -> bool:
        return self.latency > 0.0 or self.jitter > 0.0

    def delay(self) -> float:
        """latency ± uniform jitter, never negative."""
        return max(0.0, self.latency + self.jitter * (2.0 * self.random() - 1.0))

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.transport.close()


class _Slot:
    """A response waiting for its delay and for the responses before it (pipelining keeps order)."""

    __slots__ = ("close", "data", "due", "handle", "ready")

    def __init__(self, data: bytes, close: bool) -> None:
        self.data = data
        self.close = close
        self.ready = False
        self.handle: asyncio.TimerHandle | None = None
        #: When the delay is over, on the monotonic clock (see ReplicaProtocol._release).
        self.due = 0.0


class ReplicaProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, HTTP/1.0, pipelining, bodies read and dropped."""

    __slots__ = (
        "api",
        "close_after",
        "closing",
        "delayed",
        "expect",
        "head_bytes",
        "host",
        "in_head",
        "lost",
        "mode",
        "out",
        "parser",
        "pending",
        "reject",
        "replica",
        "static_get",
        "transport",
        "url",
    )

    transport: asyncio.Transport

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.api = replica.api
        self.static_get = replica.api.static_get
        self.delayed = replica.delayed
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.host: bytes | None = None
        self.expect = False
        self.in_head = False
        self.head_bytes = 0
        self.mode = KEEP_ALIVE
        self.reject = 400
        # Responses to what one read parsed, written together when the read is done.
        self.out: list[bytes] = []
        self.close_after = False
        # Delayed responses (--latency-ms), in request order.
        self.pending: deque[_Slot] = deque()
        self.closing = False  # a response that ends the connection is decided: read no more
        self.lost = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.replica.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing = True
        self.replica.connections.discard(self)
        for slot in self.pending:
            if slot.handle is not None:
                slot.handle.cancel()
        self.pending.clear()

    def pause_writing(self) -> None:
        # A client that pipelines without reading: stop reading until it catches up.
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.closing and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # already answered with Connection: close; what follows is not HTTP
        except httptools.HttpParserError:
            if not self.closing:
                self._refuse(self.reject)
        else:
            if self.in_head:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD:
                    self._refuse(431)
        out = self.out
        if out:
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
            out.clear()
            if self.close_after:
                self.transport.close()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.host = None
        self.expect = False
        self.in_head = True
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_TARGET:
            self.reject = 414
            raise _Rejected

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)
        if size == 4:
            if name.lower() == b"host":
                self.host = value
        elif size == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.expect = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        if parser.should_upgrade() or not parser.should_keep_alive():
            self.mode = CLOSE
        elif parser.get_http_version() == "1.0":
            self.mode = KEEP_ALIVE_10
        else:
            self.mode = KEEP_ALIVE
        if self.expect and not self.closing and parser.get_http_version() != "1.0":
            # The client waits for this before it sends the body. It must not overtake earlier
            # responses, so it goes out in order or not at all (the client then times out).
            if not self.delayed:
                self.out.append(_CONTINUE)
            elif not self.pending:
                self.transport.write(_CONTINUE)

    def on_message_complete(self) -> None:
        if self.closing:
            return  # pipelined after a request that closes the connection
        method = self.parser.get_method()
        data: bytes | None = None
        if method == b"GET":
            fixed = self.static_get.get(self.url)
            if fixed is not None:
                data = fixed[self.mode]
        if data is None:
            try:
                data = self.api.respond(method, self.url, self.host, self.mode)
            except Exception:  # a bug must not become a parser error or a dropped connection
                self._refuse(500)
                return
        if not self.delayed and self.mode != CLOSE:
            self.out.append(data)
        else:
            self._emit(data, self.mode == CLOSE)

    # -- responses -----------------------------------------------------------------------------

    def _refuse(self, status: int) -> None:
        message = {
            400: "Malformed HTTP request",
            414: f"Request target longer than {MAX_TARGET} bytes",
            431: "Request head too large",
        }.get(status, "Internal error")
        self._emit(self.api.error(status, message), True)

    def _emit(self, data: bytes, close: bool) -> None:
        if close:
            self.closing = True
            if not self.transport.is_closing():
                self.transport.pause_reading()
        if not self.delayed:
            self.out.append(data)
            self.close_after = self.close_after or close
            return
        slot = _Slot(data, close)
        self.pending.append(slot)
        delay = self.replica.delay()
        if delay > 0.0:
            slot.due = time.monotonic() + delay
            slot.handle = self.replica.loop.call_later(delay, self._release, slot)
        else:
            slot.ready = True
            self._drain()

    def _release(self, slot: _Slot) -> None:
        # uvloop's timers run on the loop's millisecond clock, read once per iteration: one
        # can fire up to a millisecond early. A response is never sent before its delay.
        left = slot.due - time.monotonic()
        if left > 0.0:
            slot.handle = self.replica.loop.call_later(left, self._release, slot)
            return
        slot.handle = None
        slot.ready = True
        self._drain()

    def _drain(self) -> None:
        pending = self.pending
        while pending and pending[0].ready and not self.lost:
            slot = pending.popleft()
            self.transport.write(slot.data)
            if slot.close:
                self.transport.close()
                return


# ---------------------------------------------------------------------------------------------
# command line


def _arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlb-replica",
        description="The demo backend fastlb balances: /home, /heartbeat, /neo, /apod.",
    )
    parser.add_argument(
        "--name",
        help="the replica's name, in /home and X-Served-By (default: $REPLICA_NAME, $SERVER_ID)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--port", type=int, default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})",
    )
    where.add_argument(
        "--fd", type=int, default=None,
        help="serve on this inherited descriptor, a TCP socket the parent bound (and, "
        "usually, listens on) so the port is the replica's before it starts: how fastlb "
        "starts its local replicas; --host and --port are then the socket's",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay every response by this much"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="± uniform random added to the delay"
    )
    return parser


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listening_socket(host: str, port: int) -> socket.socket:
    """The replica's listening socket, bound here rather than by create_server(host, port):
    uvloop resolves a host there in libuv's thread pool, whose four threads would then idle
    for the replica's whole life and make every socket call of the process dearer (fastlb's
    own listener avoids them the same way). `host` is resolved once, blocking, before serving.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


def _inherited_socket(fd: int) -> socket.socket:
    """The listening socket a parent handed over as descriptor `fd` (bound by it, so no other
    process can take the port between its choice and our start). One only bound is made to
    listen here; anything but a bound TCP socket is refused (OSError)."""
    sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.detach()
        raise OSError(f"descriptor {fd} is not a TCP socket")
    if sock.getsockname()[1] == 0:
        sock.detach()
        raise OSError(f"descriptor {fd} is a socket bound to no port")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(
    name: str,
    dataset: Dataset,
    host: str,
    port: int,
    latency: float,
    jitter: float,
    fd: int | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    where = f"descriptor {fd}" if fd is not None else _authority(host, port)
    try:
        if fd is not None:
            sock = _inherited_socket(fd)
            host, port = sock.getsockname()[:2]
        else:
            sock = _listening_socket(host, port)
    except OSError as exc:
        print(f"replica {name}: cannot listen on {where}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 1
    replica = Replica(Api(name, dataset, _authority(host, port)), loop, latency, jitter)
    try:
        server = await loop.create_server(lambda: ReplicaProtocol(replica), sock=sock)
    except OSError as exc:
        print(f"replica {name}: cannot listen on {where}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 1
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    if bound != port:  # --port 0: links must name the port the kernel chose
        replica.api = Api(name, dataset, _authority(host, bound))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gc.freeze()  # the dataset and prebuilt responses live forever: keep them out of collections
    print(f"replica {name} listening on {_authority(host, bound)}", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()
    replica.close_all()
    await asyncio.sleep(0)  # let the transports report connection_lost before the loop closes
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a replica until SIGTERM or SIGINT; 0 on a clean stop, 1 if it could not start."""
    parser = _arg_parser()
    args = parser.parse_args(argv)
    name: str = args.name or os.environ.get("REPLICA_NAME") or os.environ.get("SERVER_ID") or ""
    if not name:
        parser.error("a name is required: --name NAME, or REPLICA_NAME or SERVER_ID in the "
                     "environment")
    problem = check_name(name)
    if problem is not None:
        parser.error(problem)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port (0..65535)")
    if args.fd is not None and args.fd < 0:
        parser.error(f"--fd {args.fd} is not a descriptor")
    for option, value in (("--latency-ms", args.latency_ms), ("--jitter-ms", args.jitter_ms)):
        if not (math.isfinite(value) and value >= 0.0):
            parser.error(f"{option} must be a non-negative number of milliseconds")
    try:
        dataset = load()
    except DatasetError as exc:
        print(f"replica {name}: {exc}", file=sys.stderr, flush=True)
        return 1
    return uvloop.run(
        _serve(name, dataset, args.host, args.port, args.latency_ms / 1000.0,
               args.jitter_ms / 1000.0, args.fd)
    )


if __name__ == "__main__":
    sys.exit(main())
