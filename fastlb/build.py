"""The table factory: the routing table the configuration names, built from members.

Its own module so that imports run one way, contract <- tables <- factory: `fastlb.table`
holds the Table contract and `check_members`, which `fastlb.maglev`, `fastlb.ring` and
`fastlb.ketama` import; this module imports those. When the factory lived in `fastlb.table`,
each table imported the module that imported it, and only imports deferred into the function
kept that circle from failing.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastlb.config import RoutingConfig
from fastlb.errors import TableError
from fastlb.ketama import KetamaTable
from fastlb.limits import TABLE_KINDS
from fastlb.maglev import MaglevTable
from fastlb.ring import ClassicRing
from fastlb.table import Table

__all__ = ["build_table", "table_info", "table_inputs"]


def build_table(routing: RoutingConfig, members: Sequence[tuple[str, int]]) -> Table:
    """The table `routing.table` names, built from `members` with the configured parameters.

    A TableError says what is wrong with the members or the parameters; the config file
    refuses an unknown kind before this is reached, so the last error is for callers that
    build a RoutingConfig themselves."""
    if routing.table == "maglev":
        return MaglevTable(members, size=routing.maglev_size)
    if routing.table == "classic":
        return ClassicRing(members, probe=routing.classic_probe, hash=routing.classic_hash)
    if routing.table == "ketama":
        # Labels: the static replicas' addresses (what nginx hashes); other members their name.
        return KetamaTable(members, dict(routing.labels))
    known = ", ".join(TABLE_KINDS)
    raise TableError(f"unknown routing table {routing.table!r}: known tables are {known}")


def table_inputs(routing: RoutingConfig) -> tuple[object, ...]:
    """What of `routing` `build_table` reads: when it changes, the table must be built again
    (the routing key and the balance factor are read per request, not by the table; the
    labels by the ketama table only, so a static replica that moves rebuilds no other)."""
    return (
        routing.table,
        routing.maglev_size,
        routing.classic_probe,
        routing.classic_hash,
        routing.labels if routing.table == "ketama" else (),
    )


def table_info(table: Table) -> tuple[str, str]:
    """(kind, fingerprint) of a built table. The kind is the table's own, not the config's: a
    reload that names another kind takes effect only at the next build."""
    if isinstance(table, MaglevTable):
        kind = "maglev"
    elif isinstance(table, ClassicRing):
        kind = "classic"
    elif isinstance(table, KetamaTable):
        kind = "ketama"
    else:
        kind = type(table).__name__
    return kind, table.fingerprint()
