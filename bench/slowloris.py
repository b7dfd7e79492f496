"""Slowloris: what 1,000 hostile slow connections do to a normal client, fastlb next to HAProxy.

    python -m bench.slowloris [--rounds 3] [--connections 1000] [--seconds 10] [--window 70]
                              [--json PATH] [--quick]

For each round, each proxy (fastlb-httptools, compiled as `make compile` built it, and
HAProxy; bench/peers.py starts both, in the order bench/run.py's `round_order` gives: fastlb,
haproxy; haproxy, fastlb; ...) is started fresh in front of three demo replicas
(`python -m replica`, named b1..b3), then:

1. wrk (64 keep-alive connections, `--seconds`, GET /home) with no attack: the baseline;
2. the attack opens `--connections` connections to the proxy, a quarter of each kind:
   - trickled-head: a request head sent one byte a second, never finished;
   - slow-body: a POST head with Content-Length: 1000000, its body one byte a second;
   - slow-reader: pipelined GETs of the replica's largest answer (a 7-day /neo feed) on a
     socket with a small SO_RCVBUF, read one byte a second;
   - idle: connect, send nothing;
3. once they are all open, wrk again, the same way: the normal client under attack;
4. the attack connections are watched until `--window` s after the attack began, then
   closed by us. A connection the proxy closed is counted with the seconds it lived and the
   status it was answered with (408, 504, ...; none). The close is seen from our side (FIN or
   RST read, a send refused) or from the proxy's: its socket of the connection, in
   /proc/net/tcp, left ESTABLISHED (a slow reader cannot read a FIN behind the data it has
   not read yet), polled once a second.

Timeouts: fastlb runs with its defaults (fastlb/config.py: header_timeout 10 s,
backend_timeout 30 s, idle_timeout 60 s, connect_timeout 2 s); HAProxy with the bench's
conf/haproxy.cfg.tmpl, whose `timeout http-request 10s`, `timeout server 30s`,
`timeout client 30s` and `timeout connect 2s` already match, and `timeout http-keep-alive`
set to 60s (the template has 300s). Both spread the normal client over the three replicas:
fastlb by its default routing key (request_id, random without the header), HAProxy by
`balance roundrobin` (the template's `balance uri` would send every /home to one replica).

CPUs as bench/run.py pins them: the proxy on CPU 0; wrk, the replicas and the attacking
thread on CPU 1. Every process is stopped by pid (bench/proc.py) however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import run
from bench.peers import (
    BACKEND_NAMES,
    REPO_ROOT,
    Backends,
    ProxySpec,
    StartError,
    find_binary,
    free_ports,
    pin,
    proxy_specs,
    raise_fd_limit,
    wait_http_ok,
)
from bench.proc import Managed, ProcessRegistry, tree_pids
from bench.wrk import PATHS_LUA, WrkError, WrkResult, parse_wrk_output, wrk_argv

__all__ = [
    "KINDS",
    "AttackConn",
    "KindSummary",
    "Measurement",
    "format_report",
    "main",
    "parse_args",
    "split_attack",
    "summarize_kind",
]

PROXIES = ("fastlb-httptools", "haproxy")
KINDS = ("trickled-head", "slow-body", "slow-reader", "idle")
READY_PATH = "/home"  # the demo replica answers 200 here (and 404 on /bench/ready)
# The replica's largest answer: the 7-day /neo feed with the most objects in its dataset
# (99,199 bytes; found by asking replica.api.Api for every 7-day window).
READER_TARGET = "/neo?start_date=2200-09-10&end_date=2200-09-17"
READER_PIPELINE = 4  # ~400 KB of answers per slow reader: more than the kernel buffers hold
READER_RCVBUF = 2048  # the kernel doubles it and keeps a floor of about 2.3 KB
SLOW_BODY_LENGTH = 1_000_000
CONNECT_TIMEOUT = 5.0
HEAD_KEEP = 64  # bytes of each answer kept: enough for its status line
TRICKLE_HEAD = (
    b"GET /home HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench.slowloris\r\nX-Slowloris: "
)
SLOW_BODY_HEAD = (
    b"POST /home HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench.slowloris\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: %d\r\n\r\n" % SLOW_BODY_LENGTH
)
READER_REQUEST = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench.slowloris\r\n\r\n"
    % READER_TARGET.encode("ascii")
)
# wrk with paths.lua's done() (its JSON line, which bench/wrk.py parses) but not its distinct
# /bench/N paths, which the demo replica answers with 404: init and request unset, wrk sends
# the URL's own request, prebuilt once.
HOME_LUA = f'dofile("{PATHS_LUA}")\ninit = nil\nrequest = nil\n'
# The proxy's side of a connection in these states (/proc/net/tcp's hex codes) means it closed
# it: FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, LAST_ACK, CLOSING. Not ESTABLISHED is not enough:
# a connection waiting in a full accept queue is SYN_RECV there (or, with syncookies, absent)
# while our side is connected; a reset shows on our side, as an error of the next read.
PROXY_CLOSED_STATES = frozenset({"04", "05", "06", "07", "09", "0B"})


def _log(msg: str) -> None:
    print(f"slowloris: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    connections: int
    seconds: int
    window: float
    warmup: int
    wrk_connections: int
    json_path: Path | None
    keep_tmp: bool
    run_opts: run.Options  # bench/run.py's: pinning, interpreter, start timeout


def parse_args(argv: Sequence[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m bench.slowloris",
        description="A normal client's throughput and latency under 1,000 slowloris "
        "connections, fastlb next to HAProxy in the same run.",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians over them (default 3)")
    ap.add_argument(
        "--connections", type=int, default=1000, help="attack connections, all kinds (default 1000)"
    )
    ap.add_argument("--seconds", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument(
        "--window",
        type=float,
        default=70.0,
        help="seconds the attack connections are watched from the attack's start (default 70: "
        "past fastlb's idle_timeout of 60 s, when it closes slow readers)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured wrk seconds first (0: none)")
    ap.add_argument(
        "--wrk-connections", type=int, default=64, help="the normal client's connections (64)"
    )
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also save as JSON")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="the suite's size: 40 attack connections, 2 s wrk runs, 1 round, a 14 s window",
    )
    ap.add_argument("--proxy-cpu", default="0", help="CPU list for the proxy (taskset -c)")
    ap.add_argument("--client-cpu", default="1", help="CPU list for wrk, replicas, the attack")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.rounds, ns.connections, ns.seconds, ns.window, ns.warmup = 1, 40, 2, 14.0, 0
    if ns.rounds < 1 or ns.seconds < 1 or ns.connections < len(KINDS) or ns.warmup < 0:
        ap.error(f"--rounds and --seconds must be >= 1, --connections >= {len(KINDS)}")
    if not ns.window > ns.seconds:
        ap.error("--window must be longer than --seconds (wrk runs inside it)")
    run_argv = ["--proxy-cpu", ns.proxy_cpu, "--client-cpu", ns.client_cpu]
    run_argv += ["--duration", str(ns.seconds), "--python", sys.executable]
    if ns.no_pin:
        run_argv.append("--no-pin")
    return Options(
        rounds=ns.rounds,
        connections=ns.connections,
        seconds=ns.seconds,
        window=ns.window,
        warmup=ns.warmup,
        wrk_connections=ns.wrk_connections,
        json_path=ns.json,
        keep_tmp=ns.keep_tmp,
        run_opts=run.parse_args(run_argv),
    )


def split_attack(total: int) -> dict[str, int]:
    """`total` connections over the kinds, as evenly as it divides (the first get the rest)."""
    base, rest = divmod(total, len(KINDS))
    return {kind: base + (i < rest) for i, kind in enumerate(KINDS)}


# ------------------------------------------------------------------------------ the attack


@dataclass(slots=True)
class AttackConn:
    """One attacking connection and what the proxy did with it."""

    kind: str
    connect_s: float | None = None  # when it connected, seconds from the attack's start
    error: str | None = None  # why it did not connect
    local_port: int = 0
    sent: int = 0
    received: int = 0
    head: bytes = b""  # the first bytes of the proxy's answer
    closed_s: float | None = None  # seconds from connect to the proxy's close, if it closed
    how: str | None = None  # fin, reset, send-refused, proxy-side

    @property
    def status(self) -> str:
        """The answer's status code ("408"), or "none" when no status line came."""
        parts = self.head.split(b" ", 2)
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and len(parts[1]) >= 3:
            code = parts[1][:3]
            if code.isdigit():
                return code.decode("ascii")
        return "none"

    def closed(self, at: float, how: str) -> None:
        if self.closed_s is None and self.connect_s is not None:
            self.closed_s = max(0.0, at - self.connect_s)
            self.how = how


