"""GET /metrics: Prometheus text format from a custom collector read at scrape time.

The data path keeps plain-int counters (`Upstream`, `ProxyServer`, `Cluster`) and never calls a
metrics library per request: a client-library Counter.inc() takes a lock and costs more than
fastlb's whole per-request bookkeeping. Instead `FastlbCollector.collect()` reads those ints
when Prometheus scrapes and turns them into metric families, so a scrape costs O(replicas x
buckets + status codes seen), whatever the number of requests served.

The registry is private (not prometheus_client's global REGISTRY): two Balancers in one process
(the tests run several) must not register the same names twice, and nothing else a library
registers globally should leak into fastlb's page.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fastlb.control.health import STARTING, UP
from fastlb.http.messages import method_not_allowed
from fastlb.proxy.client import LocalHandler, LocalRequest

if TYPE_CHECKING:
    from fastlb.app import Balancer
    from fastlb.proxy.server import ProxyServer
    from fastlb.workers import WorkerPool

#: The text exposition format generate_latest() writes (spelled out rather than taken from
#: prometheus_client, whose CONTENT_TYPE_LATEST follows the library's newest format).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The `replica` label of responses fastlb sent itself, with no replica involved (a 503 while
#: none is up, a 400 for a path the replicas do not serve, ...).
NO_REPLICA = "none"

#: Member states counted by fastlb_replicas, besides "desired" (every member) and "healthy"
#: (members in state up).
_STATES = ("starting", "draining", "down", "disabled")


class FastlbCollector(Collector):
    """Turns fastlb's plain-int counters into metric families, at scrape time.

    collect() runs on the event loop (from the /metrics handler), the thread that mutates the
    counters, so it reads them without a lock and never sees a dict change size mid-iteration.
    Its output has one sample set per replica and per status code seen; it does not grow with
    the number of requests (tests/test_metrics.py checks that).
    """

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def _servers(self) -> list[ProxyServer]:
        b = self.balancer
        return [s for s in (b.server, b.admin_server) if s is not None]

    def collect(self) -> Iterator[Metric]:
        cluster = self.balancer.cluster
        pool = self.balancer.workers
        servers = self._servers()
        members = list(cluster.members.values())
        live = [(m.name, m.upstream) for m in members if m.upstream is not None]

        requests = CounterMetricFamily(
            "fastlb_requests",
            "Responses sent to clients, by the replica that produced them and HTTP status code; "
            f'replica="{NO_REPLICA}" counts errors fastlb answered itself with no replica '
            "(503 while none is up, 400 for a path the replicas do not serve, 404 on the admin "
            "listener).",
            labels=["replica", "code"],
        )
        for name, up in live:
            for status, count in sorted(up.responses.items()):
                requests.add_metric([name, str(status)], count)
        own: dict[int, int] = {}
        for server in servers:
            for status, count in server.own_responses.items():
                own[status] = own.get(status, 0) + count
        for status, count in sorted(own.items()):
            requests.add_metric([NO_REPLICA, str(status)], count)
        yield requests

        duration = HistogramMetricFamily(
            "fastlb_request_duration_seconds",
            "Time from a request's head arriving to the end of the replica's response, by "
            "replica (what the client waited, fastlb's own time included).",
            labels=["replica"],
        )
        for name, up in live:
            # The upstream's slots are per bucket; Prometheus wants cumulative counts.
            counts = up.duration_counts
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(up.duration_bounds, counts, strict=False):
                cumulative += count
                # repr: the shortest exact spelling, what prometheus_client's own histograms
                # write for these bounds ("0.005", "1.0").
                buckets.append((repr(float(bound)), cumulative))
            buckets.append(("+Inf", cumulative + counts[-1]))
            duration.add_metric([name], buckets, up.duration_sum)
        yield duration

        in_flight = GaugeMetricFamily(
            "fastlb_requests_in_flight",
            "Requests sent to the replica whose response has not completed yet (what a drain "
            "waits for).",
            labels=["replica"],
        )
        for name, up in live:
            in_flight.add_metric([name], up.active)
        yield in_flight

        replica_up = GaugeMetricFamily(
            "fastlb_replica_up",
            "1 while the replica is up (healthy, enabled and not draining: it takes new "
            "requests), else 0.",
            labels=["replica"],
        )
        states: dict[str, int] = dict.fromkeys(("desired", "healthy", *_STATES), 0)
        states["desired"] = len(members)
        for member in members:
            state = member.state
            replica_up.add_metric([member.name], 1.0 if state == UP else 0.0)
            if state == UP:
                states["healthy"] += 1
            elif state == STARTING:
                states["starting"] += 1
            elif state in states:
                states[state] += 1
        yield replica_up

        replicas = GaugeMetricFamily(
            "fastlb_replicas",
            "Replicas by state: desired (every replica fastlb keeps, whatever its state), "
            "healthy (up and taking requests), starting, draining, down (failed heartbeats or "
            "exited, awaiting replacement) and disabled.",
            labels=["state"],
        )
        for state, count in states.items():
            replicas.add_metric([state], count)
        yield replicas

        restarts = CounterMetricFamily(
            "fastlb_replica_restarts",
            "Times fastlb replaced the replica after it died or stayed down.",
            labels=["replica"],
        )
        for member in members:
            restarts.add_metric([member.name], member.restarts)
        yield restarts

        heartbeats = CounterMetricFamily(
            "fastlb_heartbeat_failures",
            "Heartbeats (GET /heartbeat) to the replica that failed or timed out; [health] fall "
            "in a row take it out of the table.",
            labels=["replica"],
        )
        failures = cluster.heartbeat_failures
        for member in members:
            heartbeats.add_metric([member.name], failures.get(member.name, 0))
        yield heartbeats

        yield CounterMetricFamily(
            "fastlb_retries",
            "Requests sent again after a replica refused, timed out or closed a pooled "
            "connection before answering (to the next replica, or on a fresh connection).",
            value=sum(s.retries for s in servers),
        )

        yield GaugeMetricFamily(
            "fastlb_tunnels_open",
            "WebSocket tunnels open now (requests the replica upgraded with a 101, relayed as "
            "bytes both ways until either side closes).",
            value=sum(s.tunnels_open for s in servers),
        )
        yield CounterMetricFamily(
            "fastlb_tunnels",
            "WebSocket tunnels opened (101 responses relayed).",
            value=sum(s.tunnels for s in servers),
        )
        tunnel_bytes = CounterMetricFamily(
            "fastlb_tunnel_bytes",
            "Bytes relayed through WebSocket tunnels, by direction: to_replica (sent by "
            "clients) and to_client (sent by replicas).",
            labels=["direction"],
        )
        tunnel_bytes.add_metric(["to_replica"], sum(s.tunnel_bytes_up for s in servers))
        tunnel_bytes.add_metric(["to_client"], sum(s.tunnel_bytes_down for s in servers))
        yield tunnel_bytes
        yield CounterMetricFamily(
            "fastlb_bounded_load_passes",
            "Requests sent to another candidate because their key's replica was at its bounded "
            "load ([routing] balance_factor).",
            value=sum(s.over_cap for s in servers),
        )

        share = GaugeMetricFamily(
            "fastlb_table_share",
            "Fraction of the key space the routing table sends to the replica (0 when it is not "
            "in the table; the shares of the table's replicas sum to 1).",
            labels=["replica"],
        )
        shares = cluster.table_shares()
        for member in members:
            share.add_metric([member.name], shares.get(member.name, 0.0))
        yield share

        table = GaugeMetricFamily(
            "fastlb_table_info",
            "The routing table in place: its kind and fingerprint (a hash of its content). "
            "Balancers with the same fingerprint send every key to the same replica. No "
            "series while no replica is in the table.",
            labels=["kind", "fingerprint"],
        )
        info = cluster.table_info()
        if info is not None:
            table.add_metric(list(info), 1)
        yield table

        backend = GaugeMetricFamily(
            "fastlb_backend_connections",
            "Connections from fastlb to the replica: idle (pooled keep-alive connections "
            "waiting for a request) and active (carrying a request now).",
            labels=["replica", "state"],
        )
        for name, up in live:
            idle = pool.idle.get(name, 0) if pool is not None else len(up.idle)
            backend.add_metric([name, "idle"], idle)
            backend.add_metric([name, "active"], up.active)
        yield backend

        errors = CounterMetricFamily(
            "fastlb_backend_failures",
            "Exchanges with the replica that failed: no usable response (a 502 or 504 to the "
            "client), a refused or timed-out connection, or a response cut off midway.",
            labels=["replica"],
        )
        for name, up in live:
            errors.add_metric([name], up.failures)
        yield errors

        yield GaugeMetricFamily(
            "fastlb_client_connections",
            "Client connections open to fastlb now (the data port and the admin listener).",
            value=sum(len(s.clients) for s in servers) + (pool.clients if pool else 0),
        )

        yield CounterMetricFamily(
            "fastlb_accepted_connections",
            "Client connections accepted (the data port and the admin listener).",
            value=sum(s.accepted for s in servers),
        )

        yield CounterMetricFamily(
            "fastlb_accept_pauses",
            "Times fastlb stopped accepting because it held [proxy] max_connections clients; "
            "new clients waited in the listen backlog meanwhile.",
            value=sum(s.accept_pauses for s in servers),
        )

        yield CounterMetricFamily(
            "fastlb_accept_deferred",
            "Accepts that failed for want of file descriptors or memory (EMFILE, ENFILE, "
            "ENOBUFS, ENOMEM): the client stayed in the backlog and accepting resumed 100 ms "
            "later. Nonzero: raise ulimit -n or lower [proxy] max_connections.",
            value=sum(s.accept_errors for s in servers),
        )

        yield CounterMetricFamily(
            "fastlb_tls_handshake_failures",
            "TLS client connections closed before their handshake ended: a failed handshake "
            "(plain HTTP sent to the HTTPS port, no common protocol version or cipher, a "
            "client that refused the certificate), one not done within [proxy] "
            "header_timeout, or a client that left during it. 0 on a plain listener.",
            value=sum(s.tls_handshake_failures for s in servers),
        )

        yield GaugeMetricFamily(
            "fastlb_max_connections",
            "The client connections the data port holds at most: [proxy] max_connections, or "
            "what the descriptor limit leaves after fastlb's reserve.",
            value=servers[0].max_connections if servers else 0,
        )

        yield GaugeMetricFamily(
            "fastlb_listen_queue",
            "Client connections waiting in the listening sockets' backlog, not accepted yet.",
            value=sum(s.waiting() for s in servers) + (pool.waiting if pool else 0),
        )

        yield CounterMetricFamily(
            "fastlb_dropped_writes",
            "Writes dropped because the client or replica connection had closed earlier in "
            "the same event-loop round (the writes queued after them still went out).",
            value=sum(s.outbox.dropped for s in servers),
        )

        yield CounterMetricFamily(
            "fastlb_replica_recoveries",
            "Replicas that fastlb does not replace brought back by their engine (a Swarm task "
            "replaced in its slot) or by whoever runs them (static), up again.",
            value=cluster.recoveries,
        )
        yield CounterMetricFamily(
            "fastlb_replica_recovery_seconds",
            "Seconds those replicas were away in all, from going down (death or failed "
            "heartbeats) to up again; divided by fastlb_replica_recoveries, the mean time to "
            "recovery.",
            value=cluster.recovery_seconds,
        )

        yield CounterMetricFamily(
            "fastlb_heartbeats_skipped",
            "Heartbeats not sent because fastlb itself was out of descriptors (or buffers, "
            "memory, local ports); no replica's health was judged by them.",
            value=cluster.heartbeats_skipped,
        )

        yield CounterMetricFamily(
            "fastlb_table_builds",
            "Routing tables built: at start, when replica names or weights change and when a "
            "reload changes the table's kind or parameters; never for a health change (health "
            "is read when a request picks a replica).",
            value=cluster.table_builds,
        )

        yield CounterMetricFamily(
            "fastlb_client_requests",
            "Request heads fastlb received and dispatched, to a replica or answered itself "
            "(admin routes and this page included).",
            value=sum(s.requests for s in servers),
        )

        yield CounterMetricFamily(
            "fastlb_refused_requests",
            "Malformed or refused requests fastlb answered with a 4xx and closed the "
            "connection on, forwarding nothing.",
            value=sum(s.refused for s in servers),
        )
        if pool is not None:
            yield from _worker_families(pool)


def _worker_families(pool: WorkerPool) -> Iterator[Metric]:
    """Per-worker series ([proxy] workers > 1): each worker's share of the traffic, its
    restarts, and how long the last route change took to reach every worker."""
    rows = pool.per_worker()
    requests = CounterMetricFamily(
        "fastlb_worker_requests",
        "Request heads each worker process received (the kernel spreads connections over "
        "their SO_REUSEPORT listeners); counts restart from 0 with the worker.",
        labels=["worker"],
    )
    accepted = CounterMetricFamily(
        "fastlb_worker_accepted_connections",
        "Client connections each worker process accepted.",
        labels=["worker"],
    )
    restarts = CounterMetricFamily(
        "fastlb_worker_restarts",
        "Times the main process started a worker again after it exited.",
        labels=["worker"],
    )
    pids = GaugeMetricFamily(
        "fastlb_worker_pid", "The process id of each worker now.", labels=["worker"]
    )
    up = GaugeMetricFamily(
        "fastlb_worker_up",
        "1 while the worker process listens on the data port, 0 while it is (re)starting.",
        labels=["worker"],
    )
    for index, pid, listening, restarted, served, taken in rows:
        label = [str(index)]
        up.add_metric(label, 1.0 if listening else 0.0)
        requests.add_metric(label, served)
        accepted.add_metric(label, taken)
        restarts.add_metric(label, restarted)
        pids.add_metric(label, pid)
    yield requests
    yield accepted
    yield restarts
    yield pids
    yield up
    yield GaugeMetricFamily(
        "fastlb_worker_route_seconds",
        "Seconds from the last route change in the main process to the last worker using it.",
        value=pool.route_seconds,
    )


class Metrics:
    """The /metrics route: a private registry with fastlb's collector and process metrics."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.collector = FastlbCollector(balancer)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        # CPU, memory, open file descriptors, start time of this process (read from /proc).
        self.process = ProcessCollector(registry=self.registry)

    def routes(self) -> dict[bytes, LocalHandler]:
        return {b"/metrics": self.handle}

    async def handle(self, request: LocalRequest) -> bytes:
        """Render the page on the event loop: the counters are only consistent there, and
        rendering a handful of replicas takes well under a millisecond."""
        method = request.head.method
        if method not in (b"GET", b"HEAD"):
            return method_not_allowed(method, request.head.target, (b"GET", b"HEAD"))
        if self.balancer.workers is not None:
            await self.balancer.workers.refresh()  # the workers' counters, summed, now
        body = generate_latest(self.registry)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
            CONTENT_TYPE,
            len(body),
        )
        return head if method == b"HEAD" else head + body

    async def close(self) -> None:
        """Nothing runs in the background: the page is rendered only when it is asked for."""
