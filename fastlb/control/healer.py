"""Healing: a member that died or stayed down is replaced, with a backoff if it keeps dying.

Only for providers whose replicas fastlb runs (local processes, containers): a static replica
has nothing of fastlb's behind it, and its heartbeats alone bring it back. By default the
replacement takes the member's own name, so its keys come back to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from fastlb.config import HealthConfig
from fastlb.control.health import DOWN
from fastlb.control.members import Events, Member
from fastlb.errors import FastlbError
from fastlb.replicas.base import Provider, Replica

log = logging.getLogger("fastlb.cluster")


class Healer:
    """Owns each member's replacement task (`Member.healing`) and the restart count."""

    def __init__(
        self,
        members: dict[str, Member],
        provider: Provider,
        health: Callable[[], HealthConfig],
        events: Events,
        running: Callable[[Member, Replica], None],
        publish: Callable[[], Awaitable[None]],
    ) -> None:
        self.members = members  # the controller's, shared: renamed here on replace_with random
        self.provider = provider
        self.health = health
        self.events = events
        self.running = running
        self.publish = publish
        self.restarts = 0
        self.closing = False

    def heal(self, member: Member, delay: float) -> None:
        """Replace `member` after `delay` unless it comes back (or is removed) first."""
        if member.healing is None and not member.removed and not self.closing:
            member.healing = asyncio.ensure_future(self._replace(member, delay))

    async def _replace(self, member: Member, delay: float) -> None:
        hc = self.health()
        try:
            await asyncio.sleep(delay)
            if member.health.up or member.removed:
                return  # it came back by itself
            while not member.removed and not self.closing:
                if time.monotonic() - member.started_at < hc.crash_window:
                    member.crashes += 1
                else:
                    member.crashes = 0
                if member.crashes > 1:
                    # The first early death is replaced at once (it may have been killed);
                    # one that keeps dying young waits longer each time instead of looping hot.
                    wait = min(hc.backoff * 2 ** (member.crashes - 2), hc.backoff_max)
                    self.events.add("crash-loop", member.name, f"restarting in {wait:g} s")
                    await asyncio.sleep(wait)
                try:
                    if await self._restart(member):
                        return
                except Exception as exc:
                    # Stopping the old one failed, or something not foreseen: never an
                    # unretrieved task exception, never a retry without the backoff above.
                    detail = f"{type(exc).__name__}: {exc}"
                    if detail != member.last_failure:
                        log.exception("%s: replacement failed", member.name)
                    member.started_at = time.monotonic()
                    self._failed(member, detail)
        finally:
            member.healing = None
            if member.health.state == DOWN and not member.removed and not self.closing:
                # It died again while this replacement was being put in place.
                self.heal(member, delay=0.0)

    async def _restart(self, member: Member) -> bool:
        old = member.name
        await self.provider.stop(old)  # a hung process is killed, a dead one is reaped
        if member.upstream is not None:
            member.upstream.close_idle()
        name = old
        if self.health().replace_with == "random":
            name = self._fresh_name()
            del self.members[old]
            member.name = name
            self.members[name] = member
        try:
            replica = await self.provider.start(name)
        except (FastlbError, OSError) as exc:
            # FastlbError: the provider's own account (EMFILE on Popen is one, for the local
            # provider); OSError: a provider that let one through. Either way the loop in
            # _replace waits its backoff before the next try.
            member.started_at = time.monotonic()
            self._failed(member, str(exc))
            return False
        member.last_failure = ""
        member.restarts += 1
        self.restarts += 1
        self.running(member, replica)
        detail = f"{replica.host}:{replica.port}" + (f", was {old}" if name != old else "")
        self.events.add("replaced", name, detail)
        await self.publish()
        return True

    def _failed(self, member: Member, detail: str) -> None:
        """A failed restart: an event each time, a log line only when the reason changes
        (at the descriptor limit every try fails the same way)."""
        repeat = detail == member.last_failure
        member.last_failure = detail
        self.events.add("restart-failed", member.name, detail, quiet=repeat)

    def _fresh_name(self) -> str:
        while True:
            name = f"Server{random.randrange(100000, 1000000)}"
            if name not in self.members:
                return name
