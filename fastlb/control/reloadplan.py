"""Reload as a pure plan: (old config, new config, members running) -> what changes.

The controller applies the plan to every part that holds configuration (the provider, the
table builder, the proxy's settings, the admin routes and listener through `on_reload`, the
members' weights and health thresholds), then adds, removes and moves replicas. Deciding is
kept apart from doing so that each rule is a unit test (tests/test_reloadplan.py), and so that
a reload that can only be half-applied (a new provider, a new listen address) says so before
anything moves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from fastlb.config import Config

__all__ = ["ReloadPlan", "plan_reload"]


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    #: What to apply: the new file, except what a reload cannot change (kept as it was).
    config: Config
    #: What the new file asks that takes a restart, for the log.
    warnings: tuple[str, ...]
    #: Replicas to start (in the file's order) and to drain and stop.
    add: tuple[str, ...]
    remove: tuple[str, ...]
    #: Static replicas that stay but whose [[replicas.static]] address changed.
    move: tuple[str, ...]
    #: Every member's weight after the reload (1 unless the file says otherwise).
    weights: dict[str, int]


def plan_reload(old: Config, new: Config, running: Sequence[str]) -> ReloadPlan:
    """The plan to make a cluster running `old` with members `running` match `new`."""
    warnings = []
    if new.proxy.host != old.proxy.host or new.proxy.port != old.proxy.port:
        warnings.append("[proxy] listen changed; restart fastlb to move the listener")
    if new.replicas.provider != old.replicas.provider:
        # The running replicas belong to the old provider: the [replicas] table is kept.
        warnings.append(
            f"[replicas] provider changed from {old.replicas.provider!r} to "
            f"{new.replicas.provider!r}; restart fastlb to change it ([replicas] kept as it was)"
        )
        new = dataclasses.replace(new, replicas=old.replicas)
    wanted = list(new.replicas.names)
    add = tuple(n for n in wanted if n not in running)
    remove = tuple(n for n in running if n not in wanted)
    move: tuple[str, ...] = ()
    if new.replicas.provider == "static":
        before = {s.name: (s.host, s.port) for s in old.replicas.static}
        after = {s.name: (s.host, s.port) for s in new.replicas.static}
        move = tuple(
            n for n in wanted if n in running and n in before and after.get(n) != before[n]
        )
    given = dict(new.replicas.weights)
    weights = {name: given.get(name, 1) for name in wanted}
    return ReloadPlan(new, tuple(warnings), add, remove, move, weights)
