"""Worker processes for [proxy] workers > 1: the main process's side (WorkerPool), and the
counter snapshots both sides share.

The layout (docs/architecture.md): the main process keeps the control plane (replicas,
heartbeats, healing, table builds, the admin socket and admin listener, reload) and does not
accept on the data port; N workers (`python -m fastlb.worker`, fastlb/worker.py) each listen
there with SO_REUSEPORT and run a ProxyServer. Workers are started with exec, not forked from
the running main process: a fork of a running uvloop carries its loop, its descriptors and
its replicas' pipes into the child, and the table worker is started the same way.

Messages, each one framed pickle (fastlb.control.tables.frame), main -> worker:
  ("start", Config, local paths)          first; the worker listens, then says "ready"
  ("route", generation, Table | None, [UpstreamSpec])   a route in place (None: table as before)
  ("up", [(name, up, weight)])            a health or weight change: the cheap channel
  ("config", Config)                      a reload
  ("reopen",)                             SIGHUP: open the access log file again
  ("stats", ask)                          counters wanted
  ("local", ask, bytes)                   the answer to a relayed admin request
  ("stop", grace)                         drain within grace seconds, then exit
worker -> main:
  ("ready", pid) | ("failed", why)        after "start"
  ("routed", generation)                  the route of that generation is the one in use
  ("suspect", name)                       the data path saw the replica refuse or reset
  ("stats", ask, snapshot)
  ("local", ask, path, LocalRequest)      an admin or observability request to answer

Why a pipe and pickles rather than shared memory: the route changes rarely (names, weights,
a reload) and is small once pickled (a Maglev table is its names and a 65,537-entry array),
so one write per worker per change costs far less than a seqlock read on every request would;
`up` flags change at heartbeat speed and travel as a few bytes. tests/test_workers.py measures
the time from a change to the last worker using it (`fastlb_worker_route_seconds`).

Counters: the main process's own Upstream and ProxyServer objects carry no traffic with
workers, so `refresh()` (at every scrape, and once a second for the status page and for the
drain's in-flight count) writes the sums of the workers' counters into them, and /metrics,
/status and `Cluster` read them exactly as with one process. A worker's counters are added to
a retired total when it exits, so sums do not go backwards on a restart; what it counted after
its last snapshot is lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from fastlb.config import Config
from fastlb.control.tables import _PACKAGE_ROOT, LENGTH_BYTES, frame
from fastlb.errors import FastlbError
from fastlb.http.head import RequestHead
from fastlb.proxy.client import LocalHandler, LocalRequest
from fastlb.proxy.upstream import Upstream
from fastlb.routing import Route

if TYPE_CHECKING:
    from fastlb.proxy.server import ProxyServer

log = logging.getLogger("fastlb.workers")

#: (name, host, port, weight, up) of one upstream of a route.
UpstreamSpec = tuple[str, str, int, int, bool]

#: How long the workers may take to listen at start, and to answer a counter request.
START_TIMEOUT: Final = 20.0
STATS_TIMEOUT: Final = 1.0
#: Counters are pulled this often between scrapes (the status page samples once a second).
REFRESH_EVERY: Final = 1.0
#: A worker that died is started again after this long, doubled (to RESTART_MAX) while it
#: keeps dying within RESTART_STABLE of starting: a worker that cannot start must not spin.
RESTART_DELAY: Final = 0.05
RESTART_MAX: Final = 5.0
RESTART_STABLE: Final = 5.0

#: ProxyServer counters summed over the workers (plain ints).
SERVER_COUNTERS: Final = (
    "accepted",
    "accept_pauses",
    "accept_errors",
    "tls_handshake_failures",
    "requests",
    "refused",
    "rejected",
    "retries",
    "over_cap",
    "tunnels",
    "tunnel_bytes_up",
    "tunnel_bytes_down",
)
#: And gauges: summed over the workers alive, not kept from those that exited.
SERVER_GAUGES: Final = ("tunnels_open", "clients", "waiting", "dropped")
UPSTREAM_COUNTERS: Final = ("requests", "failures", "retries", "connects", "connect_failures")


def snapshot(server: ProxyServer, upstreams: dict[str, Upstream]) -> dict[str, Any]:
    """A worker's counters, as plain data to pickle (read on its loop: consistent)."""
    values: dict[str, Any] = {name: getattr(server, name) for name in SERVER_COUNTERS}
    values["tunnels_open"] = server.tunnels_open
    values["clients"] = len(server.clients)
    values["waiting"] = server.waiting()
    values["dropped"] = server.outbox.dropped
    values["own_responses"] = dict(server.own_responses)
    values["max_connections"] = server.max_connections
    ups: dict[str, dict[str, Any]] = {}
    for name, up in upstreams.items():
        ups[name] = {
            **{key: getattr(up, key) for key in UPSTREAM_COUNTERS},
            "status": up.responses,
            "bounds": tuple(up.duration_bounds),
            "duration_counts": list(up.duration_counts),
            "duration_sum": up.duration_sum,
            "active": up.active,
            "idle": len(up.idle),
        }
    values["upstreams"] = ups
    return values


