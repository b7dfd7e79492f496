"""fastlb's own CPU cost of one proxied exchange, without sockets: `python -m bench.exchange`.

Why: `bench.run` measures the whole process against HAProxy, where the kernel's share (about
70% here) and the machine's noise (rounds differ by 20%) hide a change of a few hundred
nanoseconds in fastlb's code. This drives a real ClientConnection and its pooled
BackendConnections with transports that only count writes: a wrk-like request in, an nginx
response back, repeated, so what is timed is the data path's own work per exchange (head
parsing, routing, response reading, counters), compiled or from source as the process runs it
(FASTLB_PURE=1 for the latter). The best of several passes is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop

if __package__ in (None, ""):  # run as `python bench/exchange.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastlb._native import mode
from fastlb.config import default
from fastlb.maglev import MaglevTable
from fastlb.proxy.client import ClientConnection
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import BackendConnection, Upstream
from fastlb.routing import Route

#: What wrk sends for bench/paths.lua, and what the bench's nginx backends answer.
REQUEST = b"GET /bench/%d HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 09:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n"
    b"X-Served-By: b1\r\n\r\nhello from b1\n"
)


class CountingTransport:
    """The transport methods the data path calls; writes are counted, not sent."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(exchanges: int, passes: int, http: str) -> list[float]:
    """Seconds per exchange, one figure per pass."""
    config = default()
    proxy = dataclasses.replace(config.proxy, replica_paths=(), http=http)
    upstreams = {name: Upstream(name, "127.0.0.1", 1) for name in ("b1", "b2", "b3")}
    route = Route.build(MaglevTable([(name, 1) for name in upstreams]), upstreams)
    server = ProxyServer(proxy, "path", route)
    for upstream in upstreams.values():
        for _ in range(2):
            conn = BackendConnection(upstream)
            conn.connection_made(CountingTransport())  # type: ignore[arg-type]
            upstream.idle.append(conn)
    client = ClientConnection(server)
    client.connection_made(CountingTransport())  # type: ignore[arg-type]
    requests = [REQUEST % i for i in range(4096)]
    results = []
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(exchanges):
            client.data_received(requests[i & 4095])
            backend = client.backend
            assert backend is not None, "the request did not reach a pooled replica connection"
            backend.data_received(RESPONSE)
            # Let the loop turn, as it does between the reads of a real round: the writes
            # queued in the outbox are made then (at most one exchange per round here, the
            # outbox's worst case: it pays its call_soon for every exchange).
            await asyncio.sleep(0)
        results.append((time.perf_counter() - start) / exchanges)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.exchange", description=__doc__)
    ap.add_argument("--exchanges", type=int, default=200_000, help="per pass (default 200000)")
    ap.add_argument("--passes", type=int, default=5, help="passes; the best is kept (default 5)")
    ap.add_argument("--http", choices=["httptools", "h11"], default="httptools")
    args = ap.parse_args(argv)
    results = uvloop.run(measure(args.exchanges, args.passes, args.http))
    print(
        f"{min(results) * 1e6:.2f} us per exchange ({mode()}, {args.http}; best of "
        f"{args.passes} x {args.exchanges:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
