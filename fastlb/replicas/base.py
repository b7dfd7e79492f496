"""The replica-provider interface: whatever runs replicas, the balancer asks only this."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from fastlb.errors import own_resource_error

if TYPE_CHECKING:
    from fastlb.config import HealthConfig, ReplicasConfig

#: Called with a replica's name and what is known of its end (its exit status, its last lines
#: of output) the moment the provider sees it die on its own.
ExitCallback = Callable[[str, str], None]

#: Called with a replica the engine put at a new address under the same name (a Swarm task
#: replaced in its slot, on a new port): the member moves there, as a static replica whose
#: address changed in a reload does.
MoveCallback = Callable[["Replica"], None]


@dataclass(frozen=True, slots=True)
class Replica:
    """A running replica as the balancer knows it."""

    name: str
    host: str
    port: int
    weight: int = 1
    pid: int | None = None  # local processes only
    #: The name it answers with in X-Served-By, when fastlb gave it that name (local and Docker
    #: replicas); None for a static replica, whose label in fastlb's config is the operator's
    #: and need not be what the program behind it calls itself.
    identity: str | None = None


class Provider(Protocol):
    """Starts and stops replicas by name. Docker containers come behind the same interface."""

    #: Whether `start` makes a new replica (a process, a container) or only names one that
    #: something else runs (static): a replica that stays down is replaced only in the first
    #: case; in the second fastlb keeps probing it and takes it back when it answers.
    replaceable: bool

    def names(self) -> list[str]:
        """The replicas the configuration asks for, in order."""
        ...

    def reconfigure(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        """Take the [replicas] table of a reloaded config (called before the replicas it adds
        are started): what a replica is started from from now on (a static entry's address,
        latency, weights, the image, the command), and the [health] heartbeat a new replica
        must answer before `start` returns. Replicas running now keep running as they were;
        what cannot change without a restart of fastlb is logged as such and kept."""
        ...

    def on_exit(self, callback: ExitCallback) -> None:
        """Register `callback(name, detail)`, run on the event loop as soon as a replica this
        provider started dies without being asked to (a process exit, a container's `die`
        event); `detail` says how it ended, with its last lines of output when they are known."""
        ...

    def on_move(self, callback: MoveCallback) -> None:
        """Register `callback(replica)`, run on the event loop when the engine runs `replica`
        (a name this provider started) at a new address on its own: Swarm replacing a dead
        task in its slot. A no-op where fastlb itself starts every replica (local, Docker) or
        runs none (static): there an address changes only through `start`."""
        ...

    def new_names(self, count: int, running: Sequence[str]) -> list[str] | None:
        """The names the engine gives the next `count` replicas when it names them itself
        (Swarm: the next slots, `<service>.<slot>`), or None when fastlb may choose any name."""
        ...

    def removal(self, count: int, running: Sequence[str]) -> list[str] | None:
        """The replicas the engine takes away when scaled down by `count` (Swarm: the highest
        slots), or None when fastlb may stop any of them."""
        ...

    async def adopt(self) -> list[Replica]:
        """Replicas already running that belong to this balancer (Docker containers with its
        cluster label, left by an earlier run), now owned by this provider. [] elsewhere."""
        ...

    async def start(self, name: str) -> Replica:
        """Start `name` and return once it answers /heartbeat (ReplicaError otherwise). A
        provider that is not `replaceable` (static) only names the replica and returns at
        once: the controller then routes it after its first good heartbeat."""
        ...

    async def stop(self, name: str) -> None:
        """Stop `name`; stopping one that is not running is not an error."""
        ...

    def address(self, name: str) -> tuple[str, int]:
        ...

    async def close(self) -> None:
        """Stop every replica this provider started."""
        ...


_MAX_HEAD: Final = 16384  # a heartbeat answer's head; past this it is not a heartbeat answer
_MAX_INTERIM: Final = 8  # 1xx answers read before the final one; past that, judged on the last


@dataclass(frozen=True, slots=True)
class HeartbeatCheck:
    """What a heartbeat asks ([health] method, path, host) and which final statuses are good
    (`expect`, inclusive). The default is the demo replica's: GET /heartbeat, 200-399."""

    method: str = "GET"
    path: str = "/heartbeat"
    host: str = ""  # the Host header; "" = the address the heartbeat connects to
    expect: tuple[int, int] = (200, 399)

    @staticmethod
    def of(health: HealthConfig) -> HeartbeatCheck:
        """The check a [health] table asks for."""
        return HeartbeatCheck(health.method, health.path, health.host, health.expect)

    def request(self, host: str, port: int) -> bytes:
        """The heartbeat request. Connection: close, because one answer is all it reads."""
        authority = self.host or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: {authority}\r\n"
            "User-Agent: fastlb-heartbeat\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")

    def describe(self) -> str:
        """`GET /heartbeat` as messages name it."""
        return f"{self.method} {self.path}"

    def wanted(self) -> str:
        low, high = self.expect
        return str(low) if low == high else f"{low}-{high}"


