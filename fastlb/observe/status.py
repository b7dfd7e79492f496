"""GET /status and /status.json: a live, self-contained status page.

/status is one HTML document (inline CSS and JS, nothing fetched from anywhere but
/status.json, which a Content-Security-Policy enforces) that polls /status.json every second.

Rates and percentiles come from a sampler, not from the data path: the proxy only bumps plain
ints (`Upstream.requests`, `Upstream.duration_counts`), and once a second a background task
copies them per replica name into a bounded history (~5 minutes). Requests/s is the difference
of two consecutive samples over the time between them; p50/p99 come from the difference of
the latency histogram over the last ~10 s, interpolated linearly within the bucket the rank
falls in (the histogram cannot say more; a rank in the overflow bucket, above every bound,
reports the highest bound, as Prometheus' histogram_quantile does). Counters are kept per
replica *name*, so a replaced replica (same name, counters carried over by `Upstream.inherit`)
continues its series, and a removed one drops out of the table and the chart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from importlib.resources import files
from typing import TYPE_CHECKING

from fastlb.http.messages import method_not_allowed
from fastlb.proxy.client import LocalHandler, LocalRequest

if TYPE_CHECKING:
    from fastlb.app import Balancer
    from fastlb.control.cluster import Cluster

log = logging.getLogger("fastlb.status")

#: Seconds between samples: the page's refresh cadence and the resolution of the chart.
INTERVAL = 1.0
#: Samples kept: about five minutes of history at one a second.
HISTORY = 301
#: Seconds of histogram difference the percentiles describe: long enough to hold a few hundred
#: requests at modest load, short enough that a latency change shows within seconds.
WINDOW = 10.0
#: Events sent to the page (newest first); the cluster keeps up to 500.
EVENTS = 200

_SECURITY = (
    b"Cache-Control: no-store\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
)
#: The page may talk to its own origin (/status.json) and nothing else.
_CSP = (
    b"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    b"style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
    b"form-action 'none'; frame-ancestors 'none'\r\n"
)


@dataclass(frozen=True, slots=True)
class Counters:
    """One replica's counters at one sample: copies, so later increments do not show."""

    requests: int
    bounds: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time(), for the page's clock
    mono: float  # monotonic, for rates
    counters: dict[str, Counters]
    rates: dict[str, float]  # requests/s since the previous sample, per name present in both


def quantile(q: float, bounds: tuple[float, ...], counts: tuple[int, ...]) -> float | None:
    """The q-quantile (seconds) of a non-cumulative histogram, or None when it is empty.

    `counts[i]` holds observations in (bounds[i-1], bounds[i]] (the first from 0), the last slot
    those above every bound. The rank is located in its bucket and interpolated linearly
    between the bucket's edges, assuming observations spread evenly within it; a rank in the
    overflow bucket gives the highest bound (a lower limit: nothing better is known).
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(counts):
        if count > 0 and below + count >= rank:
            if i >= len(bounds):
                return bounds[-1] if bounds else None
            lo = bounds[i - 1] if i > 0 else 0.0
            hi = bounds[i]
            return lo + (hi - lo) * max(rank - below, 0.0) / count
        below += count
    return bounds[-1] if bounds else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


class Sampler:
    """Once a second, copy every replica's counters; derive rates and windowed percentiles.

    Reads only plain ints the proxy already keeps: the data path does no work for this page.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        interval: float = INTERVAL,
        history: int = HISTORY,
        window: float = WINDOW,
    ) -> None:
        self.cluster = cluster
        self.interval = interval
        self.window = window
        self.samples: deque[Sample] = deque(maxlen=history)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.sample()  # a first reference point now, so the first rate comes in 1 s
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Sample on a fixed cadence (not `interval` after the last sample finished), skipping
        ticks rather than bunching them when the loop was busy."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(next_at - loop.time(), 0.0))
            try:
                self.sample()
            except Exception:  # a bug here must not end the page for good
                log.exception("status sampler failed")
            next_at += self.interval
            now = loop.time()
            if next_at <= now:
                next_at = now + self.interval

    def sample(self, at: float | None = None, mono: float | None = None) -> Sample:
        """Take one sample (the clocks can be given, for tests)."""
        at = time.time() if at is None else at
        mono = time.monotonic() if mono is None else mono
        counters: dict[str, Counters] = {}
        for name, member in self.cluster.members.items():
            up = member.upstream
            if up is not None:
                counters[name] = Counters(
                    up.requests, up.duration_bounds, tuple(up.duration_counts)
                )
        rates: dict[str, float] = {}
        if self.samples:
            prev = self.samples[-1]
            elapsed = mono - prev.mono
            if elapsed > 0:
                for name, now in counters.items():
                    before = prev.counters.get(name)
                    if before is not None and now.requests >= before.requests:
                        rates[name] = (now.requests - before.requests) / elapsed
        sample = Sample(at, mono, counters, rates)
        self.samples.append(sample)
        return sample

    def window_counts(self, name: str) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
        """The histogram of `name`'s requests over the last `window` seconds: the latest sample
        minus the oldest one in the window that is consistent with it (same bounds, counters
        not reset). None when fewer than two such samples exist."""
        if len(self.samples) < 2:
            return None
        latest = self.samples[-1]
        newest = latest.counters.get(name)
        if newest is None:
            return None
        base: Counters | None = None
        newer = newest
        for sample in reversed(self.samples):
            if sample is latest:
                continue
            if latest.mono - sample.mono > self.window + self.interval / 2:
                break
            older = sample.counters.get(name)
            if older is None or older.bounds != newer.bounds or older.requests > newer.requests:
                break  # not there yet, reconfigured or reset: the window starts after it
            base, newer = older, older
        if base is None:
            return None
        counts = tuple(max(a - b, 0) for a, b in zip(newest.counts, base.counts, strict=True))
        return newest.bounds, counts


