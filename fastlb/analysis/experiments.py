"""The experiments that need a running balancer: fresh Balancers started in this process, with
local replica processes, loaded by the asyncio client over loopback.

Why in-process rather than `fastlb` as a child process: the A-3 experiment reads the balancer's
own record of events (when it saw the replica die, when the replacement joined) and the pid of
the replica to kill, and the rest can then share one way of starting and stopping balancers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace

from fastlb.analysis.client import Connection, HttpError, Sample, percentile, run_load
from fastlb.analysis.distribution import TableKind, predicted_counts, replica_names
from fastlb.analysis.progress import Progress
from fastlb.app import Balancer
from fastlb.config import Config, ProxyConfig, ReplicasConfig, RoutingConfig

__all__ = [
    "EventRow",
    "Exchange",
    "KillRun",
    "LoadRun",
    "exercise_endpoints",
    "kill_run",
    "load_run",
    "running_balancer",
]

HOST = "127.0.0.1"
BODY_SHOWN = 360  # characters of a response body kept for the report


@contextlib.asynccontextmanager
async def running_balancer(
    names: Sequence[str], routing: RoutingConfig
) -> AsyncIterator[tuple[Balancer, int]]:
    """A fresh Balancer on a free loopback port with local replicas `names`; stopped (replicas
    included) however the block ends."""
    config = Config(
        proxy=ProxyConfig(host=HOST, port=0),
        routing=routing,
        replicas=ReplicasConfig(count=len(names), names=tuple(names)),
    )
    balancer = Balancer(config)
    try:
        await balancer.start()
        assert balancer.server is not None
        yield balancer, balancer.server.address[1]
    finally:
        await balancer.stop()


def _requests(ids: Iterator[str] | Sequence[str]) -> Iterator[tuple[str, dict[str, str]]]:
    # The id rides in X-Request-ID, the key fastlb hashes by default (routing.key = request_id),
    # so each request lands where the table sends that id.
    return (("/home", {"X-Request-ID": request_id}) for request_id in ids)


@dataclass(slots=True)
class LoadRun:
    """`sent` /home requests through one balancer, counted per replica."""

    table: str
    n: int
    sent: int
    concurrency: int
    counts: dict[str, int]  # answered requests per replica, in name order
    failed: int
    failures: dict[str, int]  # reason -> count
    wall: float  # seconds from the first request to the last reply
    throughput: float  # answered requests per second
    p50_ms: float
    p99_ms: float
    predicted: dict[str, int]  # what the pure table says for the same ids
    matches_table: bool  # counts == predicted


def _count(names: Sequence[str], samples: Sequence[Sample]) -> tuple[dict[str, int], Counter[str]]:
    counts = dict.fromkeys(names, 0)
    failures: Counter[str] = Counter()
    for sample in samples:
        if sample.replica is None:
            failures[sample.error] += 1
        else:
            counts[sample.replica] = counts.get(sample.replica, 0) + 1
    return counts, failures


async def load_run(
    kind: TableKind, n: int, ids: Sequence[str], concurrency: int, progress: Progress
) -> LoadRun:
    """Send one /home request per id through a fresh N-replica balancer using `kind`'s table."""
    names = replica_names(n)
    progress.note(f"starting {n} replicas")
    async with running_balancer(names, kind.routing) as (_, port):
        progress.note("")
        started = time.perf_counter()
        samples = await run_load(
            HOST,
            port,
            _requests(ids),
            concurrency=concurrency,
            on_sample=lambda _sample: progress.advance(),
        )
        wall = time.perf_counter() - started
        progress.note("stopping")
    counts, failures = _count(names, samples)
    answered = sum(counts.values())
    latencies = [s.elapsed for s in samples if s.replica is not None]
    predicted = predicted_counts(kind.routing, names, ids)
    return LoadRun(
        table=kind.key,
        n=n,
        sent=len(samples),
        concurrency=concurrency,
        counts=counts,
        failed=sum(failures.values()),
        failures=dict(failures.most_common()),
        wall=wall,
        throughput=answered / wall if wall > 0 else 0.0,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        predicted=predicted,
        matches_table=counts == predicted,
    )


# --------------------------------------------------------------------------- endpoints


@dataclass(slots=True)
class Exchange:
    """One request of the endpoint tour and its answer, as the report shows it."""

    method: str
    target: str
    sent: str  # the request body ("" for none)
    status: int
    served_by: str  # X-Served-By ("" for the balancer's own routes)
    body: str  # the response body, shortened to BODY_SHOWN characters
    why: str  # what the exchange shows