DEFAULT_CHECK: Final = HeartbeatCheck()


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat found.

    `ok`: the replica answered with an expected status, as itself. `own`: the probe could not
    be made because fastlb is out of descriptors (or buffers, memory, local ports): it says
    nothing about the replica, so neither `ok` nor a failure may be counted. `served_by`: the
    name the answer gave in X-Served-By, when it gave one. `reason`: why it failed, for the log.
    """

    ok: bool
    own: bool = False
    served_by: str | None = None
    reason: str = ""


async def probe(
    host: str,
    port: int,
    timeout: float,
    identity: str | None = None,
    check: HeartbeatCheck = DEFAULT_CHECK,
) -> Beat:
    """One heartbeat (`check`: GET /heartbeat unless [health] says otherwise). Good on an
    expected status within `timeout` that, when `identity` is given, does not name another
    replica in its X-Served-By: a port answered by someone else (a replica that took the port
    of one that died, say) is not that replica, and routing its keys there would send them to
    the wrong place. The identity is checked only when the header is there: an answer without
    X-Served-By (a third-party app run through [replicas] command, another program behind a
    static replica) is judged by its status alone."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=_MAX_HEAD)
            try:
                writer.write(check.request(host, port))
                for _ in range(_MAX_INTERIM + 1):
                    try:
                        head = await reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError as exc:
                        head = exc.partial  # closed early: what it did say still counts
                        break
                    except asyncio.LimitOverrunError:
                        head = await reader.read(_MAX_HEAD)  # judged on its status line
                        break
                    # RFC 9110 §15.2: interim 1xx answers come before the final one.
                    if not head.startswith((b"HTTP/1.1 1", b"HTTP/1.0 1")):
                        break
            finally:
                writer.close()
    except TimeoutError:
        return Beat(False, reason=f"no answer within {timeout:g} s")
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Beat(False, own=own_resource_error(exc), reason=reason)
    return judge(head, identity, check.expect)


def judge(head: bytes, identity: str | None, expect: tuple[int, int] = (200, 399)) -> Beat:
    """The verdict on a heartbeat answer's head (sans-IO: the tests feed it bytes)."""
    lines = head.split(b"\r\n")
    status = lines[0]
    low, high = expect
    # RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    code = status[9:12]
    good = (
        status.startswith((b"HTTP/1.1 ", b"HTTP/1.0 "))
        and code.isdigit()
        and status[12:13] == b" "
        and low <= int(code) <= high
    )
    if not good:
        if not status:
            return Beat(False, reason="closed the connection without answering")
        wanted = str(low) if low == high else f"{low}-{high}"
        return Beat(False, reason=f"answered {status[:80].decode('latin-1')!r}, not {wanted}")
    served_by: str | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"x-served-by":
            served_by = value.strip(b" \t").decode("latin-1")
            if identity is not None and served_by != identity:
                return Beat(
                    False,
                    served_by=served_by,
                    reason=f"answered as {served_by!r}, not {identity!r}",
                )
    return Beat(True, served_by=served_by)


async def heartbeat(
    host: str,
    port: int,
    timeout: float,
    identity: str | None = None,
    check: HeartbeatCheck = DEFAULT_CHECK,
) -> bool:
    """One heartbeat; True on an expected status within `timeout` from `identity` (`probe`)."""
    return (await probe(host, port, timeout, identity, check)).ok
