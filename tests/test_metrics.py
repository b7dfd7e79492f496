"""GET /metrics: every family, values that agree with the traffic, a real Prometheus scraping it,
and a dashboard that only charts what fastlb exports."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from fastlb.app import Balancer
from fastlb.config import Config, ProxyConfig
from fastlb.observe.metrics import Metrics
from tests.conftest import ROOT, Fastlb, free_port, http_get, run_load

StartFastlb = Callable[[str], Fastlb]

#: Three local replicas, Server1..Server3 (the default), on a free port.
CONFIG = '[proxy]\nlisten = "127.0.0.1:{port}"\n'
REPLICAS = {"Server1", "Server2", "Server3"}
PROMETHEUS = "/usr/bin/prometheus"

#: Every family fastlb exports (process_* are ProcessCollector's), by the name the text parser gives them (counters without
#: `_total`), and their type.
FAMILIES = {
    "fastlb_requests": "counter",
    "fastlb_request_duration_seconds": "histogram",
    "fastlb_requests_in_flight": "gauge",
    "fastlb_replica_up": "gauge",
    "fastlb_replicas": "gauge",
    "fastlb_replica_restarts": "counter",
    "fastlb_heartbeat_failures": "counter",
    "fastlb_retries": "counter",
    "fastlb_tunnels_open": "gauge",
    "fastlb_tunnels": "counter",
    "fastlb_tunnel_bytes": "counter",
    "fastlb_table_share": "gauge",
    "fastlb_backend_connections": "gauge",
    "fastlb_client_connections": "gauge",
    "fastlb_backend_failures": "counter",
    "fastlb_client_requests": "counter",
    "fastlb_refused_requests": "counter",
    "fastlb_accepted_connections": "counter",
    "fastlb_accept_pauses": "counter",
    "fastlb_accept_deferred": "counter",
    "fastlb_tls_handshake_failures": "counter",
    "fastlb_max_connections": "gauge",
    "fastlb_listen_queue": "gauge",
    "fastlb_dropped_writes": "counter",
    "fastlb_heartbeats_skipped": "counter",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


def scrape(port: int) -> dict[str, Metric]:
    status, headers, body = http_get(port, "/metrics")
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def values(family: Metric, sample: str, **fixed: str) -> dict[tuple[str, ...], float]:
    """{label values other than `fixed`: value} for the samples named `sample` that match."""
    found: dict[tuple[str, ...], float] = {}
    for s in family.samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in fixed.items()):
            rest = tuple(v for k, v in sorted(s.labels.items()) if k not in fixed)
            found[rest] = s.value
    return found


def by_replica(family: Metric, sample: str, **fixed: str) -> dict[str, float]:
    return {k[0]: v for k, v in values(family, sample, **fixed).items()}


def test_every_family_is_exported_with_values_that_match_the_traffic(
    start_fastlb: StartFastlb,
) -> None:
    lb = start_fastlb(CONFIG)
    result = run_load(lb.port, total=600, concurrency=10)
    assert result.failures == [] and set(result.served) == REPLICAS, result
    # A path the replicas do not serve: fastlb answers the 400 itself (replica="none").
    assert lb.get("/nope")[0] == 400
    families = scrape(lb.port)

    for name, kind in FAMILIES.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, (name, families[name].type)
        assert len(families[name].documentation) > 20, f"{name} needs a help text"

    requests = families["fastlb_requests"]
    assert by_replica(requests, "fastlb_requests_total", code="200") == result.served
    assert values(requests, "fastlb_requests_total", replica="none") == {("400",): 1.0}

    duration = families["fastlb_request_duration_seconds"]
    for replica, served in result.served.items():
        buckets = values(duration, "fastlb_request_duration_seconds_bucket", replica=replica)
        counts = [v for _, v in sorted(buckets.items(), key=lambda kv: float(kv[0][0]))]
        assert list(buckets)[-1] == ("+Inf",) and len(counts) == 17  # 16 bounds and +Inf
        assert counts == sorted(counts), "buckets must be cumulative"
        assert counts[-1] == served
        assert by_replica(duration, "fastlb_request_duration_seconds_count")[replica] == served
        total = by_replica(duration, "fastlb_request_duration_seconds_sum")[replica]
        assert 0 < total < served  # every one of these took well under a second

    everyone = dict.fromkeys(REPLICAS, 0.0)
    # The load is over and the scrape is fastlb's own: nothing is in flight.
    assert by_replica(families["fastlb_requests_in_flight"], "fastlb_requests_in_flight") == everyone
    assert by_replica(families["fastlb_replica_up"], "fastlb_replica_up") == dict.fromkeys(REPLICAS, 1.0)
    assert by_replica(families["fastlb_replicas"], "fastlb_replicas") == {
        "desired": 3, "healthy": 3, "starting": 0, "draining": 0, "down": 0, "disabled": 0,
    }
    assert by_replica(families["fastlb_replica_restarts"], "fastlb_replica_restarts_total") == everyone
    heartbeats = by_replica(families["fastlb_heartbeat_failures"], "fastlb_heartbeat_failures_total")
    assert set(heartbeats) == REPLICAS and all(v >= 0 for v in heartbeats.values())
    retries = values(families["fastlb_retries"], "fastlb_retries_total")
    assert list(retries) == [()] and retries[()] >= 0

    shares = by_replica(families["fastlb_table_share"], "fastlb_table_share")
    assert set(shares) == REPLICAS and sum(shares.values()) == pytest.approx(1.0)
    assert all(0.3 < s < 0.37 for s in shares.values()), shares  # Maglev: even within 1%

    connections = families["fastlb_backend_connections"]
    assert by_replica(connections, "fastlb_backend_connections", state="active") == everyone
    idle = by_replica(connections, "fastlb_backend_connections", state="idle")
    assert set(idle) == REPLICAS and all(0 <= n <= 64 for n in idle.values())
    assert sum(idle.values()) >= 1  # keep-alive connections went back to the pool
    clients = values(families["fastlb_client_connections"], "fastlb_client_connections")[()]
    assert clients >= 1  # at least the scrape's own

    # The listener: run_load's connections (and the scrape's) were accepted, none waited,
    # nothing ran short; max_connections derived from ulimit -n (at least 474 at 1024).
    def one(name: str, sample: str | None = None) -> float:
        return values(families[name], sample or name)[()]

    assert one("fastlb_accepted_connections", "fastlb_accepted_connections_total") >= 11
    assert one("fastlb_accept_pauses", "fastlb_accept_pauses_total") == 0
    assert one("fastlb_accept_deferred", "fastlb_accept_deferred_total") == 0
    assert one("fastlb_max_connections") >= 474
    assert one("fastlb_listen_queue") == 0
    assert one("fastlb_heartbeats_skipped", "fastlb_heartbeats_skipped_total") == 0
    assert one("fastlb_dropped_writes", "fastlb_dropped_writes_total") >= 0

    assert values(families["process_resident_memory_bytes"], "process_resident_memory_bytes")[()] > 1e6
    assert values(families["process_cpu_seconds"], "process_cpu_seconds_total")[()] > 0
    assert values(families["process_open_fds"], "process_open_fds")[()] > 3


def test_head_and_post(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb(CONFIG)
    status, headers, body = http_get(lb.port, "/metrics", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert json.loads(body)["status"] == "failure"
    status, headers, body = http_get(lb.port, "/metrics", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) > 1000
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    # The 405 left the connection usable: the same fastlb still serves the page.
    assert "fastlb_requests" in scrape(lb.port)


#: A collector's output as (sample name, sorted labels), one per sample.
SampleKeys = list[tuple[str, tuple[tuple[str, str], ...]]]


def sample_keys(metrics: Metrics) -> SampleKeys:
    """What the collector yields, as (sample name, labels): its output's size and shape."""
    return [
        (s.name, tuple(sorted(s.labels.items())))
        for family in metrics.collector.collect()
        for s in family.samples
    ]