def tree_rss_kib(root: int) -> int:
    """Resident memory of a process and its descendants (KiB, /proc/PID/status VmRSS)."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def proxy_side_states(proxy_port: int, table: Path = Path("/proc/net/tcp")) -> dict[int, str]:
    """The TCP state (hex, as /proc/net/tcp has it: 01 = ESTABLISHED) of every socket whose
    local port is the proxy's, by its peer's port: the proxy's side of each connection."""
    states: dict[int, str] = {}
    try:
        text = table.read_text()
    except OSError:
        return states
    want = f":{proxy_port:04X}"
    for line in text.splitlines()[1:]:
        fields = line.split(None, 4)
        if len(fields) < 4 or not fields[1].endswith(want):
            continue
        states[int(fields[2].rsplit(":", 1)[1], 16)] = fields[3]
    return states


class Attack:
    """The four kinds of slow connections, run by an asyncio loop in a thread of its own (the
    main thread runs wrk meanwhile), each kind in its own task group, all bounded by `window`.
    """

    def __init__(
        self,
        port: int,
        plan: dict[str, int],
        window: float,
        cpu: str | None,
        proxy_pid: int | None = None,
    ) -> None:
        self.port = port
        self.proxy_pid = proxy_pid
        self.rss_peak_kib = 0  # the proxy's, sampled once a second during the window
        self.window = window
        self.cpu = cpu
        self.conns = [AttackConn(kind) for kind, n in plan.items() for _ in range(n)]
        self.ramped = threading.Event()  # every connection has connected (or failed to)
        self.error: BaseException | None = None
        self._attempted = 0
        self._socks: list[tuple[AttackConn, socket.socket]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="slowloris-attack", daemon=True)
        self.t0 = 0.0
        self._stop_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the attack to end; True once it has (or if it never started)."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """End the attack early (from another thread): its sockets are closed as it ends."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def _run(self) -> None:
        if self.cpu is not None:
            # Pid 0 is this thread only: the attack shares the client CPU, the harness does not.
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(0, {int(c) for c in self.cpu.split(",")})
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by the harness, never lost in a thread
            self.error = exc
        finally:
            self.ramped.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._task = asyncio.current_task()
        self.t0 = loop.time()
        self._stop_at = self.t0 + self.window
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_proxy_side())
                for kind in KINDS:
                    tg.create_task(self._kind(kind))
            self._finish()
        finally:
            for _, sock in self._socks:
                sock.close()

    async def _kind(self, kind: str) -> None:
        async with asyncio.TaskGroup() as tg:
            for conn in self.conns:
                if conn.kind == kind:
                    tg.create_task(self._one(conn))

    def _now(self) -> float:
        return time.monotonic() - self.t0 if self._loop is None else self._loop.time() - self.t0

    def _done_connecting(self) -> None:
        self._attempted += 1
        if self._attempted == len(self.conns):
            self.ramped.set()

    async def _one(self, conn: AttackConn) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._socks.append((conn, sock))
        if conn.kind == "slow-reader":
            # Before connect, so the window announced in the handshake is small already.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READER_RCVBUF)
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, ("127.0.0.1", self.port)), CONNECT_TIMEOUT
            )
            conn.connect_s = self._now()
            conn.local_port = sock.getsockname()[1]
            if conn.kind == "slow-body":
                await loop.sock_sendall(sock, SLOW_BODY_HEAD)
                conn.sent += len(SLOW_BODY_HEAD)
            elif conn.kind == "slow-reader":
                await loop.sock_sendall(sock, READER_REQUEST * READER_PIPELINE)
                conn.sent += len(READER_REQUEST) * READER_PIPELINE
        except (OSError, TimeoutError) as exc:
            if conn.connect_s is None:
                conn.error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            else:
                conn.closed(self._now(), "reset")
            self._done_connecting()
            return
        self._done_connecting()
        if conn.kind == "slow-reader":
            await self._read_slowly(sock, conn)
        else:
            await self._trickle(sock, conn, conn.kind != "idle")

    async def _trickle(self, sock: socket.socket, conn: AttackConn, send: bool) -> None:
        """Read whatever the proxy answers, at once; with `send`, one byte a second of an
        endless head (trickled-head) or body (slow-body), starting at a random point of the
        first second so that the connections do not all send in the same instant."""
        loop = asyncio.get_running_loop()
        head = conn.kind == "trickled-head"
        next_send = loop.time() + random.random()
        while conn.closed_s is None:
            now = loop.time()
            if now >= self._stop_at:
                return
            wait = min(next_send if send else math.inf, self._stop_at) - now
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), max(0.0, wait))
            except TimeoutError:
                data = None
            except OSError:
                conn.closed(self._now(), "reset")
                return
            if data == b"":
                conn.closed(self._now(), "fin")
                return
            if data:
                self._got(conn, data)
                continue
            if not send or loop.time() < next_send:
                continue
            byte = TRICKLE_HEAD[conn.sent : conn.sent + 1] if head else b""
            try:
                conn.sent += sock.send(byte or b"a")
            except BlockingIOError:
                pass
            except OSError:
                conn.closed(self._now(), "send-refused")
                return
            next_send += 1.0

    async def _read_slowly(self, sock: socket.socket, conn: AttackConn) -> None:
        """One byte a second, whatever is waiting."""
        loop = asyncio.get_running_loop()
        while conn.closed_s is None:
            left = self._stop_at - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(1.0, left))
            try:
                data = sock.recv(1)
            except BlockingIOError:
                continue
            except OSError:
                conn.closed(self._now(), "reset")
                return
            if data == b"":
                conn.closed(self._now(), "fin")
                return
            self._got(conn, data)

    @staticmethod
    def _got(conn: AttackConn, data: bytes) -> None:
        conn.received += len(data)
        if len(conn.head) < HEAD_KEEP:
            conn.head += data[: HEAD_KEEP - len(conn.head)]

    def _check_proxy_side(self) -> None:
        states = proxy_side_states(self.port)
        now = self._now()
        for conn in self.conns:
            open_here = conn.connect_s is not None and conn.closed_s is None
            if open_here and states.get(conn.local_port) in PROXY_CLOSED_STATES:
                conn.closed(now, "proxy-side")

    async def _watch_proxy_side(self) -> None:
        loop = asyncio.get_running_loop()
        while (left := self._stop_at - loop.time()) > 0:
            await asyncio.sleep(min(1.0, left))
            self._check_proxy_side()
            if self.proxy_pid is not None:
                self.rss_peak_kib = max(self.rss_peak_kib, tree_rss_kib(self.proxy_pid))

    def _finish(self) -> None:
        """At the window's end: the status line of answers not read yet (a slow reader has
        read a byte a second), then the proxy's side once more, before our sockets close."""
        for conn, sock in self._socks:
            if conn.connect_s is None or len(conn.head) >= HEAD_KEEP:
                continue
            with contextlib.suppress(OSError):
                data = sock.recv(HEAD_KEEP - len(conn.head))
                if data:
                    self._got(conn, data)
        self._check_proxy_side()


