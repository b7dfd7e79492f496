"""The control contract: what the admin HTTP routes, the admin socket and `fastlb ctl` may ask
of the running balancer, and the one error type they get back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastlb.errors import FastlbError


class ControlError(FastlbError):
    """A control request that was refused; nothing changed. The message says why."""


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica as an operator sees it."""

    name: str
    address: str  # host:port
    state: str  # "starting" | "up" | "down" | "draining" | "disabled"
    weight: int
    share: float  # fraction of the routing table (0 when out of it)
    in_flight: int
    requests: int
    restarts: int


@dataclass(frozen=True, slots=True)
class EventInfo:
    """Something that happened to a replica: started, died (with its last output), down, ..."""

    at: float  # time.time()
    kind: str
    detail: str


class ClusterControl(Protocol):
    """Every method either does all it was asked or raises ControlError and changes nothing."""

    def replicas(self) -> list[ReplicaInfo]:
        """All replicas, in name order."""
        ...

    def history(self, name: str) -> list[EventInfo]:
        """The replica's recent events, oldest first. An unknown name: ControlError."""
        ...

    def table_shares(self) -> dict[str, float]:
        """Share of the routing table per replica in it."""
        ...

    def table_info(self) -> tuple[str, str] | None:
        """(kind, fingerprint) of the routing table in place (None when there is none): equal
        fingerprints on two balancers mean they send every key to the same replica."""
        ...

    async def add(self, names: list[str]) -> None:
        """Start replicas with these names; returns once they answer /heartbeat and are in the
        table. A name in use or invalid, or going over max_replicas: ControlError."""
        ...

    async def remove(self, names: list[str]) -> None:
        """Take these replicas out of the table, let their requests finish (drain_timeout),
        stop them. An unknown name: ControlError."""
        ...

    async def drain(self, name: str) -> None:
        """Out of the table for new requests; stays running (enable brings it back)."""
        ...

    def enable(self, name: str) -> None:
        """Back into the table (after disable or drain), if healthy."""
        ...

    def disable(self, name: str) -> None:
        """Out of the table at once, in-flight requests continue."""
        ...

    def set_weight(self, name: str, weight: int) -> None:
        ...

    async def reload(self) -> str:
        """Re-read the config file and apply it; returns a one-line summary."""
        ...
