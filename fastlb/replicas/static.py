"""Replicas that something else runs (the benchmark's nginx backends, a fleet elsewhere):
fastlb balances them and never starts or stops them."""

from __future__ import annotations

from collections.abc import Sequence

from fastlb.config import HealthConfig, ReplicasConfig
from fastlb.errors import ReplicaError
from fastlb.replicas.base import ExitCallback, MoveCallback, Replica


class StaticProvider:
    # Nothing is started here: a static replica that is down stays down (and is probed) until
    # whoever runs it brings it back; "replacing" it would only declare it up again unseen.
    replaceable = False

    def __init__(self, config: ReplicasConfig) -> None:
        self._specs = {spec.name: spec for spec in config.static}

    def names(self) -> list[str]:
        return list(self._specs)

    def reconfigure(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        # The entries of the reloaded file: an entry added there can be started (named) now.
        self._specs = {spec.name: spec for spec in config.static}

    def on_exit(self, callback: ExitCallback) -> None:
        """Static replicas are not ours: their failures show in heartbeats only."""

    def on_move(self, callback: MoveCallback) -> None:
        """Addresses change only through `start` here."""

    def new_names(self, count: int, running: Sequence[str]) -> list[str] | None:
        return None  # fastlb names its replicas

    def removal(self, count: int, running: Sequence[str]) -> list[str] | None:
        return None  # any replica may be stopped

    async def adopt(self) -> list[Replica]:
        return []

    async def start(self, name: str) -> Replica:
        spec = self._specs.get(name)
        if spec is None:
            raise ReplicaError(f"replica {name!r} is not in [[replicas.static]]; add it there")
        return Replica(spec.name, spec.host, spec.port, spec.weight)

    async def stop(self, name: str) -> None:
        """Static replicas are not ours to stop."""

    def address(self, name: str) -> tuple[str, int]:
        spec = self._specs[name]
        return spec.host, spec.port

    async def close(self) -> None:
        """Nothing was started."""
