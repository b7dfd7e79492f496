"""Probing: each member's heartbeats, on a schedule or at once when the data path suspects it.

The prober owns the heartbeat tasks and what they count; it judges nothing itself beyond one
heartbeat: the verdict is the member's `Health` (rise and fall), and a change of it goes to the
controller's `on_change`, which decides what follows (routing, replacement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fastlb.config import HealthConfig
from fastlb.control.health import STARTING
from fastlb.control.members import Member
from fastlb.replicas.base import HeartbeatCheck, probe

log = logging.getLogger("fastlb.cluster")

#: Heartbeats that fastlb could not send for want of its own descriptors are logged at most
#: this often (seconds): at the limit every probe of every replica fails the same way.
OWN_FAILURE_LOG_EVERY = 1.0


class Prober:
    """Heartbeat tasks, one per member, and their counters."""

    def __init__(
        self, health: Callable[[], HealthConfig], on_change: Callable[[Member], None]
    ) -> None:
        #: The [health] table in force (a reload changes it; each probe reads it anew).
        self.health = health
        self.on_change = on_change
        self.failures: dict[str, int] = {}  # failed heartbeats by replica name
        #: Heartbeats not sent because fastlb itself was out of descriptors (or buffers,
        #: memory, local ports): no replica's health was judged by them.
        self.skipped = 0
        self._skipped_logged = 0  # `skipped` when that was last logged
        self._skipped_log_at = -OWN_FAILURE_LOG_EVERY  # loop time of that log line

    def watch(self, member: Member) -> None:
        """Probe `member` from now on (again, if its task ended)."""
        if member.probes is None or member.probes.done():
            member.probes = asyncio.ensure_future(self._loop(member))

    async def first(self, members: list[Member]) -> None:
        """One heartbeat for each member still `starting` (a static replica), so that those
        that answer are routed in the first table, and those that do not are not routed."""
        hc = self.health()

        async def one(member: Member) -> None:
            replica = member.replica
            if replica is None:
                return
            check = HeartbeatCheck.of(hc)
            beat = await probe(replica.host, replica.port, hc.timeout, replica.identity, check)
            if beat.ok and member.replica is replica and member.health.state == STARTING:
                member.health.started()

        await asyncio.gather(*(one(m) for m in members if m.health.state == STARTING))

    async def _loop(self, member: Member) -> None:
        """Heartbeats start `interval` apart (not `interval` after the last one ended), so a
        hung replica, whose probes each take the full timeout, is down after about
        fall x interval + timeout. A suspicion from the data path probes at once."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.health().interval
        while not member.removed:
            hc = self.health()
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(member.wake.wait(), delay)
            if member.wake.is_set():
                member.wake.clear()
            else:
                next_at = max(next_at + hc.interval, loop.time())
            replica = member.replica
            if replica is None or member.removed or member.healing is not None:
                continue
            check = HeartbeatCheck.of(hc)
            beat = await probe(replica.host, replica.port, hc.timeout, replica.identity, check)
            if member.replica is not replica or member.removed:
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
                    self.on_change(member)
                    continue
            else:
                self.failures[member.name] = self.failures.get(member.name, 0) + 1
                if beat.served_by is not None and beat.served_by != member.impostor:
                    member.impostor = beat.served_by
                    log.warning(
                        "%s: the heartbeat to %s:%d %s: another replica holds its port; "
                        "counted as a failed heartbeat",
                        member.name, replica.host, replica.port, beat.reason,
                    )
            if member.health.heartbeat(beat.ok):
                self.on_change(member)

    def _skipped(self, reason: str) -> None:
        """A heartbeat fastlb could not send for its own want of resources: counted, and
        logged at most once each OWN_FAILURE_LOG_EVERY seconds (with how many since)."""
        self.skipped += 1
        now = asyncio.get_running_loop().time()
        if now - self._skipped_log_at < OWN_FAILURE_LOG_EVERY:
            return
        count = self.skipped - self._skipped_logged
        self._skipped_logged = self.skipped
        self._skipped_log_at = now
        log.warning(
            "%d heartbeat(s) not sent: fastlb itself is out of resources (%s); replica health "
            "is left as it was; raise the descriptor limit (ulimit -n) if this lasts",
            count, reason,
        )