class StatusPage:
    """Serves /status (the page) and /status.json (what it shows), fed by a Sampler."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.sampler = Sampler(balancer.cluster)
        self.page = files(__package__ or "fastlb.observe").joinpath("status.html").read_bytes()
        # Balancer.start() builds observers inside the running loop; elsewhere (a test that
        # builds one by hand) the first request starts the sampler.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            self.sampler.start()

    def routes(self) -> dict[bytes, LocalHandler]:
        return {b"/status": self.html, b"/status.json": self.json}

    async def close(self) -> None:
        await self.sampler.close()

    # --------------------------------------------------------------------- handlers
    async def html(self, request: LocalRequest) -> bytes:
        refused = _refuse(request)
        if refused is not None:
            return refused
        self.sampler.start()
        return _response(request, b"text/html; charset=utf-8", self.page, _CSP)

    async def json(self, request: LocalRequest) -> bytes:
        refused = _refuse(request)
        if refused is not None:
            return refused
        self.sampler.start()
        body = json.dumps(self.snapshot(), separators=(",", ":")).encode()
        return _response(request, b"application/json", body)

    # ----------------------------------------------------------------------- payload
    def snapshot(self) -> dict[str, object]:
        """What /status.json returns (the shape is in tests/test_status.py's first test)."""
        cluster = self.balancer.cluster
        sampler = self.sampler
        samples = sampler.samples
        latest = samples[-1] if samples else None
        replicas: list[dict[str, object]] = []
        names: list[str] = []
        merged: dict[tuple[float, ...], list[int]] = {}
        total_rps = 0.0
        total_requests = in_flight = up = 0
        for info in cluster.replicas():
            rps = latest.rates.get(info.name) if latest is not None else None
            window = sampler.window_counts(info.name)
            p50 = p99 = None
            window_requests = 0
            if window is not None:
                bounds, counts = window
                p50, p99 = quantile(0.5, bounds, counts), quantile(0.99, bounds, counts)
                window_requests = sum(counts)
                into = merged.setdefault(bounds, [0] * len(counts))
                for i, count in enumerate(counts):
                    into[i] += count
            names.append(info.name)
            total_rps += rps or 0.0
            total_requests += info.requests
            in_flight += info.in_flight
            if info.state == "up":
                up += 1
            replicas.append(
                {
                    "name": info.name,
                    "address": info.address,
                    "state": info.state,
                    "weight": info.weight,
                    "share_pct": round(info.share * 100, 2),
                    "requests": info.requests,
                    "rps": None if rps is None else round(rps, 2),
                    "p50_ms": _ms(p50),
                    "p99_ms": _ms(p99),
                    "window_requests": window_requests,
                    "restarts": info.restarts,
                    "in_flight": info.in_flight,
                }
            )
        series: dict[str, list[float | None]] = {"t": [round(s.at, 3) for s in samples]}
        for name in names:
            series[name] = [
                None if (rate := s.rates.get(name)) is None else round(rate, 2) for s in samples
            ]
        # Percentiles across replicas: exact only when they share bucket bounds (they do
        # unless a reload changed [metrics] buckets within the window).
        p50_all = p99_all = None
        buckets: list[float] | None = None
        if len(merged) == 1:
            ((bounds, summed),) = merged.items()
            p50_all = quantile(0.5, bounds, tuple(summed))
            p99_all = quantile(0.99, bounds, tuple(summed))
            buckets = list(bounds)
        in_place = cluster.table_info()
        kind, fingerprint = (
            in_place if in_place is not None else (cluster.config.routing.table, None)
        )
        events = [
            {"at": round(e.at, 3), "kind": e.kind, "replica": e.replica, "detail": e.detail}
            for e in reversed(list(cluster.events)[-EVENTS:])
        ]
        return {
            "now": round(time.time(), 3),
            "sampler": {
                "interval_s": sampler.interval,
                "history_s": round(sampler.interval * ((samples.maxlen or 1) - 1)),
                "percentile_window_s": sampler.window,
                "percentiles": "linear interpolation within latency histogram buckets",
                "buckets_s": buckets,
            },
            "replicas": replicas,
            "series": series,
            "events": events,
            "totals": {
                "replicas": len(replicas),
                "up": up,
                "requests": total_requests,
                "rps": round(total_rps, 2),
                "p50_ms": _ms(p50_all),
                "p99_ms": _ms(p99_all),
                "in_flight": in_flight,
                "restarts": cluster.restarts_total,
                "table": kind,
                # Equal on two balancers exactly when they route every key alike.
                "table_fingerprint": fingerprint,
            },
        }


_READ = (b"GET", b"HEAD")


def _refuse(request: LocalRequest) -> bytes | None:
    """A 405 (with Allow) for anything but GET and HEAD: the page changes nothing."""
    head = request.head
    if head.method in _READ:
        return None
    return method_not_allowed(head.method, head.target, _READ)


def _response(request: LocalRequest, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n" % (
        HTTPStatus.OK.phrase.encode(),
        content_type,
        len(body),
        _SECURITY,
        extra,
    )
    # HEAD: the same head (Content-Length included), no body. The client connection cuts a
    # HEAD answer to its head too; doing it here keeps the handler right on its own.
    return head if request.head.method == b"HEAD" else head + body