# ------------------------------------------------------------------------------ summaries


@dataclass(slots=True)
class KindSummary:
    """What the proxy did with one kind's connections in one measurement."""

    kind: str
    planned: int
    connected: int
    connect_errors: dict[str, int]
    closed: int  # by the proxy, within the window
    open_at_end: int  # still held by the proxy when the window ended
    closed_s: list[float]  # each closed connection's life, seconds, sorted
    statuses: dict[str, int]  # status answered ("none": no status line), connected ones
    how: dict[str, int]  # how the closes were seen
    received: int  # bytes read from the proxy, all connections

    @property
    def accounted(self) -> bool:
        """Every planned connection is either a connect error, closed, or open at the end."""
        errors = sum(self.connect_errors.values())
        return errors + self.connected == self.planned and self.closed + self.open_at_end == (
            self.connected
        )


def summarize_kind(kind: str, conns: Sequence[AttackConn]) -> KindSummary:
    mine = [c for c in conns if c.kind == kind]
    connected = [c for c in mine if c.connect_s is not None]
    closed = [c for c in connected if c.closed_s is not None]
    return KindSummary(
        kind=kind,
        planned=len(mine),
        connected=len(connected),
        connect_errors=dict(Counter(c.error or "?" for c in mine if c.connect_s is None)),
        closed=len(closed),
        open_at_end=len(connected) - len(closed),
        closed_s=sorted(round(c.closed_s, 2) for c in closed if c.closed_s is not None),
        statuses=dict(Counter(c.status for c in connected)),
        how=dict(Counter(c.how or "?" for c in closed)),
        received=sum(c.received for c in mine),
    )


