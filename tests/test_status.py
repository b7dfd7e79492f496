"""The status page: its sampler's arithmetic, /status.json through a running fastlb under load
and across a replica's death, and the page itself in a real headless Chromium.

The browser test drives Chromium over the DevTools protocol with `websocket-client` (a dev
extra): it is pure Python with no dependencies and a blocking API, which suits a synchronous
test better than `websockets`' asyncio-first one. Its screenshot is kept at
test-artifacts/status.png for a person to look at.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import websocket

from fastlb.control.cluster import Cluster
from fastlb.observe.status import Sampler, quantile
from fastlb.proxy.upstream import Upstream
from tests.conftest import (
    PY,
    ROOT,
    Fastlb,
    Processes,
    alive,
    free_port,
    http_get,
    load_in_background,
    read_response,
    replica_children,
    static_config,
    wait_for,
    wait_gone,
    wait_port,
)

StartFastlb = Callable[[str], Fastlb]
CONFIG = '[proxy]\nlisten = "127.0.0.1:{port}"\n'
NAMES = {"Server1", "Server2", "Server3"}
CHROMIUM = "/usr/bin/chromium"
ARTIFACT = ROOT / "test-artifacts" / "status.png"


def status_json(lb: Fastlb) -> dict[str, Any]:
    status, headers, body = lb.get("/status.json")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    document: dict[str, Any] = json.loads(body)
    return document


def poll_json(
    lb: Fastlb, until: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = status_json(lb)
        if until(document):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; last: {json.dumps(document)[:2000]}")
        time.sleep(0.2)


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in document["replicas"]}


# ------------------------------------------------------------------------- arithmetic
def test_quantile_interpolates_within_the_bucket() -> None:
    bounds = (0.01, 0.1)
    assert quantile(0.5, bounds, (0, 0, 0)) is None
    assert quantile(0.5, bounds, (10, 0, 0)) == pytest.approx(0.005)  # halfway into (0, 10 ms]
    assert quantile(0.99, bounds, (10, 0, 0)) == pytest.approx(0.0099)
    assert quantile(0.5, bounds, (0, 10, 0)) == pytest.approx(0.055)  # halfway into (10, 100]
    assert quantile(0.5, bounds, (50, 50, 0)) == pytest.approx(0.01)
    assert quantile(0.99, bounds, (50, 50, 0)) == pytest.approx(0.01 + 0.09 * 49 / 50)
    # Above every bound: the highest bound is all that is known.
    assert quantile(0.5, bounds, (0, 0, 10)) == pytest.approx(0.1)
    assert quantile(0.99, bounds, (98, 0, 2)) == pytest.approx(0.1)


class _Member:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream: Upstream | None = upstream


class _Cluster:
    """What the sampler reads of a Cluster: members by name, each with its upstream."""

    def __init__(self) -> None:
        self.members: dict[str, _Member] = {}


def _traffic(up: Upstream, requests: int, seconds: float) -> None:
    up.requests += requests
    for _ in range(requests):
        up.duration_counts[0 if seconds <= up.duration_bounds[0] else 1] += 1


def test_sampler_rates_windows_replacement_and_removal() -> None:
    fake = _Cluster()
    a = Upstream("A", "127.0.0.1", 1, duration_bounds=(0.01, 0.1))
    fake.members["A"] = _Member(a)
    sampler = Sampler(cast(Cluster, fake), interval=1.0, history=301, window=10.0)
    sampler.sample(at=1000.0, mono=0.0)
    assert sampler.window_counts("A") is None  # one sample: nothing to difference yet
    _traffic(a, 50, 0.005)
    sampler.sample(at=1001.0, mono=1.0)
    assert sampler.samples[-1].rates == {"A": 50.0}
    assert sampler.window_counts("A") == ((0.01, 0.1), (50, 0, 0))

    # Replaced under the same name: the new upstream inherits the counters, the rate goes on.
    b = Upstream("A", "127.0.0.1", 2, duration_bounds=(0.01, 0.1))
    b.inherit(a)
    fake.members["A"].upstream = b
    _traffic(b, 40, 0.05)
    sampler.sample(at=1002.0, mono=2.0)
    assert sampler.samples[-1].rates == {"A": 40.0}
    assert sampler.window_counts("A") == ((0.01, 0.1), (50, 40, 0))

    # Eleven quiet seconds later the window holds none of that traffic.
    for i in range(3, 14):
        sampler.sample(at=1000.0 + i, mono=float(i))
    assert sampler.samples[-1].rates == {"A": 0.0}
    assert sampler.window_counts("A") == ((0.01, 0.1), (0, 0, 0))

    # Removed, then a new replica under the same name: counters restart, no negative rate,
    # and the window starts after the reset.
    del fake.members["A"]
    sampler.sample(at=1014.0, mono=14.0)
    assert sampler.samples[-1].rates == {}
    assert sampler.window_counts("A") is None
    fresh = Upstream("A", "127.0.0.1", 3, duration_bounds=(0.01, 0.1))
    fake.members["A"] = _Member(fresh)
    _traffic(fresh, 5, 0.005)
    sampler.sample(at=1015.0, mono=15.0)
    assert sampler.samples[-1].rates == {}
    _traffic(fresh, 7, 0.005)
    sampler.sample(at=1016.0, mono=16.0)
    assert sampler.samples[-1].rates == {"A": 7.0}
    assert sampler.window_counts("A") == ((0.01, 0.1), (7, 0, 0))

    # History is bounded.
    for i in range(17, 400):
        sampler.sample(at=1000.0 + i, mono=float(i))
    assert len(sampler.samples) == 301


# ------------------------------------------------------------------- through fastlb
def test_percentiles_resolve_a_one_millisecond_replica(
    start_fastlb: StartFastlb, procs: Processes
) -> None:
    # With buckets from 5 ms (Prometheus' defaults), a 1 ms replica read p50 2.50 ms and p99
    # 4.95 ms: the first bucket's interpolation. The default buckets start at 100 µs now.
    port = free_port()
    replica = procs.spawn(
        [PY, "-m", "replica", "--name", "S1", "--port", str(port), "--latency-ms", "1"]
    )
    wait_port(port, 10.0, replica)
    lb = start_fastlb(static_config(0, [("S1", port)]).replace(":0", ":{port}"))
    wait_for(lambda: http_get(lb.port, "/healthz")[0] == 200, 10, "S1 up")
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        for i in range(300):
            sock.sendall(b"GET /home?%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            read_response(sock, buf)
    document = poll_json(lb, lambda d: by_name(d)["S1"]["p50_ms"] is not None, 5, "p50")
    row = by_name(document)["S1"]
    # fastlb measures from the request head to the response's end: at least the replica's 1 ms.
    assert 1.0 <= row["p50_ms"] < 2.0 and row["p50_ms"] <= row["p99_ms"] <= 10.0, row
    # The page's footnote no longer apologises for coarse buckets.
    assert b"bucket" not in lb.get("/status")[2]


def test_status_json_under_load_and_across_a_replica_death(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb(CONFIG)
    thread, results = load_in_background(lb.port, 4.0, concurrency=8)

    def busy(document: dict[str, Any]) -> bool:
        replicas = document["replicas"]
        return len(replicas) == 3 and all(
            (r["rps"] or 0) > 0 and r["p50_ms"] is not None for r in replicas
        )

    try:
        during = poll_json(lb, busy, 3.8, "rates and percentiles for every replica")
    finally:
        thread.join()
    (load,) = results
    assert load.failures == []

    replicas = by_name(during)
    assert set(replicas) == NAMES
    for r in replicas.values():
        assert r["state"] == "up"
        assert r["rps"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= 10_000
        assert r["window_requests"] > 0
        assert r["requests"] > 0 and r["restarts"] == 0 and r["in_flight"] >= 0
        assert r["address"].startswith("127.0.0.1:")
    assert sum(r["share_pct"] for r in replicas.values()) == pytest.approx(100, abs=0.1)
    totals = during["totals"]
    assert (totals["replicas"], totals["up"], totals["restarts"]) == (3, 3, 0)
    assert totals["rps"] == pytest.approx(sum(r["rps"] for r in replicas.values()), abs=0.05)
    assert totals["p50_ms"] is not None and totals["p50_ms"] <= totals["p99_ms"]
    sampler = during["sampler"]
    assert (sampler["interval_s"], sampler["percentile_window_s"], sampler["history_s"]) == (
        1.0, 10.0, 300,
    )
    series = during["series"]
    assert set(series) == NAMES | {"t"}
    assert len(series["t"]) >= 2 and series["t"] == sorted(series["t"])
    for name in NAMES:
        assert len(series[name]) == len(series["t"])
        assert max(v or 0 for v in series[name]) > 0
    started = {e["replica"] for e in during["events"] if e["kind"] == "started"}
    assert started == NAMES

    # Once a sample is taken after the load, the rates add up to the counters: integrating
    # each replica's series over time gives its request count.
    after = poll_json(lb, lambda d: d["totals"]["rps"] == 0, 3.5, "a quiet sample after the load")
    for name, r in by_name(after).items():
        t, rates = after["series"]["t"], after["series"][name]
        integral = sum((rates[i] or 0) * (t[i] - t[i - 1]) for i in range(1, len(t)))
        assert integral == pytest.approx(r["requests"], rel=0.02, abs=3), name
    assert load.ok <= after["totals"]["requests"] <= load.ok + 20  # + any retried attempts

    # Kill one replica: it is replaced under its own name and its counters continue.
    pid = replica_children(lb.proc.pid)[0]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    victim = cmdline[cmdline.index(b"--name") + 1].decode()
    before = by_name(after)[victim]["requests"]
    os.kill(pid, signal.SIGKILL)

    def healed(document: dict[str, Any]) -> bool:
        kinds = {e["kind"] for e in document["events"] if e["replica"] == victim}
        return {"died", "replaced"} <= kinds and by_name(document)[victim]["state"] == "up"

    document = poll_json(lb, healed, 15.0, f"died and replaced events for {victim}")
    replicas = by_name(document)
    assert set(replicas) == NAMES
    assert replicas[victim]["restarts"] == 1 and document["totals"]["restarts"] == 1
    assert replicas[victim]["requests"] >= before
    events = document["events"]
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    kinds = [e["kind"] for e in events if e["replica"] == victim]
    assert kinds.index("replaced") < kinds.index("died")  # newest first
    assert set(events[0]) == {"at", "kind", "replica", "detail"}


def test_page_methods_and_self_containment(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb(CONFIG)
    status, headers, body = lb.get("/status")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    # Nothing loads from anywhere: the policy forbids it and the page asks for nothing.
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "connect-src 'self'" in headers["content-security-policy"]
    page = body.decode()
    assert "<script>" in page and "<style>" in page
    for reference in ("<script src", "<link", "@import", "url(", "src=", "href="):
        assert reference not in page, reference
    assert 'fetch("status.json"' in page

    status, headers, body = http_get(lb.port, "/status.json", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 100
    status, _, body = http_get(lb.port, "/status", method="HEAD")
    assert (status, body) == (200, b"")

    for method, path in (("POST", "/status"), ("DELETE", "/status.json"), ("PUT", "/status")):
        status, headers, body = http_get(lb.port, path, method=method)
        assert status == 405, (method, path)
        assert headers["allow"] == "GET, HEAD"
        assert json.loads(body)["status"] == "failure"
    # The connection-level behaviour is unchanged: the page still answers afterwards.
    assert lb.get("/status.json")[0] == 200


# ------------------------------------------------------------------ in a real browser
class DevTools:
    """A minimal Chrome DevTools Protocol client: one page target, calls answered in order."""

    def __init__(self, url: str) -> None:
        # No Origin header: Chromium refuses DevTools websockets from origins it was not told
        # to allow (--remote-allow-origins), and a client that sends none is not a web page.
        self.ws = websocket.create_connection(url, timeout=15, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:  # anything else is an event nobody subscribed to
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def page_target(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    """The websocket URL of Chromium's first page, once its DevTools endpoint answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode} before DevTools answered")
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as resp:
                targets = json.load(resp)
            for target in targets:
                if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                    return str(target["webSocketDebuggerUrl"])
        time.sleep(0.1)
    raise AssertionError(f"chromium's DevTools did not answer on port {port} within {timeout} s")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Chromium in its own process group; killed with it, by pid, whatever happens."""
    port = free_port()
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
        f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
        "--window-size=1280,900", "about:blank",
    ]
    # Chromium keeps its singleton socket in a directory of its own under TMPDIR and removes
    # it only on a clean exit: in a TMPDIR of ours, removed below, it does not stay in /tmp
    # after the kill. A short path, not under the profile: a unix socket's path must fit in
    # 108 bytes, and Chromium aborts when it does not.
    tmp = Path(tempfile.mkdtemp(prefix="fastlb-chromium-"))
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)},
    )
    try:
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
        # A helper that left the group (none should) is found by its profile path.
        marker = str(profile).encode()
        strays = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError, ValueError):
                if marker in cmdline.read_bytes():
                    strays.append(int(cmdline.parent.name))
        for pid in wait_gone(strays, 2.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


READ_TABLE = """JSON.stringify(Array.from(
  document.querySelectorAll('#replicas tbody tr[data-replica]')).map(tr => ({
    name: tr.dataset.replica,
    state: tr.querySelector('.state').textContent,
    rps: tr.querySelector('.rps').textContent,
    p50: tr.querySelector('.p50').textContent,
    p99: tr.querySelector('.p99').textContent,
    share: tr.querySelector('.share').textContent,
    requests: tr.querySelector('.requests').textContent,
  })))"""


def number(text: str) -> float:
    return float(text.replace(",", "").replace("\u202f", "").replace("%", ""))


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_the_page_in_headless_chromium(start_fastlb: StartFastlb, tmp_path: Path) -> None:
    lb = start_fastlb(CONFIG)
    # The load lasts as long as the browser's part does (bounded at 60 s): a fixed span ended
    # before Chromium's slow start under a loaded CI machine had let it read its two tables,
    # and a replica's request count then stood still between them.
    done = threading.Event()
    thread, results = load_in_background(lb.port, 60.0, stop=done, concurrency=4)
    try:
        with chromium(tmp_path / "chromium-profile") as (proc, port):
            devtools = DevTools(page_target(port, proc))
            try:
                devtools.call("Page.navigate", url=f"http://127.0.0.1:{lb.port}/status")

                def updates() -> int:
                    return int(devtools.evaluate("Number(document.body?.dataset.updates ?? 0)"))

                def wait_updates(count: int, timeout: float) -> None:
                    deadline = time.monotonic() + timeout
                    while updates() < count:
                        assert time.monotonic() < deadline, f"fewer than {count} refreshes"
                        time.sleep(0.1)

                wait_updates(3, 15.0)
                first = {r["name"]: r for r in json.loads(devtools.evaluate(READ_TABLE))}
                seen = updates()
                wait_updates(seen + 2, 5.0)
                second = {r["name"]: r for r in json.loads(devtools.evaluate(READ_TABLE))}

                text = devtools.evaluate("document.body.innerText")
                assert all(name in text for name in NAMES), text
                assert set(first) == set(second) == NAMES
                for name in NAMES:
                    a, b = first[name], second[name]
                    assert b["state"] == "up"
                    assert number(b["requests"]) > number(a["requests"]), (a, b)
                    assert number(b["rps"]) > 0 and number(b["p50"]) > 0, b
                assert [first[n]["requests"] for n in sorted(NAMES)] != [
                    second[n]["requests"] for n in sorted(NAMES)
                ]
                assert sum(number(second[n]["share"]) for n in NAMES) == pytest.approx(100, abs=0.5)
                assert devtools.evaluate("document.getElementById('conn').textContent") == "live"
                # One line per replica in the chart, and the startup events in the log.
                lines = devtools.evaluate(
                    "Array.from(document.querySelectorAll('#chart path')).map(p => p.dataset.replica)"
                )
                assert sorted(lines) == sorted(NAMES)
                kinds = devtools.evaluate(
                    "Array.from(document.querySelectorAll('#events tbody tr')).map(r => r.dataset.kind)"
                )
                assert kinds.count("started") == 3
                # The only thing the page ever fetched is status.json, from where it came from.
                fetched = devtools.evaluate(
                    "performance.getEntriesByType('resource').map(e => e.name)"
                )
                assert fetched and {u.split("?")[0] for u in fetched} == {
                    f"http://127.0.0.1:{lb.port}/status.json"
                }

                height = int(devtools.evaluate("document.documentElement.scrollHeight"))
                devtools.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=1280, height=min(max(height, 600), 2400), deviceScaleFactor=1,
                    mobile=False,
                )
                wait_updates(updates() + 1, 5.0)  # one refresh laid out at that size
                shot = devtools.call("Page.captureScreenshot", format="png")
                png = base64.b64decode(shot["data"])
                assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
                ARTIFACT.parent.mkdir(exist_ok=True)
                ARTIFACT.write_bytes(png)
                shutil.copyfile(ARTIFACT, tmp_path / "status.png")
            finally:
                devtools.close()
        assert not alive(proc.pid)
    finally:
        done.set()
        thread.join()
    (load,) = results
    assert load.failures == []
