"""Reload as a pure plan (fastlb/control/reloadplan.py): what changes, decided before anything
moves."""

from __future__ import annotations

import dataclasses

from fastlb.config import Config, ProxyConfig, ReplicasConfig, ReplicaSpec
from fastlb.control.reloadplan import plan_reload


def local(*names: str, weights: tuple[tuple[str, int], ...] = ()) -> Config:
    return Config(replicas=ReplicasConfig(count=len(names), names=names, weights=weights))


def static(*specs: ReplicaSpec) -> Config:
    replicas = ReplicasConfig(
        provider="static", count=len(specs), names=tuple(s.name for s in specs), static=specs
    )
    return Config(replicas=replicas)


def test_names_added_and_removed_in_the_files_order() -> None:
    plan = plan_reload(local("A", "B", "C"), local("C", "D", "A", "E"), ["A", "B", "C"])
    assert plan.add == ("D", "E") and plan.remove == ("B",) and plan.move == ()
    assert plan.warnings == ()


def test_weights_follow_the_file_and_default_to_one() -> None:
    plan = plan_reload(local("A", "B", weights=(("A", 3),)), local("A", "B", weights=(("B", 2),)),
                       ["A", "B"])
    assert plan.weights == {"A": 1, "B": 2}


def test_a_second_static_entry_is_added_and_a_changed_address_moves() -> None:
    # The most common reload: a server added to the file (issue 12's reproduced defect).
    old = static(ReplicaSpec("A1", "127.0.0.1", 8001), ReplicaSpec("A3", "127.0.0.1", 8003))
    new = static(
        ReplicaSpec("A1", "127.0.0.1", 8001),
        ReplicaSpec("A2", "127.0.0.1", 8002),
        ReplicaSpec("A3", "127.0.0.1", 9003),
    )
    plan = plan_reload(old, new, ["A1", "A3"])
    assert plan.add == ("A2",) and plan.remove == () and plan.move == ("A3",)
    assert plan.config is new


def test_what_takes_a_restart_is_said_and_the_provider_kept() -> None:
    old = local("A")
    new = dataclasses.replace(
        static(ReplicaSpec("B", "127.0.0.1", 8001)), proxy=ProxyConfig(port=6000)
    )
    plan = plan_reload(old, new, ["A"])
    assert len(plan.warnings) == 2
    assert "[proxy] listen" in plan.warnings[0] and "provider changed" in plan.warnings[1]
    assert plan.config.replicas is old.replicas and plan.config.proxy.port == 6000
    assert plan.add == () and plan.remove == ()