@dataclass(slots=True)
class Measurement:
    """One proxy in one round: the baseline, the same client under attack, and the attack."""

    proxy: str
    round: int
    baseline: WrkResult | None = None
    attacked: WrkResult | None = None
    attack: list[KindSummary] = field(default_factory=list)
    ramp_s: float | None = None  # seconds until every attack connection had connected
    rss_base_kib: int = 0  # the proxy's resident memory after the baseline, before the attack
    rss_peak_kib: int = 0  # the most of it seen during the attack (sampled once a second)
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        def wrk_json(w: WrkResult | None) -> dict[str, Any] | None:
            if w is None:
                return None
            data = asdict(w)
            data["rps"] = w.rps
            return {
                k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()
            }

        return {
            "proxy": self.proxy,
            "round": self.round,
            "baseline": wrk_json(self.baseline),
            "attacked": wrk_json(self.attacked),
            "attack": [asdict(k) for k in self.attack],
            "ramp_s": self.ramp_s,
            "rss_base_kib": self.rss_base_kib,
            "rss_peak_kib": self.rss_peak_kib,
            "failure": self.failure,
        }


# ------------------------------------------------------------------------------ processes


def start_replicas(
    reg: ProcessRegistry, workdir: Path, *, cpu: str | None, timeout: float
) -> tuple[Backends, list[Managed]]:
    """Three demo replicas named as the bench's backends (b1..b3: ProxySpec.start checks
    that the answer came from one of those), each on a free port."""
    managed: list[Managed] = []
    ports = dict(zip(BACKEND_NAMES, free_ports(len(BACKEND_NAMES)), strict=True))
    for name, port in ports.items():
        argv = pin(cpu, [sys.executable, "-m", "replica", "--name", name, "--port", str(port)])
        managed.append(
            reg.start(f"replica-{name}", argv, workdir / f"replica-{name}.log", cwd=REPO_ROOT)
        )
    for m, port in zip(managed, ports.values(), strict=True):
        wait_http_ok(port, m, timeout, READY_PATH)
    return Backends(managed=managed[0], ports=ports, logs={}), managed


