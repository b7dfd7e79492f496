"""Consistent hashing with bounded loads under a skewed workload: with and without the bound.

    python -m bench.bounded [--seconds 3] [--rounds 3] [--factor 1.25] [--concurrency 24]

A balancer runs in this process in front of replicas that saturate as a real app does: each
is a real HTTP server on its own socket (in the same event loop) with `workers` requests served
at a time, each taking `service_ms`, the rest waiting their turn (a gunicorn app with sync
workers behaves so; the demo replica's latency is a timer and never saturates). A client in the
same loop keeps `concurrency` keep-alive connections busy with a skewed key stream: half the
requests carry one hot key, the rest a Zipf(1.1) tail over 10,000 keys. Rounds alternate the
factor off and on. Per mode it reports the latency p50/p99, each replica's share of requests
and its peak in-flight count (sampled every millisecond from the data path's own counters),
and the keys that left their table home: the share of requests and of distinct keys served
elsewhere (with the bound, only while their replica is full).

The client shares the loop with the balancer, so latencies include the client's own work:
compare the two modes with each other, not with other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

import uvloop

from fastlb.app import Balancer
from fastlb.config import (
    Config,
    HealthConfig,
    ProxyConfig,
    ReplicasConfig,
    ReplicaSpec,
    RoutingConfig,
)

HOT = b"hot-key"
TAIL_KEYS = 10_000


@dataclass
class Mode:
    """What one run of one mode saw."""

    factor: float
    latencies: list[float] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    homes: dict[bytes, str] = field(default_factory=dict)  # key -> its replica in the table
    moved_requests: int = 0
    moved_keys: set[bytes] = field(default_factory=set)
    keys: set[bytes] = field(default_factory=set)
    cap: int = 0  # the bound on any replica's in-flight count this load allows
    failures: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies)


def key_stream(seed: int) -> list[bytes]:
    """Half hot, half a Zipf(1.1) tail: the same list for every mode of a round."""
    rng = random.Random(seed)
    weights = [1 / (k**1.1) for k in range(1, TAIL_KEYS + 1)]
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    keys = []
    for _ in range(200_000):
        if rng.random() < 0.5:
            keys.append(HOT)
        else:
            k = bisect.bisect_left(cumulative, rng.random() * total)
            keys.append(b"k%d" % k)
    return keys


class SlottedReplica:
    """An HTTP server with `workers` slots: a request waits for a free one, holds it for
    `service` seconds, then is answered with its name in X-Served-By. /heartbeat is answered
    at once: 200, or 503 while `healthy` is False (tests/test_cluster.py flaps it)."""

    def __init__(self, name: str, workers: int = 1000, service: float = 0.0) -> None:
        self.name = name
        self.service = service
        self.slots = asyncio.Semaphore(workers)
        self.healthy = True
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served_by = b"\r\nX-Served-By: " + self.name.encode() + b"\r\nContent-Length: 2\r\n\r\n"
        answer = b"HTTP/1.1 200 OK" + served_by + b"ok"
        sick = b"HTTP/1.1 503 Unavailable" + served_by + b"no"
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /heartbeat "):
                    writer.write(answer if self.healthy else sick)
                    continue
                if self.service:
                    async with self.slots:
                        await asyncio.sleep(self.service)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def config(factor: float, ports: dict[str, int]) -> Config:
    static = tuple(ReplicaSpec(name, "127.0.0.1", port) for name, port in ports.items())
    return Config(
        proxy=ProxyConfig(port=0, replica_paths=()),
        routing=RoutingConfig(key="request_id", balance_factor=factor),
        # Heartbeats every 10 s: none lands inside a measured run to disturb it.
        health=HealthConfig(interval=10.0),
        replicas=ReplicasConfig(
            provider="static", count=len(static), names=tuple(ports), static=static
        ),
    )


async def run_mode(
    factor: float,
    keys: list[bytes],
    seconds: float,
    concurrency: int,
    workers: int = 8,
    service: float = 0.005,
    replicas: int = 3,
) -> Mode:
    apps = [SlottedReplica(f"Server{i + 1}", workers, service) for i in range(replicas)]
    ports = {app.name: await app.start() for app in apps}
    cfg = config(factor, ports)
    balancer = Balancer(cfg)
    await balancer.start()
    mode = Mode(cfg.routing.balance_factor)
    try:
        server = balancer.server
        assert server is not None and server.route is not None
        route = server.route
        port = server.address[1]
        table = route.table
        upstreams = {u.name: u for u in route.upstreams}
        mode.peak = dict.fromkeys(upstreams, 0)
        factor = cfg.routing.balance_factor
        if factor:
            # total in flight <= concurrency, so at each pick cap <= ceil(f * C / N) (equal
            # weights): no replica's count can pass it.
            mode.cap = math.ceil(factor * concurrency / len(upstreams))
        deadline = time.monotonic() + seconds
        cursor = [0]

        async def sampler() -> None:
            while time.monotonic() < deadline:
                for name, up in upstreams.items():
                    if up.active > mode.peak[name]:
                        mode.peak[name] = up.active
                await asyncio.sleep(0.001)

        async def client() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while time.monotonic() < deadline:
                    key = keys[cursor[0] % len(keys)]
                    cursor[0] += 1
                    started = time.perf_counter()
                    writer.write(
                        b"GET /home HTTP/1.1\r\nHost: b\r\nX-Request-ID: " + key + b"\r\n\r\n"
                    )
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                    await reader.readexactly(length)
                    mode.latencies.append(time.perf_counter() - started)
                    if not head.startswith(b"HTTP/1.1 200 "):
                        mode.failures += 1
                        continue
                    by = head.split(b"X-Served-By: ", 1)[1].split(b"\r\n", 1)[0].decode()
                    mode.served[by] = mode.served.get(by, 0) + 1
                    home = mode.homes.get(key)
                    if home is None:
                        home = mode.homes[key] = table.names[table.lookup(key)]
                    mode.keys.add(key)
                    if by != home:
                        mode.moved_requests += 1
                        mode.moved_keys.add(key)
            finally:
                writer.close()

        await asyncio.gather(sampler(), *(client() for _ in range(concurrency)))
    finally:
        await balancer.stop()
        for app in apps:
            app.close()
    return mode


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(mode: Mode) -> list[str]:
    total = max(mode.requests, 1)
    shares = " / ".join(f"{mode.served.get(n, 0) / total:.0%}" for n in sorted(mode.peak))
    peaks = " / ".join(str(mode.peak[n]) for n in sorted(mode.peak))
    return [
        "off" if not mode.factor else f"{mode.factor:g}",
        str(mode.requests),
        f"{percentile(mode.latencies, 0.5) * 1e3:.1f}",
        f"{percentile(mode.latencies, 0.99) * 1e3:.1f}",
        shares,
        peaks + (f" (cap {mode.cap})" if mode.cap else ""),
        f"{mode.moved_requests / total:.1%}",
        f"{len(mode.moved_keys) / max(len(mode.keys), 1):.1%}",
    ]


HEADER = [
    "factor", "requests", "p50 ms", "p99 ms", "share by replica", "peak in flight",
    "requests moved", "keys moved",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--factor", type=float, default=1.25)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--workers", type=int, default=8, help="slots per replica")
    parser.add_argument("--service-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    rows = []
    p99: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        keys = key_stream(round_)
        order = [0.0, args.factor] if round_ % 2 == 0 else [args.factor, 0.0]
        for factor in order:
            mode = uvloop.run(
                run_mode(
                    factor, keys, args.seconds, args.concurrency, args.workers,
                    args.service_ms / 1e3,
                )
            )
            rows.append([str(round_ + 1), *row(mode)])
            p99["on" if factor else "off"].append(percentile(mode.latencies, 0.99))
    header = ["round", *HEADER]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(
        f"\nmedian p99: off {statistics.median(p99['off']) * 1e3:.1f} ms, "
        f"factor {args.factor:g} {statistics.median(p99['on']) * 1e3:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