def _shorten(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    return text if len(text) <= BODY_SHOWN else text[:BODY_SHOWN] + f" … ({len(text)} characters)"


def _listed(body: str) -> list[str]:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        replicas = json.loads(body)["message"]["replicas"]
        if isinstance(replicas, list):
            return [str(name) for name in replicas]
    return []


async def exercise_endpoints(port: int, progress: Progress) -> list[Exchange]:
    """Every endpoint of the spec once through the balancer, errors included; the replica set is
    back to where it started at the end."""
    conn = Connection(HOST, port)
    exchanges: list[Exchange] = []

    async def send(method: str, target: str, why: str, document: object = None) -> Exchange:
        body = b"" if document is None else json.dumps(document).encode()
        try:
            reply = await conn.request(method, target, body=body)
            status, served, text = (
                reply.status, reply.headers.get("x-served-by", ""), _shorten(reply.body)
            )
        except HttpError as exc:
            status, served, text = 0, "", f"(no response: {exc})"
        exchange = Exchange(method, target, body.decode(), status, served, text, why)
        exchanges.append(exchange)
        progress.advance()
        return exchange

    try:
        before = _listed((await send("GET", "/rep", "the replicas the balancer keeps")).body)
        added = await send(
            "POST", "/add", "two more: S4 as named, the other with a generated name",
            {"n": 2, "hostnames": ["S4"]},
        )
        new = [name for name in _listed(added.body) if name not in before]
        await send(
            "POST", "/add", "more hostnames than n: refused, nothing added",
            {"n": 1, "hostnames": ["S5", "S6"]},
        )
        await send(
            "DELETE", "/rm", "more hostnames than n: refused, nothing removed",
            {"n": 1, "hostnames": ["S4", "S5"]},
        )
        if new:  # without them, n would pick replicas at random: not what this tour shows
            await send(
                "DELETE", "/rm", "remove the two added", {"n": len(new), "hostnames": new}
            )
        await send("GET", "/rep", "back to the first replicas")
        await send("GET", "/home", "routed to a replica by the request's random id")
        await send("GET", "/heartbeat", "a replica's heartbeat: 200, empty body")
        await send(
            "GET", "/neo?start_date=2024-01-01&end_date=2024-01-01",
            "the NASA-style near-earth-object feed of one day",
        )
        await send("GET", "/apod?date=2024-01-01", "the NASA-style picture of the day")
        await send("GET", "/other", "a path the replicas do not serve: 400 from the balancer")
    finally:
        conn.close()
    return exchanges


# ------------------------------------------------------------------------ a replica killed


@dataclass(slots=True)
class EventRow:
    at: float  # seconds from the start of the run
    kind: str
    replica: str
    detail: str


@dataclass(slots=True)
class KillRun:
    """A load run during which one replica was killed with SIGKILL."""

    victim: str
    pid: int
    concurrency: int
    duration: float  # seconds the load ran
    bin_width: float
    kill_at: float  # seconds from the start
    died_at: float | None  # the balancer's "died" event
    down_at: float | None  # its "down" event (heartbeats failed), if it came first or at all
    replaced_at: float | None  # the "replaced" event: a new process under the same name
    serving_at: float | None  # the first reply from the replacement
    sent: int
    failed: int
    failures: dict[str, int]
    counts: dict[str, int]
    per_replica: dict[str, list[int]] = field(default_factory=dict)  # replies per bin
    failed_bins: list[int] = field(default_factory=list)
    # The same around the kill in finer bins: the replacement takes a fraction of a bin above.
    zoom_start: float = 0.0
    zoom_width: float = 0.02
    zoom_per_replica: dict[str, list[int]] = field(default_factory=dict)
    zoom_failed: list[int] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)


