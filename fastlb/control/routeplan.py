"""What a change of the cluster does to the route: keep it, swap its upstreams, or rebuild.

Pingora's model: a routing table is a function of the members and their weights only, and a
replica's health is read when a request picks it (`Upstream.up`, set by the controller; the
data path walks a down replica's keys on through `Table.candidates`). So:

- a health flap, a drain, a disable change nothing here (KEEP): no table is built, and no key
  of another replica moves;
- a replica replaced under its own name (a new process or container: a new `Upstream`) keeps
  the table and swaps the upstreams it indexes (SWAP);
- only a change of (names, weights) builds a new table (REBUILD), and no member at all leaves
  no route (CLEAR: every request is answered 503 at once).

Pure: no asyncio, no clock, so every case is a unit test (tests/test_routeplan.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from fastlb.routing import Route

__all__ = ["CLEAR", "KEEP", "REBUILD", "SWAP", "RoutePlan", "membership", "plan_route"]

KEEP: Final = "keep"
SWAP: Final = "swap"
REBUILD: Final = "rebuild"
CLEAR: Final = "clear"

U = TypeVar("U")

#: The members a table is built from, sorted by name: what the table is a function of.
Membership = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class RoutePlan(Generic[U]):
    """What to do, with what it needs: `members` for a build, `upstreams` for a swap (in the
    table's order) or a build (by name)."""

    action: str
    members: Membership
    upstreams: dict[str, U]


def membership(members: Sequence[tuple[str, int, U]]) -> Membership:
    """(name, weight) of each member, sorted by name (tables sort the same way)."""
    return tuple(sorted((name, weight) for name, weight, _ in members))


def plan_route(
    built: Membership | None, route: Route[U] | None, members: Sequence[tuple[str, int, U]]
) -> RoutePlan[U]:
    """The plan for `members` (name, weight, upstream), given the route in place and the
    membership its table was built from (`built`; None when there is no route)."""
    wanted = membership(members)
    upstreams = {name: upstream for name, _, upstream in members}
    if not wanted:
        return RoutePlan(KEEP if route is None else CLEAR, wanted, upstreams)
    if route is None or built != wanted:
        return RoutePlan(REBUILD, wanted, upstreams)
    current = route.upstreams
    for i, name in enumerate(route.table.names):
        if upstreams[name] is not current[i]:
            return RoutePlan(SWAP, wanted, upstreams)
    return RoutePlan(KEEP, wanted, upstreams)
