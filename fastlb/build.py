"""The table factory: the routing table the configuration names, built from members.

Its own module so that imports run one way, contract <- tables <- factory: `fastlb.table`
holds the Table contract and `check_members`, which `fastlb.maglev` and `fastlb.ring` import;
this module imports those two. When the factory lived in `fastlb.table`, each table imported
the module that imported it, and only imports deferred into the function kept that circle
from failing.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastlb.config import RoutingConfig
from fastlb.errors import TableError
from fastlb.limits import TABLE_KINDS
from fastlb.maglev import MaglevTable
from fastlb.ring import ClassicRing
from fastlb.table import Table

__all__ = ["build_table"]


def build_table(routing: RoutingConfig, members: Sequence[tuple[str, int]]) -> Table:
    """The table `routing.table` names, built from `members` with the configured parameters.

    A TableError says what is wrong with the members or the parameters; the config file
    refuses an unknown kind before this is reached, so the last error is for callers that
    build a RoutingConfig themselves."""
    if routing.table == "maglev":
        return MaglevTable(members, size=routing.maglev_size)
    if routing.table == "classic":
        return ClassicRing(members, probe=routing.classic_probe, hash=routing.classic_hash)
    known = ", ".join(TABLE_KINDS)
    raise TableError(f"unknown routing table {routing.table!r}: known tables are {known}")
