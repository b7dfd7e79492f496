"""Replicas SIGKILLed under keep-alive load: how many requests fail, fastlb next to HAProxy.

    python -m bench.kill [--proxy fastlb|haproxy|haproxy-retry-on|all] [--connections 64]
                         [--seconds 30] [--interval 5] [--timeout 2]

Drives keep-alive `GET /home` with wrk (`--connections` connections, wrk's `--timeout`) at a
proxy in front of three local demo replicas, and SIGKILLs one replica every `--interval` s,
round robin. Every request is an idempotent GET, so the target is no failure at all: a request
whose replica died before answering goes to another one.

- fastlb runs as its own process on a free loopback port and starts, watches and replaces its
  replicas itself (the children are found in /proc, as tests/conftest.py's replica_children
  does).
- HAProxy runs nothing of its own, so the bench plays the supervisor: it starts the three
  replicas, and restarts a killed one on the same port at once (as fastlb does on the exit
  event). HAProxy checks them as fastlb does (GET /heartbeat every 0.5 s, 0.3 s timeout, fall
  2, rise 2), marks one down on its first connection error (`observe layer4`, fastlb's passive
  suspicion), and sends a request whose connection failed elsewhere (`retries 3`, `option
  redispatch 1`). `haproxy` keeps HAProxy's default retry condition (a failed connect only);
  `haproxy-retry-on` adds `retry-on all-retryable-errors` (an empty or truncated answer, a
  timeout, a 5xx), HAProxy's strongest setting for idempotent requests.

It reports the requests wrk completed, the non-2xx answers by status (a wrk lua script counts
them), wrk's socket errors (connect, read, write, timeout), the kills made, the replicas
running after, and for fastlb its own counters from /metrics (responses by replica and code,
retries, backend failures). Bounded in time (`--seconds` plus start and stop), loopback only;
every process is stopped by pid however the run ends.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import find_binary, haproxy_maxconn, raise_fd_limit

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


def wait_ok(
    port: int,
    path: str,
    name: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
) -> None:
    """Poll GET `path` on `port` until a 200; fail at once if `proc` (the server) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before serving")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not serve {path} on port {port} within {timeout:g} s")


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


PROXIES = ("fastlb", "haproxy", "haproxy-retry-on")
REPLICA_NAMES = ("Server1", "Server2", "Server3")

#: HAProxy in front of the bench's replicas, checked as fastlb checks them (docstring).
HAPROXY_CFG = """\
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s
    timeout check 300ms
    http-reuse always
    retries 3
    option redispatch 1
{retry_on}
frontend kill_in
    bind 127.0.0.1:{port} backlog 4096
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /heartbeat
    default-server check inter 500ms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


def killer(
    kill_one: Callable[[int], int | None], interval: float, stop: threading.Event, kills: list[int]
) -> None:
    """Every `interval` s, `kill_one(n)` for n = 0, 1, ...; the pids it killed go to `kills`."""
    n = 0
    while not stop.wait(interval):
        pid = kill_one(n)
        if pid is not None:
            kills.append(pid)
        n += 1


def fastlb_kill_one(pid: int) -> Callable[[int], int | None]:
    """SIGKILL fastlb's n-th replica child (round robin over their order in /proc)."""

    def kill_one(n: int) -> int | None:
        replicas = replica_children(pid)
        if not replicas:
            return None
        victim = replicas[n % len(replicas)]
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    return kill_one


