"""Membership: the replicas the controller keeps, each with two explicit states, and the
record of what happened to them.

A member's state is two facts that change for different reasons, kept apart as HAProxy keeps
a server's administrative and operational states:

- `health` (fastlb.control.health): starting, up or down, from heartbeats, the data path's
  suspicion and the provider's exit notices;
- `admin`: what an operator or a reload asked: ENABLED, DISABLED (kept, probed, not picked),
  DRAINING (not picked; being removed once its requests finish) or REMOVED (stopping: no task
  of it may act any more).

One property joins them for the data path (`routable`, which `Upstream.up` carries) and one
for people (`state`, what /status and the admin socket show).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from fastlb.control.health import Health
from fastlb.proxy.upstream import Upstream
from fastlb.replicas.base import Replica

__all__ = ["DISABLED", "DRAINING", "ENABLED", "REMOVED", "Event", "Events", "Member"]

log = logging.getLogger("fastlb.cluster")

ENABLED: Final = "enabled"
DISABLED: Final = "disabled"
DRAINING: Final = "draining"
REMOVED: Final = "removed"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to the cluster, for the log and the status page."""

    at: float  # time.time()
    kind: str  # started, died, down, up, replaced, added, removed, reloaded, crash-loop, ...
    replica: str
    detail: str = ""


class Events(deque[Event]):
    """The last events, oldest first, for the status page; each is logged as it is added."""

    def __init__(self, keep: int = 500) -> None:
        super().__init__(maxlen=keep)

    def add(self, kind: str, replica: str, detail: str = "", *, quiet: bool = False) -> None:
        """Record an event (`quiet`: a repeat, recorded but not logged again)."""
        self.append(Event(time.time(), kind, replica, detail))
        if not quiet:
            log.info("%s %s%s", replica, kind, f": {detail}" if detail else "")


class Member:
    """One replica as the controller tracks it across restarts (its name is its identity:
    a replacement under the same name is the same member, with a new `replica` and
    `upstream`)."""

    __slots__ = (
        "admin",
        "crashes",
        "healing",
        "health",
        "impostor",
        "last_failure",
        "name",
        "probes",
        "replica",
        "restarts",
        "started_at",
        "upstream",
        "wake",
        "weight",
    )

    def __init__(self, name: str, weight: int, health: Health) -> None:
        self.name = name
        self.weight = weight
        self.health = health
        self.admin = ENABLED
        self.replica: Replica | None = None
        self.upstream: Upstream | None = None
        self.restarts = 0
        self.crashes = 0  # consecutive deaths within crash_window of a start
        self.started_at = 0.0
        self.probes: asyncio.Task[None] | None = None
        self.healing: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()  # set to probe now rather than at the next interval
        self.impostor = ""  # who answered its heartbeats instead of it (logged once), or ""
        self.last_failure = ""  # the last restart failure logged (a repeat is not logged)

    @property
    def removed(self) -> bool:
        return self.admin == REMOVED

    @property
    def in_table(self) -> bool:
        """Whether the table lists it: from its first start until it is removed, up or not
        (its health is read when a request picks it)."""
        return self.upstream is not None and self.admin != REMOVED

    @property
    def routable(self) -> bool:
        """Whether a request may pick it now (what `Upstream.up` tells the data path)."""
        return self.upstream is not None and self.health.up and self.admin == ENABLED

    @property
    def state(self) -> str:
        """The one word the status page and the admin socket show."""
        if self.admin == DRAINING or self.admin == DISABLED:
            return self.admin
        return self.health.state
