"""The outbox: writes queued during a loop round and made when it turns, in order."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from fastlb.proxy.outbox import MAX_QUEUED, Outbox


class Sink:
    """A transport's write, recording what reached it and when."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.log = log

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))


def run_round(steps: list[str]) -> list[list[tuple[str, bytes]]]:
    """Run the outbox on a real loop; return what was written after each step."""

    async def main() -> list[list[tuple[str, bytes]]]:
        log: list[tuple[str, bytes]] = []
        a, b = Sink("a", log), Sink("b", log)
        out = Outbox(asyncio.get_running_loop())
        seen = []
        for step in steps:
            if step == "turn":
                await asyncio.sleep(0)
            elif step == "flush":
                out.flush()
            elif step == "big":
                out.send(a.write, b"x" * (MAX_QUEUED + 1))
            else:
                sink = a if step[0] == "a" else b
                out.send(sink.write, step.encode())
            seen.append(list(log))
        return seen

    return uvloop.run(main())


def test_writes_wait_for_the_loop_to_turn_then_leave_in_order() -> None:
    seen = run_round(["a1", "b1", "a2", "turn"])
    assert seen[2] == []  # nothing written while the round's events are handled
    assert seen[3] == [("a", b"a1"), ("b", b"b1"), ("a", b"a2")]


def test_each_round_is_flushed_on_its_own() -> None:
    seen = run_round(["a1", "turn", "b1", "turn", "turn"])
    assert seen[1] == [("a", b"a1")]
    assert seen[2] == [("a", b"a1")]
    assert seen[4] == [("a", b"a1"), ("b", b"b1")]


def test_flush_writes_now_and_the_scheduled_turn_adds_nothing() -> None:
    # As before a connection closes: what it queued must leave first.
    seen = run_round(["a1", "b1", "flush", "turn"])
    assert seen[2] == [("a", b"a1"), ("b", b"b1")]
    assert seen[3] == seen[2]


def test_a_large_write_goes_at_once_after_what_was_queued_before_it() -> None:
    # Flow control must see a bulk transfer's bytes at once; order still holds.
    seen = run_round(["b1", "big", "a2", "turn"])
    assert [name for name, _ in seen[1]] == ["b", "a"]
    assert seen[1][1][1] == b"x" * (MAX_QUEUED + 1)
    assert seen[3][-1] == ("a", b"a2")


class Peer:
    """The server side of one real loopback connection (an asyncio protocol)."""

    def __init__(self, made: list[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def test_a_transport_closed_in_the_round_costs_no_other_connection_its_write() -> None:
    """Issue 11: a peer that resets is closed by uvloop when its connection_lost runs, which
    can be after a write to it was queued and before the round's flush. Writing to it raised
    RuntimeError out of flush, and every write queued after it (other clients') was lost."""

    async def main() -> tuple[bytes, bytes, int]:
        loop = asyncio.get_running_loop()
        made: list[asyncio.Transport] = []
        server = await loop.create_server(lambda: Peer(made), "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
        port = server.sockets[0].getsockname()[1]
        clients = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.settimeout(2.0)
            clients.append(sock)
            while len(made) < len(clients):
                await asyncio.sleep(0.001)
        before, gone, after = made
        out = Outbox(loop)
        # As uvloop does for a reset read: the transport is force-closed, and its
        # connection_lost (which closes the handle) is scheduled ahead of the round's flush,
        # which a write queued for it afterwards schedules...
        gone.abort()
        out.send(gone.write, b"lost")
        out.send(before.write, b"before")  # ...then writes for other connections
        out.send(after.write, b"after")
        await asyncio.sleep(0.01)
        out.flush()  # and nothing raises from a later flush either
        got = clients[0].recv(100), clients[2].recv(100)
        for sock in clients:
            sock.close()
        server.close()
        return got[0], got[1], out.dropped

    first, last, dropped = uvloop.run(main())
    assert (first, last) == (b"before", b"after")
    assert dropped == 1
