"""The route plan (fastlb/control/routeplan.py): keep, swap or rebuild, from members alone."""

from __future__ import annotations

from fastlb.control.routeplan import CLEAR, KEEP, REBUILD, SWAP, membership, plan_route
from fastlb.maglev import MaglevTable
from fastlb.routing import Route


class Up:
    """An upstream stand-in: the plan compares upstreams by identity only."""

    def __init__(self, name: str) -> None:
        self.name = name


def route_of(members: list[tuple[str, int, Up]]) -> Route[Up]:
    table = MaglevTable([(name, weight) for name, weight, _ in members])
    return Route.build(table, {name: up for name, _, up in members})


def test_no_route_yet_is_a_build() -> None:
    members = [("b", 1, Up("b")), ("a", 2, Up("a"))]
    plan = plan_route(None, None, members)
    assert plan.action == REBUILD and plan.members == (("a", 2), ("b", 1))


def test_the_same_members_keep_the_route_whatever_their_order() -> None:
    members = [("a", 1, Up("a")), ("b", 1, Up("b")), ("c", 1, Up("c"))]
    route = route_of(members)
    built = membership(members)
    assert plan_route(built, route, members).action == KEEP
    assert plan_route(built, route, members[::-1]).action == KEEP


def test_a_replacement_under_the_same_name_swaps_upstreams_and_keeps_the_table() -> None:
    members = [("a", 1, Up("a")), ("b", 1, Up("b"))]
    route = route_of(members)
    replaced = [members[0], ("b", 1, Up("b"))]
    plan = plan_route(membership(members), route, replaced)
    assert plan.action == SWAP and plan.upstreams["b"] is replaced[1][2]


def test_a_new_name_or_weight_rebuilds() -> None:
    members = [("a", 1, Up("a")), ("b", 1, Up("b"))]
    route = route_of(members)
    built = membership(members)
    assert plan_route(built, route, [*members, ("c", 1, Up("c"))]).action == REBUILD
    assert plan_route(built, route, members[:1]).action == REBUILD
    assert plan_route(built, route, [members[0], ("b", 3, members[1][2])]).action == REBUILD


def test_no_members_clears_the_route_once() -> None:
    members = [("a", 1, Up("a"))]
    assert plan_route(membership(members), route_of(members), []).action == CLEAR
    assert plan_route(None, None, []).action == KEEP