class Supervisor:
    """The three replicas behind HAProxy, each restarted on its own port as soon as it is
    killed: the part fastlb plays itself, played by the bench for a proxy that does not."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {name: free_port() for name in REPLICA_NAMES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        for name in REPLICA_NAMES:
            self._start(name)

    def _start(self, name: str) -> None:
        argv = [sys.executable, "-m", "replica", "--name", name, "--port", str(self.ports[name])]
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def kill_one(self, n: int) -> int | None:
        name = REPLICA_NAMES[n % len(REPLICA_NAMES)]
        with self.lock:
            proc = self.procs[name]
            proc.kill()
            proc.wait()
            self._start(name)
        return proc.pid

    def running(self) -> int:
        return sum(proc.poll() is None for proc in self.procs.values())

    def stop(self) -> None:
        with self.lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def haproxy_config(port: int, backends: dict[str, int], retry_on: bool) -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{p}" for name, p in backends.items())
    return HAPROXY_CFG.format(
        maxconn=haproxy_maxconn(),
        port=port,
        servers=servers,
        retry_on="    retry-on all-retryable-errors\n" if retry_on else "",
    )


def drive(
    port: int,
    kill_one: Callable[[int], int | None],
    tmp: Path,
    *,
    connections: int,
    seconds: int,
    interval: float,
    timeout: float,
    threads: int,
) -> KillResult:
    """wrk at the proxy on `port` while `kill_one` kills a replica every `interval` s."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench.kill needs wrk (apt-get install wrk)")
    script = tmp / "kill.lua"
    script.write_text(LUA)
    stop = threading.Event()
    kills: list[int] = []
    thread = threading.Thread(target=killer, args=(kill_one, interval, stop, kills))
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
    argv += [f"--timeout={max(1, round(timeout))}s", "-s", str(script)]
    argv += [f"http://127.0.0.1:{port}/home"]
    thread.start()
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    finally:
        stop.set()
        thread.join()
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
            return result
    raise RuntimeError(f"no result line from wrk: {out.stdout}\n{out.stderr}")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    connections: int, seconds: int, interval: float, timeout: float, threads: int
) -> KillResult:
    """fastlb, which starts, watches and replaces its three replicas itself."""
    with tempfile.TemporaryDirectory(prefix="fastlb-kill-") as tmp:
        port = free_port()
        config = Path(tmp) / "lb.toml"
        # pool_size above the connection count: a kill must not be helped by a small pool.
        config.write_text(
            f'[proxy]\nlisten = "127.0.0.1:{port}"\npool_size = {max(64, connections * 2)}\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastlb", "--config", str(config)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "fastlb.log", "wb"),  # noqa: SIM115 (closed with tmp)
        )
        try:
            wait_ok(port, "/home", "fastlb", proc)
            result = drive(
                port, fastlb_kill_one(proc.pid), Path(tmp), connections=connections,
                seconds=seconds, interval=interval, timeout=timeout, threads=threads,
            )
            # The last kill may fall at the very end: give its replacement the time to start
            # and pass `rise` heartbeats (seconds, not one, on a loaded machine) before counting.
            deadline = time.monotonic() + 5.0
            while True:
                result.metrics = scrape(port)
                result.replicas_after = len(replica_children(proc.pid))
                healthy = result.metrics.get('fastlb_replicas{state="healthy"}', 0)
                if (healthy >= 3 and result.replicas_after >= 3) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            return result
        finally:
            stop_process(proc)
            log = (Path(tmp) / "fastlb.log").read_text(errors="replace")
            keep = os.environ.get("BENCH_KILL_LOG")
            if keep:
                Path(keep).write_text(log)
            tracebacks = log.count("Traceback")
            if tracebacks:
                print(f"fastlb logged {tracebacks} tracebacks; the last lines:", file=sys.stderr)
                print("\n".join(log.splitlines()[-30:]), file=sys.stderr)


def run_haproxy(
    connections: int, seconds: int, interval: float, timeout: float, threads: int,
    *, retry_on: bool = False,
) -> KillResult:
    """HAProxy in front of replicas the bench supervises (docstring)."""
    binary = find_binary("haproxy")
    if binary is None:
        raise SystemExit("bench.kill --proxy haproxy needs haproxy (apt-get install haproxy)")
    with tempfile.TemporaryDirectory(prefix="fastlb-kill-") as tmp:
        supervisor = Supervisor(Path(tmp))
        proc: subprocess.Popen[bytes] | None = None
        try:
            port = free_port()
            config = Path(tmp) / "haproxy.cfg"
            config.write_text(haproxy_config(port, supervisor.ports, retry_on))
            for name, p in supervisor.ports.items():
                wait_ok(p, "/heartbeat", f"replica {name}", timeout=15.0)
            proc = subprocess.Popen(
                [binary, "-db", "-f", str(config)],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(Path(tmp) / "haproxy.log", "wb"),  # noqa: SIM115 (closed with tmp)
            )
            wait_ok(port, "/home", "haproxy", proc)
            time.sleep(1.5)  # every server past `rise` checks, as fastlb's are at start
            result = drive(
                port, supervisor.kill_one, Path(tmp), connections=connections, seconds=seconds,
                interval=interval, timeout=timeout, threads=threads,
            )
            result.replicas_after = supervisor.running()
            return result
        finally:
            if proc is not None:
                stop_process(proc)
            supervisor.stop()


def report(name: str, connections: int, result: KillResult) -> None:
    rps = result.requests / result.seconds if result.seconds else 0.0
    print(
        f"{name}: {connections} connections, {result.seconds:.1f} s: {result.requests} requests "
        f"({rps:,.0f}/s), {result.kills} kills, p99 {result.p99_ms:.1f} ms, "
        f"max {result.max_ms:.0f} ms"
    )
    print(f"  non-2xx by status: {result.statuses or 'none'}")
    print(f"  socket errors: {result.errors or 'none'}")
    print(f"  failed requests: {result.failed}")
    print(f"  replicas running after: {result.replicas_after}")
    if result.metrics:
        print("  fastlb /metrics:")
        for metric, value in sorted(result.metrics.items()):
            print(f"    {metric} {value:g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", choices=(*PROXIES, "all"), default="fastlb")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--timeout", type=float, default=2.0, help="wrk's request timeout, s")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args(argv)
    raise_fd_limit()
    names = PROXIES if args.proxy == "all" else (args.proxy,)
    failed = 0
    for name in names:
        opts = (args.connections, args.seconds, args.interval, args.timeout, args.threads)
        if name == "fastlb":
            result = run(*opts)
            failed += result.failed
        else:
            result = run_haproxy(*opts, retry_on=name == "haproxy-retry-on")
        report(name, args.connections, result)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