def local_request(relayed: Any) -> LocalRequest:
    """The LocalRequest a worker relayed as plain values (fastlb.worker.Worker._relay)."""
    fields, body, client_ip = relayed
    return LocalRequest(RequestHead(*fields), body, client_ip)


def _add(total: dict[str, Any], part: dict[str, Any], gauges: bool) -> None:
    """Add snapshot `part` into `total` (gauges too, or counters only)."""
    for name in SERVER_COUNTERS:
        total[name] = total.get(name, 0) + part[name]
    if gauges:
        for name in SERVER_GAUGES:
            total[name] = total.get(name, 0) + part[name]
    own = total.setdefault("own_responses", {})
    for status, n in part["own_responses"].items():
        own[status] = own.get(status, 0) + n
    ups = total.setdefault("upstreams", {})
    for name, up in part["upstreams"].items():
        into = ups.get(name)
        if into is None:
            into = ups[name] = {
                **dict.fromkeys(UPSTREAM_COUNTERS, 0),
                "status": {},
                "bounds": up["bounds"],
                "duration_counts": [0] * len(up["duration_counts"]),
                "duration_sum": 0.0,
                "active": 0,
                "idle": 0,
            }
        for key in UPSTREAM_COUNTERS:
            into[key] += up[key]
        for status, n in up["status"].items():
            into["status"][status] = into["status"].get(status, 0) + n
        if into["bounds"] == up["bounds"]:
            counts = into["duration_counts"]
            for bucket, n in enumerate(up["duration_counts"]):
                counts[bucket] += n
            into["duration_sum"] += up["duration_sum"]
        if gauges:
            into["active"] += up["active"]
            into["idle"] += up["idle"]


@dataclass
class WorkerProcess:
    """One worker slot: its process now, and what is known of it."""

    index: int
    process: asyncio.subprocess.Process | None = None
    pid: int = 0
    started: float = 0.0
    restarts: int = 0
    ready: asyncio.Future[None] | None = None
    last: dict[str, Any] | None = None  # its latest counter snapshot
    routed: int = 0  # the route generation it said it uses
    table_sent: object = None  # the Table object last sent to it (identity)
    reader: asyncio.Task[None] | None = None
    waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    def send(self, message: tuple[object, ...]) -> None:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            return
        with contextlib.suppress(OSError, RuntimeError):  # it is dying: its reader sees that
            process.stdin.write(frame(message))