def served_ok(balancer: Balancer) -> int:
    """200s the replicas sent, from the counters the collector reads."""
    upstreams = [m.upstream for m in balancer.cluster.members.values()]
    return sum(u.responses.get(200, 0) for u in upstreams if u is not None)


def test_scrape_output_does_not_grow_with_requests() -> None:
    """Time is not asserted (it would be flaky); the collector's output is: the same samples
    after 5000 more requests, only their values changed."""

    async def scenario() -> tuple[SampleKeys, SampleKeys]:
        balancer = Balancer(Config(proxy=ProxyConfig(port=0)))
        await balancer.start()
        try:
            assert balancer.server is not None
            port = balancer.server.address[1]
            metrics = next(o for o in balancer.observers if isinstance(o, Metrics))
            # Warm up until every replica has answered a 200: the (replica, code) series exist.
            warm = await asyncio.to_thread(run_load, port, total=300, concurrency=10)
            assert warm.failures == [] and set(warm.served) == REPLICAS, warm
            before = sample_keys(metrics)
            served_before = served_ok(balancer)
            load = await asyncio.to_thread(run_load, port, total=5000, concurrency=20)
            assert load.failures == [] and load.ok == 5000, load.failures[:5]
            after = sample_keys(metrics)
            assert served_ok(balancer) - served_before == 5000  # the counters did move
            return before, after
        finally:
            await balancer.stop()

    before, after = uvloop.run(scenario())
    assert len(after) == len(before), set(after) ^ set(before)
    assert after == before
    # Per replica: one requests_total per code seen, 17 buckets + sum + count, and the gauges.
    assert len(before) < 150


