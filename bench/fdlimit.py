"""At the descriptor limit: 1,500 clients against a proxy allowed 1,024 descriptors.

    python -m bench.fdlimit [--clients 1500] [--nofile 1024] [--hold 5] [--json PATH]

For fastlb (compiled, `make compile`) and HAProxy in turn, each started fresh under
`prlimit --nofile=N:N` (soft and hard, so neither can lift it) in front of the bench's three
nginx backends (bench/peers.py):

1. `--clients` keep-alive connections are opened at once, and each sends one GET;
2. for `--hold` seconds the harness reads what each was answered (a 200, another status, a
   reset or close, or nothing yet: it waits in the backlog), while a normal client sends a GET
   on a fresh connection every 100 ms (how many got a 200 is counted: a proxy that keeps its
   reserve keeps serving the connections it holds and takes new ones as others leave);
3. the connections held are asked a second GET each (they must still be served);
4. every client closes; a new client's GET must be answered within 5 s (recovery).

It prints, for each proxy: clients answered 200, refused or reset, still waiting; the normal
client's 200s and failures; second GETs answered; recovery; and from fastlb's log, the lines
that say it could not accept or that a replica went down (there must be none of those), and
its /metrics listener counters. HAProxy's maxconn is derived from the same limit the way the
bench always sizes it (bench/peers.haproxy_maxconn: (limit - 64) / 2).

Loopback only; every process is stopped by pid (bench/proc.py) however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import select
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.peers import ProxySpec, StartError, proxy_specs, raise_fd_limit, start_backends
from bench.proc import ProcessRegistry

GET = b"GET /fdlimit HTTP/1.1\r\nHost: bench\r\n\r\n"
PROXIES = ("fastlb-httptools", "haproxy")


@dataclass
class Outcome:
    proxy: str
    clients: int
    answered: int = 0  # first GET answered 200
    other_status: dict[str, int] = field(default_factory=dict)
    closed: int = 0  # reset or closed by the proxy without an answer
    waiting: int = 0  # no answer within --hold (in the backlog, or held unanswered)
    second_ok: int = 0  # of the answered ones, a second GET on the same connection answered
    normal_ok: int = 0  # the normal client's fresh-connection GETs answered 200
    normal_failed: int = 0
    recovered: bool = False  # a new client was served after every client closed
    log_cannot_accept: int = 0  # fastlb: "cannot accept clients" lines
    log_replica_down: int = 0  # fastlb: a replica logged down (must be 0)
    metrics: dict[str, float] = field(default_factory=dict)


def _status(buf: bytes) -> int | None:
    """The status of a complete response head in buf, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    parts = buf[:end].split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _one_get(port: int, timeout: float = 1.0) -> int | None:
    """A GET on a fresh connection: its status, or None (refused, reset, no answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            buf = b""
            while (status := _status(buf)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            return status
    except OSError:
        return None


def _read_all(socks: dict[int, socket.socket], hold: float, normal: tuple[int, Outcome]) -> dict[
    int, int
]:
    """Read each socket's first answer for `hold` s: fd -> status (0: closed unanswered).
    Meanwhile the normal client GETs every 100 ms."""
    port, out = normal
    bufs: dict[int, bytes] = dict.fromkeys(socks, b"")
    result: dict[int, int] = {}
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + hold
    next_normal = time.monotonic()
    while time.monotonic() < deadline:
        for fd, _ in poller.poll(0.05):
            try:
                chunk = socks[fd].recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                result[fd] = 0
                poller.unregister(fd)
                continue
            bufs[fd] += chunk
            status = _status(bufs[fd])
            if status is not None:
                result[fd] = status
                poller.unregister(fd)
        if time.monotonic() >= next_normal:
            next_normal += 0.1
            if _one_get(port) == 200:
                out.normal_ok += 1
            else:
                out.normal_failed += 1
    poller.close()
    return result


def _metrics(port: int) -> dict[str, float]:
    wanted = (
        "fastlb_accepted_connections_total",
        "fastlb_accept_pauses_total",
        "fastlb_accept_deferred_total",
        "fastlb_max_connections",
        "fastlb_heartbeats_skipped_total",
        "fastlb_client_connections",
    )
    found: dict[str, float] = {}
    url = f"http://127.0.0.1:{port}/metrics"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                found[name] = float(value)
    return found


def limited(spec: ProxySpec, nofile: int) -> ProxySpec:
    """The proxy run under `prlimit --nofile=N:N`. HAProxy's maxconn is set to what it derives
    itself from that limit, (N - 64) / 2 (the bench's usual floor of 512 needs more
    descriptors than N = 1024 allows, and HAProxy then refuses to start)."""
    prlimit = shutil.which("prlimit") or "prlimit"

    def build(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
        argv, conf, name = spec.build(prefix, port, backends)
        if spec.name == "haproxy":
            conf = re.sub(r"maxconn\s+\d+", f"maxconn {(nofile - 64) // 2}", conf)
        return [prlimit, f"--nofile={nofile}:{nofile}", "--", *argv], conf, name

    return ProxySpec(spec.name, build, spec.env)


def run_one(
    reg: ProcessRegistry, workdir: Path, spec: ProxySpec, opts: argparse.Namespace
) -> Outcome:
    backends = start_backends(reg, workdir / "backends", cpu=None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # HAProxy's maxconn is sized from the limit it is started under (ours, at build time).
    resource.setrlimit(resource.RLIMIT_NOFILE, (opts.nofile, hard))
    try:
        managed, port = limited(spec, opts.nofile).start(
            reg, workdir / spec.name, backends, cpu=None, timeout=30.0
        )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    out = Outcome(spec.name, opts.clients)
    socks: dict[int, socket.socket] = {}
    try:
        for _ in range(opts.clients):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            socks[sock.fileno()] = sock
        time.sleep(0.5)  # the handshakes complete (into the proxy's backlog if need be)
        for sock in socks.values():
            with contextlib.suppress(OSError):
                sock.send(GET)
        first = _read_all(socks, opts.hold, (port, out))
        for status in first.values():
            if status == 200:
                out.answered += 1
            elif status == 0:
                out.closed += 1
            else:
                out.other_status[str(status)] = out.other_status.get(str(status), 0) + 1
        out.waiting = opts.clients - len(first)
        held = {fd: socks[fd] for fd, status in first.items() if status == 200}
        for sock in held.values():
            with contextlib.suppress(OSError):
                sock.send(GET)
        second = _read_all(held, 3.0, (port, out))
        out.second_ok = sum(1 for status in second.values() if status == 200)
    finally:
        for sock in socks.values():
            sock.close()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not out.recovered:
        out.recovered = _one_get(port) == 200
        time.sleep(0.1)
    if spec.name.startswith("fastlb"):
        # Read once the clients left: while it is full, the scrape itself waits its turn.
        out.metrics = _metrics(port)
    reg.stop(managed)
    reg.stop(backends.managed)
    text = managed.log_path.read_text(errors="replace")
    out.log_cannot_accept = text.count("cannot accept clients")
    down = [line for line in text.splitlines() if line.endswith(" down: heartbeats failed")]
    out.log_replica_down = len(down)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--clients", type=int, default=1500)
    ap.add_argument("--nofile", type=int, default=1024, help="the proxies' RLIMIT_NOFILE")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the clients are held")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--json", type=Path, help="write the outcomes to this file")
    opts = ap.parse_args(argv)
    if raise_fd_limit() < opts.clients + 256:
        print(f"bench.fdlimit: this process cannot open {opts.clients} sockets", file=sys.stderr)
        return 2
    specs = proxy_specs()
    outcomes: list[Outcome] = []
    with ProcessRegistry() as reg, tempfile.TemporaryDirectory(prefix="fastlb-fdlimit-") as tmp:
        for name in opts.proxies.split(","):
            try:
                outcomes.append(run_one(reg, Path(tmp) / name, specs[name], opts))
            except StartError as exc:
                print(f"{name}: could not start: {exc}", file=sys.stderr)
                return 1
    print(
        f"{opts.clients} clients, each proxy under RLIMIT_NOFILE {opts.nofile}, "
        f"held {opts.hold:g} s; a normal client GETs on a fresh connection every 100 ms"
    )
    cols = (
        "proxy", "answered", "closed", "waiting", "other", "second GET ok", "normal ok/failed",
        "recovered", "cannot-accept lines", "replica down",
    )
    print(" | ".join(cols))
    for o in outcomes:
        print(
            " | ".join(
                str(x)
                for x in (
                    o.proxy, o.answered, o.closed, o.waiting, o.other_status or "-",
                    f"{o.second_ok}/{o.answered}", f"{o.normal_ok}/{o.normal_failed}",
                    o.recovered, o.log_cannot_accept, o.log_replica_down,
                )
            )
        )
    for o in outcomes:
        if o.metrics:
            print(f"{o.proxy} /metrics: " + ", ".join(f"{k} {v:g}" for k, v in o.metrics.items()))
    if opts.json is not None:
        opts.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