class WorkerPool:
    """The main process's workers: started, told every change, restarted when one dies."""

    def __init__(
        self,
        config: Config,
        server: ProxyServer,
        local: dict[bytes, LocalHandler] | None,
        spawn: Callable[..., object] | None = None,
    ) -> None:
        self.config = config
        #: The main process's ProxyServer: never started (it listens nowhere), it holds the
        #: route the publisher sets, the on_suspect hook the cluster set, and the sums.
        self.server = server
        self.local = local or {}
        self.slots = [WorkerProcess(i) for i in range(config.proxy.workers)]
        self.route: Route[Upstream] | None = server.route
        self.generation = 0
        self._sent_at: dict[int, float] = {}
        #: Seconds from the last route change to the last worker using it.
        self.route_seconds = 0.0
        self._up_sent: list[tuple[str, bool, int]] | None = None
        self._asks = itertools.count(1)
        self._retired: dict[str, Any] = {}
        self._stopping = False
        self._started = False  # every worker listened once: from then on, deaths restart
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Gauges the main's own objects cannot hold (its server has no clients): the sums.
        self.clients = 0
        self.waiting = 0
        self.idle: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        host, port = self.config.proxy.host, self.config.proxy.port
        if port == 0:
            raise FastlbError(
                "[proxy] port = 0 cannot be shared by workers (each would get a port of its "
                "own): set a port, or workers = 1"
            )
        for slot in self.slots:
            await self._spawn(slot)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                for slot in self.slots:
                    assert slot.ready is not None
                    await slot.ready
        except TimeoutError:
            raise FastlbError(
                f"the workers did not listen on {host}:{port} within {START_TIMEOUT:g} s"
            ) from None
        self._started = True
        self._refresher = asyncio.ensure_future(self._refresh_loop())
        log.info(
            "%d workers listening on %s:%d (pids %s)",
            len(self.slots),
            host,
            port,
            ", ".join(str(s.pid) for s in self.slots),
        )

    async def _spawn(self, slot: WorkerProcess) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env["FASTLB_LOG_LEVEL"] = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fastlb.worker",
            str(os.getpid()),
            str(slot.index),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        slot.process = process
        slot.pid = process.pid
        slot.started = time.monotonic()
        slot.ready = asyncio.get_running_loop().create_future()
        slot.table_sent = None
        slot.routed = 0
        slot.send(("start", self.config, list(self.local)))
        self._send_route(slot)
        slot.reader = asyncio.ensure_future(self._read(slot, process))

    async def _read(self, slot: WorkerProcess, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(LENGTH_BYTES)
                message = pickle.loads(await stdout.readexactly(int.from_bytes(head, "big")))
                self._handle(slot, message)
        except (asyncio.IncompleteReadError, OSError):
            pass
        except Exception:  # unreadable: a worker out of step is replaced, not trusted
            log.exception("worker %d sent what cannot be read; replacing it", slot.index)
        with contextlib.suppress(ProcessLookupError):
            process.kill()  # one that closed its stdout but lingers is no use
        code = await process.wait()
        self._exited(slot, code)

    def _handle(self, slot: WorkerProcess, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "suspect":
            if self.server.on_suspect is not None:
                self.server.on_suspect(message[1])
        elif kind == "stats":
            slot.last = message[2]
            future = slot.waiting.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(message[2])
        elif kind == "routed":
            slot.routed = max(slot.routed, message[1])
            self._note_routed(message[1])
        elif kind == "local":
            task = asyncio.ensure_future(self._answer(slot, message[1], message[2], message[3]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "ready":
            if slot.ready is not None and not slot.ready.done():
                slot.ready.set_result(None)
        elif kind == "failed" and slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(FastlbError(message[1]))

    def _exited(self, slot: WorkerProcess, code: int) -> None:
        if slot.last is not None:
            _add(self._retired, slot.last, gauges=False)
            slot.last = None
        for future in slot.waiting.values():
            if not future.done():
                future.cancel()
        slot.waiting.clear()
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(FastlbError(f"worker {slot.index} exited ({code}) at start"))
            if not self._started:
                return  # the balancer's start fails with that reason
        if self._stopping:
            return
        lived = time.monotonic() - slot.started
        delay = RESTART_DELAY
        if lived < RESTART_STABLE:
            delay = min(RESTART_MAX, RESTART_DELAY * 2 ** min(slot.restarts, 10))
        slot.restarts += 1
        log.error(
            "worker %d (pid %d) exited (%s) after %.1f s; starting another in %g s",
            slot.index,
            slot.pid,
            f"signal {-code}" if code < 0 else f"status {code}",
            lived,
            delay,
        )
        task = asyncio.ensure_future(self._restart(slot, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, slot: WorkerProcess, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            await self._spawn(slot)
            assert slot.ready is not None
            async with asyncio.timeout(START_TIMEOUT):
                await slot.ready
        except (FastlbError, OSError, TimeoutError) as exc:
            # Its reader sees it exit and schedules the next try (a worker that did not
            # listen exits: "failed" is its last word); one that hangs is killed here.
            log.error("worker %d did not start again: %s", slot.index, exc)
            process = slot.process
            if isinstance(exc, TimeoutError) and process is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            if isinstance(exc, OSError):  # not even started: no reader will see an exit
                self._exited(slot, -1)
            return
        log.info("worker %d started again (pid %d)", slot.index, slot.pid)

    async def stop(self, grace: float) -> None:
        """SIGTERM for the group: every worker drains within `grace`, then is killed."""
        self._stopping = True
        if self._refresher is not None:
            self._refresher.cancel()
        for slot in self.slots:
            slot.send(("stop", grace))
        readers = [s.reader for s in self.slots if s.reader is not None]
        if readers:
            _, pending = await asyncio.wait(readers, timeout=grace + 2.0)
            for slot in self.slots:
                process = slot.process
                if process is not None and process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ what workers are told
    def route_set(self, route: Route[Upstream] | None) -> None:
        """The publisher put `route` in place: every worker gets it (the table only when it is
        not the one it has)."""
        self.route = route
        self.generation += 1
        self._sent_at[self.generation] = time.monotonic()
        for slot in self.slots:
            self._send_route(slot)
        self._up_sent = self._up_state()

    def _send_route(self, slot: WorkerProcess) -> None:
        route = self.route
        if route is None:
            slot.send(("route", self.generation, None, []))
            return
        table = route.table
        specs = [(u.name, u.host, u.port, u.weight, u.up) for u in route.upstreams]
        slot.send(("route", self.generation, None if table is slot.table_sent else table, specs))
        slot.table_sent = table

    def _note_routed(self, generation: int) -> None:
        sent = self._sent_at.get(generation)
        if sent is None:
            return
        live = [s for s in self.slots if s.ready is not None and s.ready.done()]
        if all(s.routed >= generation for s in live):
            self.route_seconds = time.monotonic() - sent
            for old in [g for g in self._sent_at if g <= generation]:
                del self._sent_at[old]

    def _up_state(self) -> list[tuple[str, bool, int]]:
        route = self.route
        return [] if route is None else [(u.name, u.up, u.weight) for u in route.upstreams]

    def marked(self) -> None:
        """The publisher set `up` flags (and weights): send them if any changed."""
        state = self._up_state()
        if state != self._up_sent:
            self._up_sent = state
            for slot in self.slots:
                slot.send(("up", state))

    def reopen_logs(self) -> None:
        """logrotate's SIGHUP: every worker opens its access log file again, at once."""
        for slot in self.slots:
            slot.send(("reopen",))

    def reconfigure(self, config: Config) -> None:
        if config.proxy.workers != self.config.proxy.workers:
            log.warning(
                "reload: [proxy] workers changed; restart fastlb for that (%d kept)",
                len(self.slots),
            )
        self.config = config
        for slot in self.slots:
            slot.send(("config", config))

    async def _answer(self, slot: WorkerProcess, ask: int, path: bytes, request: object) -> None:
        handler = self.local.get(path)
        answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        if handler is not None:
            try:
                answer = await handler(local_request(request))
            except Exception:
                log.exception("admin route %r failed", path)
                answer = (
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
        slot.send(("local", ask, answer))

    # ------------------------------------------------------------------ counters
    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            with contextlib.suppress(Exception):
                await self.refresh()

    async def refresh(self) -> None:
        """Fetch every worker's counters and write their sums into the main's objects."""
        asks: list[asyncio.Future[dict[str, Any]]] = []
        loop = asyncio.get_running_loop()
        for slot in self.slots:
            ready = slot.ready
            if ready is None or not ready.done() or ready.cancelled() or ready.exception():
                continue
            ask = next(self._asks)
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            slot.waiting[ask] = future
            slot.send(("stats", ask))
            asks.append(future)
        if asks:
            await asyncio.wait(asks, timeout=STATS_TIMEOUT)
        for future in asks:
            if not future.done():
                future.cancel()
        self._apply()

    def _apply(self) -> None:
        total: dict[str, Any] = {}
        if self._retired:
            _add(total, self._retired, gauges=False)
        for slot in self.slots:
            if slot.last is not None:
                _add(total, slot.last, gauges=True)
        server = self.server
        for name in SERVER_COUNTERS:
            setattr(server, name, total.get(name, 0))
        server.tunnels_open = total.get("tunnels_open", 0)
        server.own_responses = dict(total.get("own_responses", {}))
        server.outbox.dropped = total.get("dropped", 0)
        self.clients = total.get("clients", 0)
        self.waiting = total.get("waiting", 0)
        lasts = [s.last for s in self.slots if s.last is not None]
        if lasts:
            server.max_connections = sum(last["max_connections"] for last in lasts)
        route = self.route
        sums = total.get("upstreams", {})
        self.idle = {name: up["idle"] for name, up in sums.items()}
        if route is None:
            return
        for upstream in route.upstreams:
            up = sums.get(upstream.name)
            if up is None:
                continue
            for key in UPSTREAM_COUNTERS:
                setattr(upstream, key, up[key])
            status_counts = [0] * len(upstream.status_counts)
            for status, n in up["status"].items():
                status_counts[status] = n
            upstream.status_counts = status_counts
            if tuple(upstream.duration_bounds) == tuple(up["bounds"]):
                upstream.duration_counts = list(up["duration_counts"])
                upstream.duration_sum = up["duration_sum"]
            upstream.active = up["active"]

    def per_worker(self) -> list[tuple[int, int, bool, int, int, int]]:
        """(index, pid, listening, restarts, requests, accepted) of each worker, the counts
        from its last snapshot."""
        rows = []
        for slot in self.slots:
            last = slot.last or {}
            ready = slot.ready
            listening = (
                ready is not None
                and ready.done()
                and not ready.cancelled()
                and ready.exception() is None
                and slot.process is not None
                and slot.process.returncode is None
            )
            served, taken = last.get("requests", 0), last.get("accepted", 0)
            rows.append((slot.index, slot.pid, listening, slot.restarts, served, taken))
        return rows