def largest_answer(port: int) -> int:
    """The size of READER_TARGET's answer, asked of a replica directly (for the header)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", READER_TARGET)
        return len(conn.getresponse().read())
    finally:
        conn.close()


def fastlb_config(conf: str) -> str:
    """bench/peers.py's fastlb config, routed by fastlb's default key (request_id: random
    without the header), so /home spreads over the replicas; every timeout left at default."""
    if 'key = "path"' not in conf:
        raise StartError('bench/peers.py fastlb_toml has no `key = "path"` to change')
    return conf.replace('key = "path"', 'key = "request_id"', 1)


def haproxy_config(conf: str) -> str:
    """conf/haproxy.cfg.tmpl with fastlb's idle_timeout and a spreading balance (docstring)."""
    for old, new in (
        ("timeout http-keep-alive 300s", "timeout http-keep-alive 60s"),
        ("balance uri\n    hash-type consistent\n", "balance roundrobin\n"),
    ):
        if old not in conf:
            raise StartError(f"conf/haproxy.cfg.tmpl has no `{old.strip()}` to change")
        conf = conf.replace(old, new, 1)
    return conf


def bench_spec(spec: ProxySpec) -> ProxySpec:
    """The bench's proxy with its generated config passed through the edits above."""
    edit = haproxy_config if spec.name == "haproxy" else fastlb_config
    inner = spec.build

    def build(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
        argv, conf, name = inner(prefix, port, backends)
        return argv, edit(conf), name

    return ProxySpec(spec.name, build, spec.env)


def run_wrk(reg: ProcessRegistry, opts: Options, url: str, seconds: int, log: Path) -> WrkResult:
    """bench/run.py's run_wrk with HOME_LUA as the script (run_wrk takes no script)."""
    script = log.parent / "home.lua"
    script.write_text(HOME_LUA)
    argv = wrk_argv(
        url,
        connections=opts.wrk_connections,
        duration_s=seconds,
        script=script,
        pin_cpu=opts.run_opts.client_cpu,
    )
    managed = reg.start("wrk", argv, log)
    try:
        code = managed.popen.wait(seconds + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish in {seconds + 30}s") from exc
    finally:
        reg.stop(managed)
    if code != 0:
        raise WrkError(f"wrk exited with {code}: {managed.log_tail()}")
    return parse_wrk_output(log.read_text(errors="replace"))


def measure(
    reg: ProcessRegistry,
    opts: Options,
    spec: ProxySpec,
    backends: Backends,
    workdir: Path,
    round_no: int,
) -> Measurement:
    result = Measurement(proxy=spec.name, round=round_no)
    try:
        managed, port = spec.start(
            reg,
            workdir,
            backends,
            cpu=opts.run_opts.proxy_cpu,
            timeout=opts.run_opts.start_timeout,
            ready_path=READY_PATH,
        )
    except StartError as exc:
        result.failure = f"start failed: {exc}"
        return result
    url = f"http://127.0.0.1:{port}{READY_PATH}"
    plan = split_attack(opts.connections)
    attack = Attack(port, plan, opts.window, opts.run_opts.client_cpu, managed.pid)
    try:
        if opts.warmup:
            run_wrk(reg, opts, url, opts.warmup, workdir / "wrk-warmup.log")
        result.baseline = run_wrk(reg, opts, url, opts.seconds, workdir / "wrk-baseline.log")
        result.rss_base_kib = tree_rss_kib(managed.pid)
        started = time.monotonic()
        attack.start()
        # The attack has the window to connect; wrk must still fit in it after the ramp.
        if attack.ramped.wait(max(1.0, opts.window - opts.seconds - 1)):
            result.ramp_s = time.monotonic() - started
        if attack.error is None:
            result.attacked = run_wrk(reg, opts, url, opts.seconds, workdir / "wrk-attack.log")
        if not attack.join(opts.window + 30):
            raise WrkError("the attack did not end within its window")
        if attack.error is not None:
            raise WrkError(f"the attack failed: {attack.error!r}")
        if not managed.alive():
            raise WrkError(f"{spec.name} exited during the attack: {managed.log_tail()}")
        result.attack = [summarize_kind(kind, attack.conns) for kind in KINDS]
        result.rss_peak_kib = attack.rss_peak_kib
    except (WrkError, OSError) as exc:
        result.failure = str(exc)
    finally:
        attack.cancel()
        attack.join(10)
        reg.stop(managed)
    return result


# ------------------------------------------------------------------------------ report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def _ok(ms: Sequence[Measurement], proxy: str) -> list[Measurement]:
    return [m for m in ms if m.proxy == proxy and m.failure is None]


def format_report(ms: Sequence[Measurement], opts: Options, header: Sequence[str]) -> str:
    """The plain-text tables: medians, each round, what happened to the attack connections."""
    lines = [*header, ""]
    lines.append(
        f"Normal client: medians over the rounds (wrk -c{opts.wrk_connections}, GET /home)"
    )
    cols = (
        f"{'proxy':<18}{'rounds':>7}  {'base req/s':>11}{'p50 ms':>8}{'p99 ms':>8}  "
        f"{'attack req/s':>13}{'p50 ms':>8}{'p99 ms':>8}  {'req/s a/b':>10}{'p99 a/b':>8}"
        f"  {'errors b/a':>10}"
    )
    lines += [cols, "-" * len(cols)]
    med: dict[str, dict[str, float]] = {}
    for proxy in PROXIES:
        ok = [m for m in _ok(ms, proxy) if m.baseline and m.attacked]
        b = [m.baseline for m in ok if m.baseline]
        a = [m.attacked for m in ok if m.attacked]
        row = {
            "b_rps": _median([w.rps for w in b]),
            "b_p50": _median([w.p50_ms for w in b]),
            "b_p99": _median([w.p99_ms for w in b]),
            "a_rps": _median([w.rps for w in a]),
            "a_p50": _median([w.p50_ms for w in a]),
            "a_p99": _median([w.p99_ms for w in a]),
        }
        med[proxy] = row
        errs = f"{sum(w.error_count for w in b)}/{sum(w.error_count for w in a)}"
        lines.append(
            f"{proxy:<18}{len(ok):>7}  {_fmt(row['b_rps'], 0):>11}{_fmt(row['b_p50']):>8}"
            f"{_fmt(row['b_p99']):>8}  {_fmt(row['a_rps'], 0):>13}{_fmt(row['a_p50']):>8}"
            f"{_fmt(row['a_p99']):>8}  {_fmt(row['a_rps'] / row['b_rps']):>10}"
            f"{_fmt(row['a_p99'] / row['b_p99']):>8}  {errs:>10}"
        )
    f, h = med[PROXIES[0]], med[PROXIES[1]]
    lines.append(
        f"{'fastlb / haproxy':<18}{'':>7}  {_fmt(f['b_rps'] / h['b_rps']):>11}"
        f"{_fmt(f['b_p50'] / h['b_p50']):>8}{_fmt(f['b_p99'] / h['b_p99']):>8}  "
        f"{_fmt(f['a_rps'] / h['a_rps']):>13}{_fmt(f['a_p50'] / h['a_p50']):>8}"
        f"{_fmt(f['a_p99'] / h['a_p99']):>8}"
    )
    lines += ["", "Normal client: each round (in the order run; b = no attack, a = under attack)"]
    cols = (
        f"{'round':>5}  {'proxy':<18}{'base req/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}  "
        f"{'attack req/s':>13}{'p50 ms':>8}{'p99 ms':>8}{'err':>6}{'ramp s':>8}"
        f"{'RSS MB base/peak':>18}  note"
    )
    lines += [cols, "-" * len(cols)]
    for m in ms:
        cells = []
        for w in (m.baseline, m.attacked):
            if w is None:
                cells.append(f"{'-':>11}{'-':>8}{'-':>8}{'-':>6}")
            else:
                cells.append(
                    f"{_fmt(w.rps, 0):>11}{_fmt(w.p50_ms):>8}{_fmt(w.p99_ms):>8}{w.error_count:>6}"
                )
        ramp = "-" if m.ramp_s is None else f"{m.ramp_s:.2f}"
        rss = f"{m.rss_base_kib / 1024:.0f}/{m.rss_peak_kib / 1024:.0f}" if m.rss_peak_kib else "-"
        lines.append(
            f"{m.round:>5}  {m.proxy:<18}{cells[0]}  {cells[1]:>35}{ramp:>8}{rss:>18}  "
            f"{m.failure or ''}"
        )
    lines += [
        "",
        f"Attack connections: closed = by the proxy within the {opts.window:g} s window, after "
        "how many seconds of life (min/median/max); status = what the proxy answered (none: "
        "no status line); open = still held when the window ended",
    ]
    cols = (
        f"{'proxy':<18}{'round':>6}  {'kind':<14}{'conns':>6}{'failed':>7}{'closed':>7}"
        f"{'open':>6}  {'closed after s':<20}{'status':<18}how"
    )
    lines += [cols, "-" * len(cols)]
    for proxy in PROXIES:
        ok = _ok(ms, proxy)
        for label, group in [(str(m.round), [m]) for m in ok] + [("all", ok)]:
            if label == "all" and len(ok) < 2:
                continue
            for kind in KINDS:
                ks = [k for m in group for k in m.attack if k.kind == kind]
                if not ks:
                    continue
                times = sorted(t for k in ks for t in k.closed_s)
                after = f"{times[0]:.1f}/{_median(times):.1f}/{times[-1]:.1f}" if times else "-"
                statuses: Counter[str] = Counter()
                how: Counter[str] = Counter()
                for k in ks:
                    statuses.update(k.statuses)
                    how.update(k.how)
                failed = sum(sum(k.connect_errors.values()) for k in ks)
                lines.append(
                    f"{proxy:<18}{label:>6}  {kind:<14}{sum(k.planned for k in ks):>6}"
                    f"{failed:>7}{sum(k.closed for k in ks):>7}"
                    f"{sum(k.open_at_end for k in ks):>6}  {after:<20}"
                    f"{_counts(dict(statuses)):<18}{_counts(dict(how))}"
                )
    return "\n".join(lines) + "\n"


def header_lines(opts: Options, vers: dict[str, str], started: str, answer: int) -> list[str]:
    ro = opts.run_opts
    plan = split_attack(opts.connections)
    pinning = (
        f"proxy on CPU {ro.proxy_cpu}; wrk, the replicas and the attacking thread on CPU "
        f"{ro.client_cpu}"
        if ro.proxy_cpu is not None
        else "not pinned"
    )
    return [
        f"Slowloris: a normal client under {opts.connections} slow connections, fastlb next to "
        f"HAProxy ({started})",
        f"- machine: {os.cpu_count()} CPUs; {pinning}",
        "- backends: 3 demo replicas (python -m replica, b1..b3); fastlb routes by request_id "
        "(random), HAProxy by roundrobin: both spread the normal client",
        f"- normal client: wrk -t1 -c{opts.wrk_connections} -d{opts.seconds}s --latency GET "
        f"/home, keep-alive; {opts.warmup} s unmeasured warmup, then the baseline (no attack), "
        "then the attack, then the same wrk under it; same proxy process, started fresh per round",
        "- attack, "
        + ", ".join(f"{n} {k}" for k, n in plan.items())
        + f", all opened before wrk starts, watched {opts.window:g} s, then closed by us:",
        "    trickled-head: `GET /home HTTP/1.1`, Host, User-Agent, `X-Slowloris: aaa…`, one "
        "byte a second, never finished",
        f"    slow-body: POST /home, Content-Length: {SLOW_BODY_LENGTH}, the body one byte a "
        "second",
        f"    slow-reader: {READER_PIPELINE} pipelined GET {READER_TARGET} ({answer:,} bytes "
        f"each, the replica's largest), SO_RCVBUF {READER_RCVBUF}, read one byte a second",
        "    idle: connect, send nothing",
        "- wrk under attack starts once every attack connection is open, so its run ends about "
        "when the trickled heads and idle connections reach the 10 s header timeout (their "
        "closes fall at its very end or just after it); RSS: the proxy's, after the baseline "
        "and the most seen during the attack (sampled once a second)",
        "- timeouts: fastlb's defaults (header_timeout 10 s, backend_timeout 30 s, idle_timeout "
        "60 s, connect_timeout 2 s); HAProxy `timeout http-request 10s`, `timeout server 30s`, "
        "`timeout client 30s`, `timeout http-keep-alive 60s`, `timeout connect 2s`",
        f"- rounds: {opts.rounds}, interleaved as bench/run.py does "
        "(fastlb, haproxy; haproxy, fastlb; ...)",
        "- versions: " + "; ".join(f"{k}: {v}" for k, v in vers.items()),
    ]


# ------------------------------------------------------------------------------ main


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM becomes an exception, so every `finally` runs and every process is stopped."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    for tool in ("wrk", "haproxy"):
        if find_binary(tool) is None:
            _log(f"{tool} not found: apt-get install wrk haproxy")
            return 2
    limit = raise_fd_limit()  # ours and, inherited, the proxies'
    need = opts.connections + 2 * opts.wrk_connections + 256
    if limit < need:
        _log(f"open-files limit {limit} is below the {need} the attack needs; raise ulimit -n")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    vers = run.versions(opts.run_opts)
    vers.pop("nginx", None)
    specs = proxy_specs(sys.executable)
    tmp = Path(tempfile.mkdtemp(prefix="fastlb-slowloris-"))
    ms: list[Measurement] = []
    answer = 0
    interrupted = False
    try:
        with ProcessRegistry() as reg:
            backends, _ = start_replicas(
                reg, tmp, cpu=opts.run_opts.client_cpu, timeout=opts.run_opts.start_timeout
            )
            answer = largest_answer(backends.ports[BACKEND_NAMES[0]])
            _log(f"replicas up: {backends.ports}; work dir {tmp}")
            total = opts.rounds * len(PROXIES)
            for round_no in range(1, opts.rounds + 1):
                for name in run.round_order(PROXIES, round_no):
                    tag = f"[{len(ms) + 1}/{total} round {round_no}] {name}"
                    workdir = tmp / f"{name}-r{round_no}"
                    m = measure(reg, opts, bench_spec(specs[name]), backends, workdir, round_no)
                    ms.append(m)
                    if m.failure:
                        _log(f"{tag}: FAILED ({m.failure})")
                    elif m.baseline and m.attacked:
                        _log(
                            f"{tag}: baseline {m.baseline.rps:,.0f} req/s p99 "
                            f"{m.baseline.p99_ms:.2f} ms; attacked {m.attacked.rps:,.0f} req/s "
                            f"p99 {m.attacked.p99_ms:.2f} ms; closed "
                            + ", ".join(f"{k.kind} {k.closed}/{k.connected}" for k in m.attack)
                        )
    except StartError as exc:
        _log(f"cannot start the replicas: {exc}")
        return 2
    except KeyboardInterrupt:
        _log("interrupted; all processes stopped; reporting the rounds done so far")
        interrupted = True
    finally:
        if opts.keep_tmp:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    header = header_lines(opts, vers, started, answer)
    report = format_report(ms, opts, header)
    if interrupted:
        report = "Interrupted: partial results.\n\n" + report
    sys.stdout.write(report)
    sys.stdout.flush()
    if opts.json_path is not None:
        data = {
            "header": header,
            "options": {
                "rounds": opts.rounds,
                "connections": opts.connections,
                "seconds": opts.seconds,
                "window": opts.window,
                "warmup": opts.warmup,
                "wrk_connections": opts.wrk_connections,
                "attack": split_attack(opts.connections),
                "proxy_cpu": opts.run_opts.proxy_cpu,
                "client_cpu": opts.run_opts.client_cpu,
            },
            "versions": vers,
            "measurements": [m.to_json() for m in ms],
        }
        opts.json_path.write_text(json.dumps(data, indent=1) + "\n")
    if interrupted:
        return 130
    if not any(m.failure is None for m in ms):
        return 2
    return 1 if any(m.failure for m in ms) else 0


if __name__ == "__main__":
    sys.exit(main())
