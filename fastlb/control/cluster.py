"""The controller: the members and what happens to them, composed from parts with one owner
each.

Signals arrive from three directions (heartbeats, the provider's exit notices, the data path's
suspicion) and all end the same way: the member's health changes, `Upstream.up` tells the data
path at once (read when a request picks a replica, Pingora's model), and a member that stays
down is replaced (with its own name by default, so its keys come back to it).

    members    fastlb.control.members    each member's health and admin state, the events
    probing    fastlb.control.prober     heartbeat tasks and their counters
    healing    fastlb.control.healer     replacement, with the crash-loop backoff
    publishing fastlb.control.publisher  Upstream.up now; the table only when names or
                                         weights change (fastlb.control.routeplan)
    reload     fastlb.control.reloadplan (old config, new config) -> the plan applied here

What stays here: the lifecycle (start, attach, close), the admin contract the classic API,
the admin socket and reload speak (`fastlb.control.api.ClusterControl`), and the wiring.
Everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastlb.build import table_info
from fastlb.config import Config, HealthConfig
from fastlb.control.api import ControlError, EventInfo, ReplicaInfo
from fastlb.control.healer import Healer
from fastlb.control.health import DOWN, UP, Health
from fastlb.control.members import DISABLED, DRAINING, ENABLED, REMOVED, Event, Events, Member
from fastlb.control.prober import Prober
from fastlb.control.publisher import Publisher
from fastlb.control.reloadplan import plan_reload
from fastlb.control.tables import TableBuilder
from fastlb.errors import FastlbError
from fastlb.limits import REPLICA_NAME_RULE, WEIGHT_RULE, is_replica_name, is_weight
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.replicas.base import Provider, Replica
from fastlb.routing import Route

__all__ = ["Cluster", "Event", "Member"]

log = logging.getLogger("fastlb.cluster")


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
        self.events = Events()
        self._tasks: set[asyncio.Task[None]] = set()
        self._weights = dict(config.replicas.weights)
        #: When each member that fastlb does not replace (static, Swarm) went down, to tell
        #: how long the engine took to bring it back (the `recovered` event and metrics).
        self._down_at: dict[str, float] = {}
        #: Members brought back by their engine (a Swarm task replaced in its slot, a static
        #: replica answering again) and the seconds that took in all, for the metrics.
        self.recoveries = 0
        self.recovery_seconds = 0.0
        self.publisher = Publisher(self.members, tables, self._spawn)
        self.prober = Prober(self._health_config, self._health_changed)
        self.healer = Healer(
            self.members, provider, self._health_config, self.events, self._running,
            self.publisher.publish,
        )
        #: Called with (old, new) by every reload, before replicas are added or removed: the
        #: parts outside the cluster that hold configuration (the admin routes, the admin
        #: listener, the TLS certificate) take theirs there. They must not raise: one that
        #: could not take the new settings returns why, and the reload's summary says so.
        self.on_reload: list[Callable[[Config, Config], str | None]] = []

    # Narrow views for the observers (metrics, status page) and the tests.
    @property
    def server(self) -> ProxyServer | None:
        return self.publisher.server

    @property
    def table_builds(self) -> int:
        return self.publisher.builds

    @property
    def restarts_total(self) -> int:
        return self.healer.restarts

    @property
    def heartbeat_failures(self) -> dict[str, int]:
        return self.prober.failures

    @property
    def heartbeats_skipped(self) -> int:
        return self.prober.skipped

    def _health_config(self) -> HealthConfig:
        return self.config.health

    async def publish(self) -> None:
        await self.publisher.publish()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Route[Upstream] | None:
        """Adopt what is already running, start the rest; the first route (built inline)."""
        self.provider.on_exit(self._on_exit)
        self.provider.on_move(self._on_move)
        for replica in await self.provider.adopt():
            member = self._new_member(replica.name)
            self._running(member, replica)
            self.events.add("adopted", replica.name, f"{replica.host}:{replica.port}")
        missing = [n for n in self.provider.names() if n not in self.members]
        started = await self._start_all(missing)
        for replica in started:
            member = self._new_member(replica.name)
            self._running(member, replica)
            self.events.add("started", replica.name, f"{replica.host}:{replica.port}")
        await self.prober.first(list(self.members.values()))
        return self.publisher.first()

    def attach(self, server: ProxyServer) -> None:
        self.publisher.server = server
        server.on_suspect = self._on_suspect
        for member in self.members.values():
            self.prober.watch(member)

    async def close(self) -> None:
        self.healer.closing = True
        for member in self.members.values():
            member.admin = REMOVED
            for task in (member.probes, member.healing):
                if task is not None:
                    task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.provider.close()

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
        # first good heartbeat (Prober.first, then the probe loop).
        upstream.up = member.routable
        if self.server is not None:
            self.prober.watch(member)

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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ health signals
    def _health_changed(self, member: Member) -> None:
        if member.health.state == DOWN:
            self.events.add("down", member.name, "heartbeats failed")
            self._went_down(member)
            if member.upstream is not None:
                member.upstream.close_idle()
            self.publisher.soon()
            if self.provider.replaceable:
                self.healer.heal(member, delay=self.config.health.replace_after)
            # else (static): nothing of ours to restart; the heartbeats go on, and `rise`
            # good ones bring it back.
        elif member.health.state == UP:
            self.events.add("up", member.name)
            self._recovered(member)
            self.publisher.soon()

    def _went_down(self, member: Member) -> None:
        if not self.provider.replaceable:
            self._down_at.setdefault(member.name, time.monotonic())

    def _recovered(self, member: Member) -> None:
        """A member that fastlb does not replace is up again: how long it was away."""
        since = self._down_at.pop(member.name, None)
        if since is not None:
            seconds = time.monotonic() - since
            self.recoveries += 1
            self.recovery_seconds += seconds
            self.events.add("recovered", member.name, f"back {seconds:.3f} s after it went down")

    def _on_suspect(self, name: str) -> None:
        member = self.members.get(name)
        if member is not None and member.health.suspect():
            member.wake.set()

    def _on_exit(self, name: str, detail: str = "") -> None:
        member = self.members.get(name)
        if member is None or member.removed or self.healer.closing:
            return
        member.health.died()
        self.events.add("died", name, detail)
        self._went_down(member)
        if member.upstream is not None:
            member.upstream.close_idle()
        self.publisher.soon()
        if self.provider.replaceable:
            self.healer.heal(member, delay=0.0)
        # else (Swarm): the engine replaces the task itself, and `_on_move` routes the new one.

    def _on_move(self, replica: Replica) -> None:
        """The provider's engine runs `replica` at a new address under a member's name (Swarm
        replaced a dead task in its slot, on a new port): the member moves there."""
        member = self.members.get(replica.name)
        if member is None or member.removed or self.healer.closing:
            return
        self._spawn(self._moved(member, replica))

    async def _moved(self, member: Member, replica: Replica) -> None:
        old = member.replica
        if member.upstream is not None:
            member.upstream.close_idle()
        hc = self.config.health
        member.health = Health(hc.rise, hc.fall)  # starting: routed after a good heartbeat
        self._running(member, replica)
        before = f"{old.host}:{old.port} -> " if old is not None else ""
        self.events.add("moved", member.name, f"{before}{replica.host}:{replica.port}")
        await self.prober.first([member])
        if member.health.up and member.replica is replica:
            self.events.add("up", member.name)
            self._recovered(member)
        self.publisher.soon()

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

    def history(self, name: str) -> list[EventInfo]:
        self._known(name)
        return [EventInfo(e.at, e.kind, e.detail) for e in self.events if e.replica == name]

    def names(self) -> list[str]:
        """Replica names in the order they joined (what /rep lists)."""
        return list(self.members)

    def table_shares(self) -> dict[str, float]:
        route = self.server.route if self.server is not None else None
        return route.table.shares() if route is not None else {}

    def table_info(self) -> tuple[str, str] | None:
        route = self.server.route if self.server is not None else None
        return table_info(route.table) if route is not None else None

    def check_new_names(self, names: list[str]) -> None:
        """ControlError unless every name is valid, unused and the total stays allowed, and,
        where the engine names replicas itself (Swarm slots), the names it will give."""
        fixed = self.provider.new_names(len(names), list(self.members))
        if fixed is not None and names != fixed:
            raise ControlError(
                f"the {self.config.replicas.provider} provider names new replicas itself: "
                f"the next {len(names)} are {', '.join(fixed)}; ask for those (or for n alone)"
            )
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
        """Names for replicas the caller did not name: the lowest free ServerK, or the ones
        the engine will give them (Swarm's next slots)."""
        fixed = self.provider.new_names(len(taken) + count, list(self.members))
        if fixed is not None:
            return [name for name in fixed if name not in taken][:count]
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
            self.events.add("added", replica.name, f"{replica.host}:{replica.port}")
            members.append(member)
        await self.prober.first(members)
        await self.publisher.publish()

    async def _move(self, names: tuple[str, ...]) -> None:
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
            if member.upstream is not None:
                member.upstream.close_idle()
            hc = self.config.health
            member.health = Health(hc.rise, hc.fall)  # starting: probed at the new address
            self._running(member, replica)
            detail = f"{old.host}:{old.port} -> {replica.host}:{replica.port}"
            self.events.add("moved", name, detail)
            moved.append(member)
        await self.prober.first(moved)

    def _known(self, name: str) -> Member:
        member = self.members.get(name)
        if member is None:
            known = ", ".join(self.members) or "none"
            raise ControlError(f"hostname {name!r} is not a replica (replicas: {known})")
        return member

    def removal_names(self, count: int, hostnames: list[str]) -> list[str]:
        """What removing `count` replicas takes, `hostnames` among them: any others at random,
        or, where the engine chooses (Swarm removes its highest slots), the ones it will."""
        fixed = self.provider.removal(count, list(self.members))
        if fixed is not None:
            if not set(hostnames) <= set(fixed):
                raise ControlError(self._removes_highest(fixed))
            return fixed
        others = [name for name in self.members if name not in hostnames]
        return hostnames + random.sample(others, count - len(hostnames))

    def _removes_highest(self, fixed: list[str]) -> str:
        return (
            f"the {self.config.replicas.provider} provider removes the highest slots when "
            f"scaled down: removing {len(fixed)} takes {', '.join(fixed)}; ask for those "
            "(or for n alone), or drain a replica to take it out of the routing"
        )

    async def remove(self, names: list[str]) -> None:
        if len(set(names)) != len(names):
            raise ControlError("a hostname is listed twice")
        members = [self._known(name) for name in names]
        fixed = self.provider.removal(len(names), list(self.members))
        if fixed is not None and set(names) != set(fixed):
            raise ControlError(self._removes_highest(fixed))
        for member in members:
            member.admin = DRAINING
        await self.publisher.publish()  # not picked any more; still in the table
        await self._drained(members)
        for member in members:
            member.admin = REMOVED
            for task in (member.probes, member.healing):
                if task is not None:
                    task.cancel()
            del self.members[member.name]
        await self.publisher.publish()  # the names changed: a new table without them
        await asyncio.gather(*(self.provider.stop(m.name) for m in members))
        for member in members:
            if member.upstream is not None:
                member.upstream.close_idle()
            self.events.add("removed", member.name)

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
        member.admin = DRAINING
        self.events.add("draining", name)
        await self.publisher.publish()

    def enable(self, name: str) -> None:
        member = self._known(name)
        member.admin = ENABLED
        self.events.add("enabled", name)
        self.publisher.soon()

    def disable(self, name: str) -> None:
        member = self._known(name)
        member.admin = DISABLED
        self.events.add("disabled", name)
        self.publisher.soon()

    def set_weight(self, name: str, weight: int) -> None:
        member = self._known(name)
        if not is_weight(weight):
            raise ControlError(f"weight: expected {WEIGHT_RULE}, got {json.dumps(weight)}")
        member.weight = weight
        self._weights[name] = weight
        self.events.add("weight", name, str(weight))
        self.publisher.soon()

    async def reload(self) -> str:
        if self.reload_config is None:
            raise ControlError("fastlb runs on its embedded default: there is no file to reload")
        try:
            config = self.reload_config()
        except FastlbError as exc:
            self.events.add("reload-failed", "-", str(exc))
            raise ControlError(f"config rejected, nothing changed: {exc}") from None
        return await self.apply(config)

    async def apply(self, config: Config) -> str:
        """Make the running cluster match `config`, as `plan_reload` says: every part that
        holds configuration first, then the replicas added, removed and moved."""
        old = self.config
        plan = plan_reload(old, config, list(self.members))
        for warning in plan.warnings:
            log.warning("reload: %s", warning)
        config = plan.config
        if config.replicas is not old.replicas:
            # Before anything is started: a replica added to the file is started from it.
            self.provider.reconfigure(config.replicas, config.health)
        self.config = config
        self._weights = dict(plan.weights)
        self.tables.routing = config.routing
        if self.server is not None:
            self.server.reconfigure(config.proxy, config.routing.key)
            self.server.balance_factor = config.routing.balance_factor
        problems = [p for p in (hook(old, config) for hook in self.on_reload) if p]
        for member in self.members.values():
            member.weight = self._weights.get(member.name, 1)
            member.health.rise, member.health.fall = config.health.rise, config.health.fall
        if plan.add:
            await self.add(list(plan.add))
        if plan.remove:
            await self.remove(list(plan.remove))
        if plan.move:
            await self._move(plan.move)
        await self.publisher.publish()
        summary = f"reloaded {config.source}: {len(self.members)} replicas"
        if plan.add or plan.remove:
            summary += f" (+{len(plan.add)} -{len(plan.remove)})"
        for problem in problems:
            summary += f"; {problem}"
        self.events.add("reloaded", "-", summary)
        return summary
