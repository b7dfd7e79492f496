"""The controller: keeps N replicas, knows their health, and publishes the route the proxy
reads.

Everything runs on the event loop. Signals arrive from three directions (heartbeat tasks, the
provider's exit notices, the data path's suspicion) and all end the same way: the member's
state changes, `Upstream.up` says so to the data path at once (read when a request picks the
replica, Pingora's model), and a member that stays down is replaced (with its own name by
default, so its keys come back to it). The table is a function of the members' names and
weights only: `publish()` rebuilds it, off the loop, only when those change, and otherwise
keeps it or swaps in the upstreams of a replacement (fastlb.control.routeplan).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastlb.config import Config
from fastlb.control.api import ControlError, ReplicaInfo
from fastlb.control.health import DOWN, STARTING, UP, Health
from fastlb.control.routeplan import CLEAR, REBUILD, SWAP, Membership, plan_route
from fastlb.control.tables import TableBuilder
from fastlb.errors import FastlbError
from fastlb.limits import REPLICA_NAME_RULE, WEIGHT_RULE, is_replica_name, is_weight
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.replicas.base import HeartbeatCheck, Provider, Replica, probe
from fastlb.routing import Route

log = logging.getLogger("fastlb.cluster")

#: Heartbeats that fastlb could not send for want of its own descriptors are logged at most
#: this often (seconds): at the limit every probe of every replica fails the same way.
OWN_FAILURE_LOG_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to the cluster, for the log and the status page."""

    at: float  # time.time()
    kind: str  # started, died, down, up, replaced, added, removed, reloaded, crash-loop, ...
    replica: str
    detail: str = ""


class Member:
    """One replica as the controller tracks it across restarts."""

    __slots__ = (
        "crashes",
        "draining",
        "enabled",
        "healing",
        "health",
        "impostor",
        "last_failure",
        "name",
        "probes",
        "replica",
        "restarts",
        "started_at",
        "stopping",
        "upstream",
        "wake",
        "weight",
    )

    def __init__(self, name: str, weight: int, health: Health) -> None:
        self.name = name
        self.weight = weight
        self.health = health
        self.replica: Replica | None = None
        self.upstream: Upstream | None = None
        self.enabled = True
        self.draining = False
        self.stopping = False
        self.restarts = 0
        self.crashes = 0  # consecutive deaths within crash_window of a start
        self.started_at = 0.0
        self.probes: asyncio.Task[None] | None = None
        self.healing: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()  # set to probe now rather than at the next interval
        self.impostor = ""  # who answered its heartbeats instead of it (logged once), or ""
        self.last_failure = ""  # the last restart failure logged (a repeat is not logged)

    @property
    def in_table(self) -> bool:
        """Whether the table lists it: from its first start until it is removed, up or not."""
        return self.upstream is not None and not self.stopping

    @property
    def routable(self) -> bool:
        """Whether a request may pick it now (what `Upstream.up` tells the data path)."""
        return (
            self.upstream is not None
            and self.health.up
            and self.enabled
            and not self.draining
            and not self.stopping
        )

    @property
    def state(self) -> str:
        if self.draining:
            return "draining"
        if not self.enabled:
            return "disabled"
        return self.health.state


