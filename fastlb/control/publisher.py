"""Publishing the route: what the data path reads, kept in line with the members.

Two channels, for two speeds (Pingora's model):
- `mark()`: each member's `Upstream.up`, read when a request picks it. Set at once, in the
  event that changed it (a death, a failed heartbeat, a drain): no table, no task hop;
- `publish()`: the route itself, changed only as the route plan says (fastlb.control.routeplan):
  a table rebuilt off the loop when names or weights change, or when a reload changed what
  tables are built with (`fastlb.build.table_inputs`: the kind, its parameters, ketama's
  labels), the upstreams swapped when a
  replica is replaced under its own name, nothing otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from fastlb.build import table_inputs
from fastlb.control.members import Member
from fastlb.control.routeplan import CLEAR, REBUILD, SWAP, Membership, plan_route
from fastlb.control.tables import TableBuilder
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.routing import Route


class RouteWatcher(Protocol):
    """Told of what the data path is told: the worker processes' pool (fastlb.workers),
    whose workers hold copies of the route and of the `up` flags."""

    def route_set(self, route: Route[Upstream] | None) -> None: ...

    def marked(self) -> None: ...


class Publisher:
    """Owns the route in place and the count of tables built."""

    def __init__(
        self,
        members: dict[str, Member],
        tables: TableBuilder,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.members = members  # the controller's, shared: read, never changed here
        self.tables = tables
        self.spawn = spawn
        self.server: ProxyServer | None = None
        self.watchers: list[RouteWatcher] = []
        #: Tables built since start (a health flap must build none: tests count them).
        self.builds = 0
        self._lock = asyncio.Lock()
        self._wanted = 0
        self._done = 0
        #: The membership the table in place was built from (None: no route), and what of
        #: the routing config it was built with (a reload may change that alone).
        self._membership: Membership | None = None
        self._inputs: tuple[object, ...] = ()

    @property
    def route(self) -> Route[Upstream] | None:
        return self.server.route if self.server is not None else None

    def mark(self) -> None:
        """Tell the data path, at once, which replicas a request may pick."""
        for member in self.members.values():
            upstream = member.upstream
            if upstream is not None:
                upstream.up = member.routable
                upstream.weight = member.weight  # bounded loads read it (set weight, reload)
        for watcher in self.watchers:
            watcher.marked()

    def _in_table(self) -> list[tuple[str, int, Upstream]]:
        return [
            (m.name, m.weight, m.upstream)
            for m in self.members.values()
            if m.in_table and m.upstream is not None
        ]

    def first(self) -> Route[Upstream] | None:
        """The first route, built inline (before the listener opens)."""
        self.mark()
        plan = plan_route(None, None, self._in_table())
        if plan.action != REBUILD:
            return None
        self.builds += 1
        self._membership = plan.members
        self._inputs = table_inputs(self.tables.routing)
        return Route.build(self.tables.build_now(plan.members), plan.upstreams)

    async def publish(self) -> None:
        """Bring the route in line with the members. Concurrent calls coalesce: a caller
        returns once a route at least as new as its own request is in place."""
        self.mark()
        self._wanted += 1
        wanted = self._wanted
        async with self._lock:
            if self._done >= wanted:
                return
            generation = self._wanted
            current = self.route
            routing = self.tables.routing
            inputs = table_inputs(routing)
            built = self._membership if inputs == self._inputs else None
            plan = plan_route(built, current, self._in_table())
            route = current
            if plan.action == REBUILD:
                table = await self.tables.build(plan.members, routing)
                self.builds += 1
                self._inputs = inputs
                # Built from the members as they were when asked; one that left meanwhile is
                # still listed, down, until the next publish (queued by whatever removed it).
                route = Route.build(table, plan.upstreams)
                self._membership = plan.members
            elif plan.action == SWAP and current is not None:
                names = current.table.names
                route = Route(current.table, tuple(plan.upstreams[n] for n in names))
            elif plan.action == CLEAR:
                route = None
                self._membership = None
            if self.server is not None and route is not current:
                self.server.set_route(route)
                for watcher in self.watchers:
                    watcher.route_set(route)
            self._done = generation

    def soon(self) -> None:
        """`mark()` now, the rest of `publish()` in a task."""
        self.mark()
        self.spawn(self.publish())
