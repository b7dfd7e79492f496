"""Replicas SIGKILLed under keep-alive load: how many requests fail.

    python -m bench.kill [--connections 64] [--seconds 30] [--interval 5] [--timeout 2]

Starts fastlb as its own process on a free loopback port with three local demo replicas, drives
keep-alive `GET /home` at it with wrk (`--connections` connections, wrk's `--timeout`), and
SIGKILLs one replica child every `--interval` s, round robin (the children are found in /proc,
as tests/conftest.py's replica_children does). Every request is an idempotent GET, so the target
is no failure at all: a request whose replica died before answering goes to another one.

It reports the requests wrk completed, the non-2xx answers by status (a wrk lua script counts
them), wrk's socket errors (connect, read, write, timeout), the kills made, and fastlb's own
counters from /metrics (responses by replica and code, retries, backend failures). Bounded in
time (`--seconds` plus start and stop), loopback only; fastlb, which takes its replicas with
it, is stopped by pid however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "BENCH_KILL_JSON "

#: Counts the non-2xx answers by status and prints them with wrk's totals. Defining
#: response() costs wrk a lua call per response; the status table stays tiny.
LUA = r"""
statuses = {}
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local merged = {}
   for _, thread in ipairs(threads) do
      local s = thread:get("statuses")
      for code, n in pairs(s) do
         merged[code] = (merged[code] or 0) + n
      end
   end
   local parts = {}
   for code, n in pairs(merged) do
      table.insert(parts, string.format('"%d":%d', code, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_KILL_JSON {"requests":%d,"duration_us":%d,"statuses":{%s},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, table.concat(parts, ","),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(99), latency.max))
end
"""


@dataclass
class KillResult:
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    replicas_after: int = 0

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx: non-2xx answers and socket errors of any kind."""
        return sum(self.statuses.values()) + sum(self.errors.values()) - self.errors.get(
            "status", 0
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def replica_children(pid: int) -> list[int]:
    """Children of `pid` that are replica processes (not the table-building worker)."""
    found = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if b"replica" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                found.append(child)
    return found


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fastlb exited with {proc.returncode} before serving")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/home", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"fastlb did not serve /home on port {port} within {timeout:g} s")


_SAMPLE = re.compile(r'^(fastlb_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$', re.M)


def scrape(port: int) -> dict[str, float]:
    """fastlb's counters from /metrics that say what failed: responses by replica and code
    (non-200 only), retries, backend failures, connection failures."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        labels = labels or ""
        wanted = (
            (name == "fastlb_requests_total" and 'code="200"' not in labels)
            or name.startswith(("fastlb_retries", "fastlb_backend_failures"))
            or (name == "fastlb_replicas" and 'state="healthy"' in labels)
        )
        if wanted:
            found[name + labels] = float(value)
    return found


def killer(
    pid: int, interval: float, stop: threading.Event, kills: list[int]
) -> None:
    """SIGKILL one replica child every `interval` s, round robin over their order in /proc."""
    n = 0
    while not stop.wait(interval):
        replicas = replica_children(pid)
        if not replicas:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(replicas[n % len(replicas)], signal.SIGKILL)
            kills.append(replicas[n % len(replicas)])
        n += 1


def run(
    connections: int, seconds: int, interval: float, timeout: float, threads: int
) -> KillResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench.kill needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="fastlb-kill-") as tmp:
        port = free_port()
        config = Path(tmp) / "lb.toml"
        # pool_size above the connection count: a kill must not be helped by a small pool.
        config.write_text(
            f'[proxy]\nlisten = "127.0.0.1:{port}"\npool_size = {max(64, connections * 2)}\n'
        )
        script = Path(tmp) / "kill.lua"
        script.write_text(LUA)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastlb", "--config", str(config)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "fastlb.log", "wb"),  # noqa: SIM115 (closed with tmp)
        )
        stop = threading.Event()
        kills: list[int] = []
        thread = threading.Thread(target=killer, args=(proc.pid, interval, stop, kills))
        try:
            wait_serving(port, proc)
            argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
            argv += [f"--timeout={max(1, round(timeout))}s", "-s", str(script)]
            argv += [f"http://127.0.0.1:{port}/home"]
            thread.start()
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=seconds + 30, check=False
            )
            stop.set()
            thread.join()
            time.sleep(1.0)  # let the last replacement come up before counting replicas
            result = KillResult(kills=len(kills))
            for line in out.stdout.splitlines():
                if line.startswith(MARKER):
                    data = json.loads(line[len(MARKER) :])
                    result.requests = data["requests"]
                    result.seconds = data["duration_us"] / 1e6
                    result.statuses = {int(k): v for k, v in data["statuses"].items()}
                    result.errors = {k: v for k, v in data["errors"].items() if v}
                    result.p99_ms = data["p99_us"] / 1e3
                    result.max_ms = data["max_us"] / 1e3
                    break
            else:
                raise RuntimeError(f"no result line from wrk: {out.stdout}\n{out.stderr}")
            result.metrics = scrape(port)
            result.replicas_after = len(replica_children(proc.pid))
            return result
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log = (Path(tmp) / "fastlb.log").read_text(errors="replace")
            keep = os.environ.get("BENCH_KILL_LOG")
            if keep:
                Path(keep).write_text(log)
            tracebacks = log.count("Traceback")
            if tracebacks:
                print(f"fastlb logged {tracebacks} tracebacks; the last lines:", file=sys.stderr)
                print("\n".join(log.splitlines()[-30:]), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--timeout", type=float, default=2.0, help="wrk's request timeout, s")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args(argv)
    result = run(args.connections, args.seconds, args.interval, args.timeout, args.threads)
    rps = result.requests / result.seconds if result.seconds else 0.0
    print(
        f"{args.connections} connections, {result.seconds:.1f} s: {result.requests} requests "
        f"({rps:,.0f}/s), {result.kills} kills, p99 {result.p99_ms:.1f} ms, "
        f"max {result.max_ms:.0f} ms"
    )
    print(f"non-2xx by status: {result.statuses or 'none'}")
    print(f"socket errors: {result.errors or 'none'}")
    print(f"failed requests: {result.failed}")
    print(f"replica processes after: {result.replicas_after}")
    print("fastlb /metrics:")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name} {value:g}")
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