# --------------------------------------------------------------------- a real Prometheus
def prometheus_query(port: int, query: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        payload = json.load(resp)
    assert payload["status"] == "success", payload
    result: list[dict[str, object]] = payload["data"]["result"]
    return result


def scalar(sample: dict[str, object]) -> float:
    value = sample["value"]
    assert isinstance(value, list)
    return float(value[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """Start /usr/bin/prometheus with conf/prometheus.yml pointed at a fastlb port; yields
    the starter, which returns Prometheus' port. Killed by pid whatever happens."""
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} is not installed (apt-get install prometheus; CI does)")
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "prometheus.log"

    def start(fastlb_port: int) -> int:
        shipped = (ROOT / "conf" / "prometheus.yml").read_text()
        assert shipped.count('"127.0.0.1:5000"') == 1
        config = tmp_path / "prometheus.yml"
        config.write_text(shipped.replace('"127.0.0.1:5000"', f'"127.0.0.1:{fastlb_port}"'))
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return port
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after 20 s: {log.read_text()[-2000:]}")

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_prometheus_sees_what_the_replicas_served(
    start_fastlb: StartFastlb, prometheus: Callable[[int], int]
) -> None:
    lb = start_fastlb(CONFIG)
    port = prometheus(lb.port)
    result = run_load(lb.port, total=3000, concurrency=20)
    assert result.failures == [] and set(result.served) == REPLICAS, result.failures[:5]
    load_done = time.time()

    # Wait for a scrape that started after the last response: its counters hold everything.
    deadline = time.monotonic() + 15
    while True:
        last = prometheus_query(port, 'timestamp(fastlb_client_connections{job="fastlb"})')
        if last and scalar(last[0]) > load_done:
            break
        assert time.monotonic() < deadline, f"no scrape after the load: {last}"
        time.sleep(0.2)

    up = prometheus_query(port, 'up{job="fastlb"}')
    assert [scalar(s) for s in up] == [1.0]
    counts = prometheus_query(port, 'sum by (replica) (fastlb_requests_total{code="200"})')
    seen: dict[str, int] = {}
    for sample in counts:
        metric = sample["metric"]
        assert isinstance(metric, dict)
        seen[metric["replica"]] = int(scalar(sample))
    assert seen == result.served
    total = prometheus_query(port, "sum(fastlb_request_duration_seconds_count)")
    assert int(scalar(total[0])) == 3000
    # Every dashboard query is valid PromQL (prometheus_query asserts status success).
    dashboard = json.loads((ROOT / "conf" / "grafana-dashboard.json").read_text())
    for expr in dashboard_exprs(dashboard):
        prometheus_query(port, expr.replace("$__rate_interval", "1m").replace("$__range", "5m"))


# ------------------------------------------------------------------- the Grafana dashboard
#: PromQL words that are not metric names.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (no full parser: enough for dashboards)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"(?<![\w:])\d[\w.]*", "", expr)  # numbers, durations
    names: set[str] = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word = match.group()
        if word in _KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function (an aggregation's `by (...)` is gone already)
        names.add(word)
    return names


def exported_names() -> set[str]:
    """Every series name fastlb's /metrics can carry, from its registry's families."""
    metrics = Metrics(Balancer(Config()))  # never started: the families, without samples
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def dashboard_exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, replica) (rate(a_bucket{code!~"2.."}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert metric_names("sum(rate(x_total[5m])) by (replica) / on (replica) group_left y") == {
        "x_total", "y",
    }
    assert metric_names('process_resident_memory_bytes{job="fastlb"} / 2^30 offset 1m') == {
        "process_resident_memory_bytes"
    }


def test_dashboard_charts_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "conf" / "grafana-dashboard.json").read_text())
    exprs = list(dashboard_exprs(dashboard))
    assert len(exprs) >= 10
    exported = exported_names()
    assert {"fastlb_requests_total", "fastlb_request_duration_seconds_bucket"} <= exported
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} reads {names - exported}, which fastlb does not export"
        used |= names
    # What the dashboard promises to show.
    for name in (
        "fastlb_requests_total",
        "fastlb_request_duration_seconds_bucket",
        "fastlb_requests_in_flight",
        "fastlb_replica_up",
        "fastlb_replica_restarts_total",
        "fastlb_table_share",
        "fastlb_retries_total",
    ):
        assert name in used, f"the dashboard does not chart {name}"