class Cluster:
    """Implements `fastlb.control.api.ClusterControl`."""

    def __init__(
        self,
        config: Config,
        provider: Provider,
        tables: TableBuilder,
        make_upstream: Callable[[Replica], Upstream],
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.tables = tables
        self.make_upstream = make_upstream
        self.reload_config = reload_config
        self.members: dict[str, Member] = {}  # insertion order: /rep lists them that way
        self.server: ProxyServer | None = None
        self.events: deque[Event] = deque(maxlen=500)
        self.restarts_total = 0
        self.heartbeat_failures: dict[str, int] = {}
        #: Heartbeats not sent because fastlb itself was out of descriptors (or buffers,
        #: memory, local ports): no replica's health was judged by them.
        self.heartbeats_skipped = 0
        self._skipped_logged = 0  # heartbeats_skipped when that was last logged
        self._skipped_log_at = -OWN_FAILURE_LOG_EVERY  # loop time of that log line
        self._publish_lock = asyncio.Lock()
        self._wanted = 0
        self._built = 0
        #: The membership the table in place was built from (None: no route).
        self._membership: Membership | None = None
        #: Tables built since start (a health flap must build none: tests count them).
        self.table_builds = 0
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._weights = dict(config.replicas.weights)
        #: Called with (old, new) by every reload, before replicas are added or removed: the
        #: parts outside the cluster that hold configuration (the admin routes, the admin
        #: listener, the TLS certificate) take theirs there. They must not raise: one that
        #: could not take the new settings returns why, and the reload's summary says so.
        self.on_reload: list[Callable[[Config, Config], str | None]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Route[Upstream] | None:
        """Adopt what is already running, start the rest; the first route (built inline)."""
        self.provider.on_exit(self._on_exit)
        for replica in await self.provider.adopt():
            member = self._new_member(replica.name)
            self._running(member, replica)
            self._event("adopted", replica.name, f"{replica.host}:{replica.port}")
        missing = [n for n in self.provider.names() if n not in self.members]
        started = await self._start_all(missing)
        for replica in started:
            member = self._new_member(replica.name)
            self._running(member, replica)
            self._event("started", replica.name, f"{replica.host}:{replica.port}")
        await self._first_heartbeats(list(self.members.values()))
        return self._route_now()

    def attach(self, server: ProxyServer) -> None:
        self.server = server
        server.on_suspect = self._on_suspect
        for member in self.members.values():
            self._watch(member)

    async def close(self) -> None:
        self._closing = True
        for member in self.members.values():
            member.stopping = True
            for task in (member.probes, member.healing):
                if task is not None:
                    task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.provider.close()

    # --------------------------------------------------------------------- tables
    def _mark(self) -> None:
        """Tell the data path, at once, which replicas a request may pick: `Upstream.up` is
        read at every pick, so a health change needs no table and moves no other key."""
        for member in self.members.values():
            if member.upstream is not None:
                member.upstream.up = member.routable

    def _in_table(self) -> list[tuple[str, int, Upstream]]:
        return [
            (m.name, m.weight, m.upstream)
            for m in self.members.values()
            if m.in_table and m.upstream is not None
        ]

    def _route_now(self) -> Route[Upstream] | None:
        """The first route, built inline (before the listener opens)."""
        self._mark()
        plan = plan_route(None, None, self._in_table())
        if plan.action != REBUILD:
            return None
        self.table_builds += 1
        self._membership = plan.members
        return Route.build(self.tables.build_now(plan.members), plan.upstreams)

    async def publish(self) -> None:
        """Bring the route in line with the members: rebuild the table only if their names or
        weights changed, swap the upstreams of a replacement, else keep it. Concurrent calls
        coalesce: a caller returns once a route at least as new as its own request is in place."""
        self._mark()
        self._wanted += 1
        wanted = self._wanted
        async with self._publish_lock:
            if self._built >= wanted:
                return
            generation = self._wanted
            self._mark()
            current = self.server.route if self.server is not None else None
            plan = plan_route(self._membership, current, self._in_table())
            route = current
            if plan.action == REBUILD:
                table = await self.tables.build(plan.members)
                self.table_builds += 1
                # Built from the members as they were asked for; one that left meanwhile is
                # still listed, down, until the next publish (queued by whatever removed it).
                route = Route.build(table, plan.upstreams)
                self._membership = plan.members
            elif plan.action == SWAP and current is not None:
                route = Route(current.table, tuple(plan.upstreams[n] for n in current.table.names))
            elif plan.action == CLEAR:
                route = None
                self._membership = None
            if self.server is not None and route is not current:
                self.server.set_route(route)
            self._built = generation

    def _publish_soon(self) -> None:
        self._mark()
        self._spawn(self.publish())

    # ------------------------------------------------------------------- members
    def _new_member(self, name: str) -> Member:
        hc = self.config.health
        member = Member(name, self._weights.get(name, 1), Health(hc.rise, hc.fall))
        self.members[name] = member
        return member

    def _running(self, member: Member, replica: Replica) -> None:
        member.replica = replica
        upstream = self.make_upstream(replica)
        if member.upstream is not None:
            # A replacement under the same name continues its counters: a replica's totals
            # are the name's, as Prometheus and the status page show them.
            upstream.inherit(member.upstream)
        member.upstream = upstream
        member.started_at = time.monotonic()
        if self.provider.replaceable:
            # The provider returned once it answered /heartbeat (local, Docker): up now.
            member.health.started()
        # else (static): `start` only named it; it stays `starting`, unrouted, until its
        # first good heartbeat (_first_heartbeats, then the probe loop).
        upstream.up = member.routable
        if self.server is not None:
            self._watch(member)

    async def _first_heartbeats(self, members: list[Member]) -> None:
        """One heartbeat for each member still `starting` (a static replica), so that those
        that answer are routed in the first table, and those that do not are not routed."""
        timeout = self.config.health.timeout

        async def first(member: Member) -> None:
            replica = member.replica
            if replica is None:
                return
            check = HeartbeatCheck.of(self.config.health)
            beat = await probe(replica.host, replica.port, timeout, replica.identity, check)
            if beat.ok and member.replica is replica and member.health.state == STARTING:
                member.health.started()

        await asyncio.gather(*(first(m) for m in members if m.health.state == STARTING))

    async def _start_all(self, names: list[str]) -> list[Replica]:
        """Start replicas concurrently; if any fails, stop the others and raise its error."""
        results = await asyncio.gather(
            *(self.provider.start(name) for name in names), return_exceptions=True
        )
        started = [r for r in results if isinstance(r, Replica)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(self.provider.stop(r.name) for r in started))
            raise errors[0]
        return started

    def _event(self, kind: str, replica: str, detail: str = "", *, quiet: bool = False) -> None:
        """Record an event for the status page and log it (`quiet`: a repeat, recorded only)."""
        self.events.append(Event(time.time(), kind, replica, detail))
        if not quiet:
            log.info("%s %s%s", replica, kind, f": {detail}" if detail else "")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --------------------------------------------------------------------- health
    def _watch(self, member: Member) -> None:
        if member.probes is None or member.probes.done():
            member.probes = asyncio.ensure_future(self._probe_loop(member))

    async def _probe_loop(self, member: Member) -> None:
        """Heartbeats start `interval` apart (not `interval` after the last one ended), so a
        hung replica, whose probes each take the full timeout, is down after about
        fall x interval + timeout. A suspicion from the data path probes at once."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.config.health.interval
        while not member.stopping:
            hc = self.config.health
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(member.wake.wait(), delay)
            if member.wake.is_set():
                member.wake.clear()
            else:
                next_at = max(next_at + hc.interval, loop.time())
            replica = member.replica
            if replica is None or member.stopping or member.healing is not None:
                continue
            check = HeartbeatCheck.of(hc)
            beat = await probe(replica.host, replica.port, hc.timeout, replica.identity, check)
            if member.replica is not replica or member.stopping:
                continue  # replaced or removed while the probe ran
            if beat.own:
                # fastlb could not even open the socket (EMFILE and the like): that says
                # nothing about the replica, whose health stays as it was.
                self._skipped(beat.reason)
                continue
            if beat.ok:
                member.impostor = ""
                if member.health.state == STARTING:
                    # A static replica's first good heartbeat: what a local one's startup
                    # heartbeat is, so it is up at once (not after `rise`).
                    member.health.started()
                    self._health_changed(member)
                    continue
            else:
                self.heartbeat_failures[member.name] = (
                    self.heartbeat_failures.get(member.name, 0) + 1
                )
                if beat.served_by is not None and beat.served_by != member.impostor:
                    member.impostor = beat.served_by
                    log.warning(
                        "%s: the heartbeat to %s:%d %s: another replica holds its port; "
                        "counted as a failed heartbeat",
                        member.name, replica.host, replica.port, beat.reason,
                    )
            if member.health.heartbeat(beat.ok):
                self._health_changed(member)

    def _skipped(self, reason: str) -> None:
        """A heartbeat fastlb could not send for its own want of resources: counted, and
        logged at most once each OWN_FAILURE_LOG_EVERY seconds (with how many since)."""
        self.heartbeats_skipped += 1
        now = asyncio.get_running_loop().time()
        if now - self._skipped_log_at < OWN_FAILURE_LOG_EVERY:
            return
        count = self.heartbeats_skipped - self._skipped_logged
        self._skipped_logged = self.heartbeats_skipped
        self._skipped_log_at = now
        log.warning(
            "%d heartbeat(s) not sent: fastlb itself is out of resources (%s); replica health "
            "is left as it was; raise the descriptor limit (ulimit -n) if this lasts",
            count, reason,
        )

    def _health_changed(self, member: Member) -> None:
        if member.health.state == DOWN:
            self._event("down", member.name, "heartbeats failed")
            if member.upstream is not None:
                member.upstream.close_idle()
            self._publish_soon()
            if self.provider.replaceable:
                self._heal(member, delay=self.config.health.replace_after)
            # else (static): nothing of ours to restart; the heartbeats go on, and `rise`
            # good ones bring it back.
        elif member.health.state == UP:
            self._event("up", member.name)
            self._publish_soon()

    def _on_suspect(self, name: str) -> None:
        member = self.members.get(name)
        if member is not None and member.health.suspect():
            member.wake.set()

    def _on_exit(self, name: str, detail: str = "") -> None:
        member = self.members.get(name)
        if member is None or member.stopping or self._closing:
            return
        member.health.died()
        self._event("died", name, detail)
        if member.upstream is not None:
            member.upstream.close_idle()
        self._publish_soon()
        self._heal(member, delay=0.0)

    # ---------------------------------------------------------------- self-healing
    def _heal(self, member: Member, delay: float) -> None:
        if member.healing is None and not member.stopping and not self._closing:
            member.healing = asyncio.ensure_future(self._replace(member, delay))

    async def _replace(self, member: Member, delay: float) -> None:
        """Replace a member that died or stayed down, backing off if it keeps crashing."""
        hc = self.config.health
        try:
            await asyncio.sleep(delay)
            if member.health.up or member.stopping:
                return  # it came back by itself
            while not member.stopping and not self._closing:
                if time.monotonic() - member.started_at < hc.crash_window:
                    member.crashes += 1
                else:
                    member.crashes = 0
                if member.crashes > 1:
                    # The first early death is replaced at once (it may have been killed);
                    # one that keeps dying young waits longer each time instead of looping hot.
                    wait = min(hc.backoff * 2 ** (member.crashes - 2), hc.backoff_max)
                    self._event("crash-loop", member.name, f"restarting in {wait:g} s")
                    await asyncio.sleep(wait)
                try:
                    if await self._restart(member):
                        return
                except Exception as exc:
                    # Stopping the old one failed, or something not foreseen: never an
                    # unretrieved task exception, never a retry without the backoff above.
                    detail = f"{type(exc).__name__}: {exc}"
                    if detail != member.last_failure:
                        log.exception("%s: replacement failed", member.name)
                    member.started_at = time.monotonic()
                    self._restart_failed(member, detail)
        finally:
            member.healing = None
            if member.health.state == DOWN and not member.stopping and not self._closing:
                # It died again while this replacement was being put in place.
                self._heal(member, delay=0.0)

    async def _restart(self, member: Member) -> bool:
        old = member.name
        await self.provider.stop(old)  # a hung process is killed, a dead one is reaped
        if member.upstream is not None:
            member.upstream.close_idle()
        name = old
        if self.config.health.replace_with == "random":
            name = self._fresh_name()
            del self.members[old]
            member.name = name
            self.members[name] = member
        try:
            replica = await self.provider.start(name)
        except (FastlbError, OSError) as exc:
            # FastlbError: the provider's own account (EMFILE on Popen is one, for the local
            # provider); OSError: a provider that let one through. Either way the loop in
            # _replace waits its backoff before the next try.
            member.started_at = time.monotonic()
            self._restart_failed(member, str(exc))
            return False
        member.last_failure = ""
        member.restarts += 1
        self.restarts_total += 1
        self._running(member, replica)
        detail = f"{replica.host}:{replica.port}" + (f", was {old}" if name != old else "")
        self._event("replaced", name, detail)
        await self.publish()
        return True

    def _restart_failed(self, member: Member, detail: str) -> None:
        """A failed restart: an event each time, a log line only when the reason changes
        (at the descriptor limit every try fails the same way)."""
        repeat = detail == member.last_failure
        member.last_failure = detail
        self._event("restart-failed", member.name, detail, quiet=repeat)

    def _fresh_name(self) -> str:
        while True:
            name = f"Server{random.randrange(100000, 1000000)}"
            if name not in self.members:
                return name

    # ------------------------------------------------------------ control contract
    def replicas(self) -> list[ReplicaInfo]:
        route = self.server.route if self.server is not None else None
        shares = route.table.shares() if route is not None else {}
        infos = []
        for member in self.members.values():
            replica, up = member.replica, member.upstream
            infos.append(
                ReplicaInfo(
                    name=member.name,
                    address=f"{replica.host}:{replica.port}" if replica else "-",
                    state=member.state,
                    weight=member.weight,
                    share=shares.get(member.name, 0.0),
                    in_flight=up.active if up else 0,
                    requests=up.requests if up else 0,
                    restarts=member.restarts,
                )
            )
        return sorted(infos, key=lambda info: info.name)

    def names(self) -> list[str]:
        """Replica names in the order they joined (what /rep lists)."""
        return list(self.members)

    def table_shares(self) -> dict[str, float]:
        route = self.server.route if self.server is not None else None
        return route.table.shares() if route is not None else {}

    def check_new_names(self, names: list[str]) -> None:
        """ControlError unless every name is valid, unused and the total stays allowed."""
        seen: set[str] = set()
        for name in names:
            if not is_replica_name(name):
                shown = json.dumps(name, ensure_ascii=False)
                raise ControlError(f"expected {REPLICA_NAME_RULE}, got {shown}")
            if name in self.members:
                raise ControlError(f"hostname {name!r} is already in use")
            if name in seen:
                raise ControlError(f"hostname {name!r} is listed twice")
            seen.add(name)
        limit = self.config.admin.max_replicas
        if len(self.members) + len(names) > limit:
            raise ControlError(
                f"adding {len(names)} replicas would make {len(self.members) + len(names)}, "
                f"over max_replicas = {limit}"
            )

    def generated_names(self, count: int, taken: list[str]) -> list[str]:
        """Names for replicas the caller did not name: the lowest free ServerK."""
        used = set(self.members) | set(taken)
        names: list[str] = []
        k = 1
        while len(names) < count:
            name = f"Server{k}"
            if name not in used:
                names.append(name)
                used.add(name)
            k += 1
        return names

    async def add(self, names: list[str]) -> None:
        self.check_new_names(names)
        try:
            started = await self._start_all(names)
        except FastlbError as exc:
            raise ControlError(f"could not start the new replicas: {exc}") from None
        members = []
        for replica in started:
            member = self._new_member(replica.name)
            self._running(member, replica)
            self._event("added", replica.name, f"{replica.host}:{replica.port}")
            members.append(member)
        await self._first_heartbeats(members)
        await self.publish()

    async def _move_static(self, names: list[str]) -> None:
        """Static replicas whose [[replicas.static]] address changed in a reload: the member
        takes the new address (a new upstream, its counters kept) and, like a new static
        replica, is routed once a heartbeat there answers. Nothing is started or stopped:
        `start` of a static provider only names the replica."""
        moved = []
        for name in names:
            member = self.members.get(name)
            old = member.replica if member is not None else None
            if member is None or old is None:
                continue
            try:
                replica = await self.provider.start(name)
            except FastlbError as exc:
                log.warning("reload: %s keeps its address: %s", name, exc)
                continue
            if (replica.host, replica.port) == (old.host, old.port):
                continue
            if member.upstream is not None:
                member.upstream.close_idle()
            hc = self.config.health
            member.health = Health(hc.rise, hc.fall)  # starting: probed at the new address
            self._running(member, replica)
            self._event(
                "moved", name, f"{old.host}:{old.port} -> {replica.host}:{replica.port}"
            )
            moved.append(member)
        await self._first_heartbeats(moved)

    def _known(self, name: str) -> Member:
        member = self.members.get(name)
        if member is None:
            known = ", ".join(self.members) or "none"
            raise ControlError(f"hostname {name!r} is not a replica (replicas: {known})")
        return member

    async def remove(self, names: list[str]) -> None:
        if len(set(names)) != len(names):
            raise ControlError("a hostname is listed twice")
        members = [self._known(name) for name in names]
        for member in members:
            member.draining = True
        await self.publish()
        await self._drained(members)
        for member in members:
            member.stopping = True
            for task in (member.probes, member.healing):
                if task is not None:
                    task.cancel()
            del self.members[member.name]
        await self.publish()  # the names changed: a new table without them
        await asyncio.gather(*(self.provider.stop(m.name) for m in members))
        for member in members:
            if member.upstream is not None:
                member.upstream.close_idle()
            self._event("removed", member.name)

    async def _drained(self, members: list[Member]) -> None:
        """Wait until no request is in flight on `members`, at most drain_timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.admin.drain_timeout
        while loop.time() < deadline:
            if all(m.upstream is None or m.upstream.active == 0 for m in members):
                return
            await asyncio.sleep(0.01)

    async def drain(self, name: str) -> None:
        member = self._known(name)
        member.draining = True
        self._event("draining", name)
        await self.publish()

    def enable(self, name: str) -> None:
        member = self._known(name)
        member.enabled, member.draining = True, False
        self._event("enabled", name)
        self._publish_soon()

    def disable(self, name: str) -> None:
        member = self._known(name)
        member.enabled = False
        self._event("disabled", name)
        self._publish_soon()

    def set_weight(self, name: str, weight: int) -> None:
        member = self._known(name)
        if not is_weight(weight):
            raise ControlError(f"weight: expected {WEIGHT_RULE}, got {json.dumps(weight)}")
        member.weight = weight
        self._weights[name] = weight
        self._event("weight", name, str(weight))
        self._publish_soon()

    async def reload(self) -> str:
        if self.reload_config is None:
            raise ControlError("fastlb runs on its embedded default: there is no file to reload")
        try:
            config = self.reload_config()
        except FastlbError as exc:
            self._event("reload-failed", "-", str(exc))
            raise ControlError(f"config rejected, nothing changed: {exc}") from None
        return await self.apply(config)

    async def apply(self, config: Config) -> str:
        """Make the running cluster match `config` (replica set, weights, table, health)."""
        old = self.config
        if config.proxy.host != old.proxy.host or config.proxy.port != old.proxy.port:
            log.warning("reload: [proxy] listen changed; restart fastlb to move the listener")
        if config.replicas.provider != old.replicas.provider:
            # The running replicas belong to the old provider: the [replicas] table is kept.
            log.warning(
                "reload: [replicas] provider changed from %r to %r; restart fastlb to change "
                "it ([replicas] kept as it was)", old.replicas.provider, config.replicas.provider,
            )
            config = dataclasses.replace(config, replicas=old.replicas)
        else:
            # Before anything is started: a replica added to the file is started from it.
            self.provider.reconfigure(config.replicas, config.health)
        self.config = config
        self._weights = dict(config.replicas.weights)
        self.tables.routing = config.routing
        if self.server is not None:
            self.server.reconfigure(config.proxy, config.routing.key)
        problems = [p for p in (hook(old, config) for hook in self.on_reload) if p]
        for member in self.members.values():
            member.weight = self._weights.get(member.name, 1)
            member.health.rise, member.health.fall = config.health.rise, config.health.fall
        wanted = list(config.replicas.names)
        to_add = [n for n in wanted if n not in self.members]
        to_remove = [n for n in self.members if n not in wanted]
        if to_add:
            await self.add(to_add)
        if to_remove:
            await self.remove(to_remove)
        if not self.provider.replaceable:
            await self._move_static([n for n in wanted if n not in to_add])
        await self.publish()
        summary = f"reloaded {config.source}: {len(self.members)} replicas"
        if to_add or to_remove:
            summary += f" (+{len(to_add)} -{len(to_remove)})"
        for problem in problems:
            summary += f"; {problem}"
        self._event("reloaded", "-", summary)
        return summary
