"""Replica health as a pure state machine: signals in, transitions out, no sockets, no clock.

Three kinds of signal, from slow and sure to fast and blunt:
- heartbeats (GET /heartbeat every `interval`): HAProxy's rise/fall, so one lost heartbeat
  does not take a replica down and one good answer does not bring a flapping one back;
- passive: the data path saw a refused or reset connection. The replica becomes suspect: the
  next failed heartbeat takes it down at once, and the controller probes it now rather than at
  the next interval;
- immediate: the process exited or the container died. No heartbeat can change that.
"""

from __future__ import annotations

STARTING = "starting"
UP = "up"
DOWN = "down"


class Health:
    """One replica's health. Each method returns True when the state changed."""

    __slots__ = ("fails", "fall", "oks", "rise", "state")

    def __init__(self, rise: int, fall: int, state: str = STARTING) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.state = state
        self.oks = 0  # consecutive good heartbeats
        self.fails = 0  # consecutive failed heartbeats (or the passive equivalent)

    @property
    def up(self) -> bool:
        return self.state == UP

    def started(self) -> bool:
        """The provider saw it answer /heartbeat: it starts up, with clean counters."""
        changed = self.state != UP
        self.state, self.oks, self.fails = UP, 0, 0
        return changed

    def heartbeat(self, ok: bool) -> bool:
        if ok:
            self.oks += 1
            self.fails = 0
            if self.state != UP and self.oks >= self.rise:
                self.state = UP
                return True
            return False
        self.fails += 1
        self.oks = 0
        if self.state != DOWN and self.fails >= self.fall:
            self.state = DOWN
            return True
        return False

    def suspect(self) -> bool:
        """A refused or reset connection on the data path. Returns True when a probe is due
        now: the replica is up, and one more failure (that probe failing) takes it down."""
        if self.state != UP:
            return False
        self.fails = max(self.fails, self.fall - 1)
        self.oks = 0
        return True

    def died(self) -> bool:
        """The process or container is gone."""
        changed = self.state != DOWN
        self.state, self.oks, self.fails = DOWN, 0, self.fall
        return changed
