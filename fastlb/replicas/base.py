"""The replica-provider interface: whatever runs replicas, the balancer asks only this."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: Called with a replica's name the moment the provider sees it die on its own.
ExitCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Replica:
    """A running replica as the balancer knows it."""

    name: str
    host: str
    port: int
    weight: int = 1
    pid: int | None = None  # local processes only


class Provider(Protocol):
    """Starts and stops replicas by name. Docker containers come behind the same interface."""

    def names(self) -> list[str]:
        """The replicas the configuration asks for, in order."""
        ...

    def on_exit(self, callback: ExitCallback) -> None:
        """Register `callback(name)`, run on the event loop as soon as a replica this provider
        started dies without being asked to (a process exit, a container's `die` event)."""
        ...

    async def adopt(self) -> list[Replica]:
        """Replicas already running that belong to this balancer (Docker containers with its
        cluster label, left by an earlier run), now owned by this provider. [] elsewhere."""
        ...

    async def start(self, name: str) -> Replica:
        """Start `name` and return once it answers /heartbeat (ReplicaError otherwise)."""
        ...

    async def stop(self, name: str) -> None:
        """Stop `name`; stopping one that is not running is not an error."""
        ...

    def address(self, name: str) -> tuple[str, int]:
        ...

    async def close(self) -> None:
        """Stop every replica this provider started."""
        ...


HEARTBEAT_REQUEST = b"GET /heartbeat HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n"


async def heartbeat(host: str, port: int, timeout: float) -> bool:
    """One GET /heartbeat; True on a 200 within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(HEARTBEAT_REQUEST)
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return status_line.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 "))