def _endless_ids(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    return (str(rng.randrange(100000, 1000000)) for _ in itertools.count())


def _binned(
    names: Sequence[str], samples: Sequence[Sample], start: float, width: float, bins: int
) -> tuple[dict[str, list[int]], list[int]]:
    """Replies per replica and failures in `bins` bins of `width` seconds from `start` (times
    relative to the run); samples outside are left out."""
    per_replica = {name: [0] * bins for name in names}
    failed = [0] * bins
    for sample in samples:
        index = math.floor((sample.done - start) / width)
        if not 0 <= index < bins:
            continue
        if sample.replica is None:
            failed[index] += 1
        else:
            per_replica.setdefault(sample.replica, [0] * bins)[index] += 1
    return per_replica, failed


def _first(events: Sequence[EventRow], kind: str, replica: str, after: float) -> float | None:
    return next(
        (e.at for e in events if e.kind == kind and e.replica == replica and e.at >= after), None
    )


async def kill_run(
    balancer: Balancer,
    port: int,
    victim: str,
    *,
    duration: float,
    kill_at: float,
    bin_width: float,
    concurrency: int,
    seed: int,
    progress: Progress,
) -> KillRun:
    """Load the balancer for `duration` seconds and SIGKILL `victim`'s process at `kill_at`.

    The run is stretched, up to 10 s more, so that it goes on for at least a second after the
    replacement joins: the chart must show the replica serving again, not only its absence.
    """
    names = balancer.cluster.names()
    stop = asyncio.Event()
    t0 = time.time()
    # A short timeout: a request the balancer never answers is a failure to count, and must
    # not hold the end of the run for long.
    load = asyncio.ensure_future(
        run_load(
            HOST, port, _requests(_endless_ids(seed)), concurrency=concurrency, stop=stop,
            timeout=2.0,
        )
    )
    pid = 0
    killed = 0.0
    limit = t0 + duration + 10.0
    try:
        while True:
            now = time.time()
            progress.update(min(now - t0, duration))
            if not killed:
                if now - t0 >= kill_at:
                    member = balancer.cluster.members[victim]
                    assert member.replica is not None and member.replica.pid is not None
                    pid = member.replica.pid
                    os.kill(pid, signal.SIGKILL)
                    killed = time.time()
                await asyncio.sleep(min(0.05, max(0.0, t0 + kill_at - time.time())))
                continue
            replaced = next(
                (e.at for e in balancer.cluster.events
                 if e.kind == "replaced" and e.replica == victim and e.at >= killed),
                None,
            )
            long_enough = now - t0 >= duration
            if now >= limit or (long_enough and replaced is not None and now >= replaced + 1.0):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        stopped = time.time()
        samples = await load
    # Relative to the start from here on; a request that was in flight at the stop and failed
    # later still counts, in the last bin.
    for index, sample in enumerate(samples):
        if sample.done > stopped:
            samples[index] = replace(sample, done=stopped - 1e-6)
    end = stopped - t0
    relative = [replace(sample, done=sample.done - t0) for sample in samples]

    events = [
        EventRow(e.at - t0, e.kind, e.replica, e.detail)
        for e in balancer.cluster.events
        if e.at >= t0
    ]
    kill_rel = killed - t0
    replaced_at = _first(events, "replaced", victim, kill_rel)
    serving_at = None
    if replaced_at is not None:
        serving_at = min(
            (s.done for s in relative if s.replica == victim and s.done >= replaced_at),
            default=None,
        )
    counts, failures = _count(names, relative)
    # Whole bins only: a last bin cut short by the stop would show as a drop in the rate.
    bins = max(1, math.floor(end / bin_width))
    per_replica, failed_bins = _binned(names, relative, 0.0, bin_width, bins)
    # The zoom: from 0.5 s before the kill to 0.5 s after the replacement served (or 1.5 s).
    zoom_width = 0.05
    zoom_start = max(0.0, kill_rel - 0.5)
    zoom_end = min(end, (serving_at if serving_at is not None else kill_rel + 1.0) + 0.5)
    zoom_bins = max(1, math.ceil((zoom_end - zoom_start) / zoom_width))
    zoom_per_replica, zoom_failed = _binned(names, relative, zoom_start, zoom_width, zoom_bins)
    return KillRun(
        victim=victim,
        pid=pid,
        concurrency=concurrency,
        duration=end,
        bin_width=bin_width,
        kill_at=kill_rel,
        died_at=_first(events, "died", victim, kill_rel),
        down_at=_first(events, "down", victim, kill_rel),
        replaced_at=replaced_at,
        serving_at=serving_at,
        sent=len(samples),
        failed=sum(failures.values()),
        failures=dict(failures.most_common()),
        counts=counts,
        per_replica=per_replica,
        failed_bins=failed_bins,
        zoom_start=zoom_start,
        zoom_width=zoom_width,
        zoom_per_replica=zoom_per_replica,
        zoom_failed=zoom_failed,
        events=events,
    )
