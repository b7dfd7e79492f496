"""The replica side of the data path on real loopback sockets: the pool never hands out a
connection that cannot be written, a refused connect is remembered, fastlb's own resource
failures are told apart from a replica's, and counters survive a replacement."""

from __future__ import annotations

import asyncio
import errno
from time import monotonic

import uvloop

from fastlb.errors import own_resource_error
from fastlb.proxy.upstream import REFUSED_HOLD, BackendConnection, Upstream
from tests.conftest import free_port


async def _pooled(server_port: int) -> tuple[Upstream, BackendConnection]:
    """An upstream with one connection that went back to its pool."""
    upstream = Upstream("S1", "127.0.0.1", server_port)
    conn = await upstream.connect()
    upstream.release(conn)
    assert upstream.idle == [conn]
    return upstream, conn


def test_a_pooled_connection_whose_transport_is_closing_is_not_handed_out() -> None:
    # uvloop closes a transport at once but calls connection_lost on a later loop round (so
    # does asyncio). Handed out in between, the request's write raises "the handler is
    # closed" inside the outbox's flush, and the writes queued after it for other clients
    # are lost: under load, when a replica died, that was clients waiting until timeout.
    async def scenario() -> tuple[BackendConnection | None, bool]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            upstream, conn = await _pooled(port)
            assert conn.transport is not None
            conn.transport.close()  # no await: connection_lost has not run yet
            got = upstream.acquire()
            return got, conn.closed
        finally:
            server.close()

    got, closed = uvloop.run(scenario())
    assert got is None
    assert closed


def test_a_connection_the_replica_closed_leaves_the_pool_at_eof() -> None:
    async def scenario() -> tuple[list[BackendConnection], BackendConnection | None]:
        writers: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(
            lambda r, w: writers.append(w), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        try:
            upstream, conn = await _pooled(port)
            while not writers:
                await asyncio.sleep(0.001)
            writers[0].close()  # the replica closes its end of the idle connection
            while not conn.closed:
                await asyncio.sleep(0.001)
            return list(upstream.idle), upstream.acquire()
        finally:
            server.close()

    idle, got = uvloop.run(scenario())
    assert idle == [] and got is None


def test_a_refused_connect_marks_the_replica_for_a_moment() -> None:
    port = free_port()  # nothing listens there

    async def scenario() -> tuple[float, float, int, type[BaseException]]:
        upstream = Upstream("S1", "127.0.0.1", port)
        try:
            await upstream.connect()
        except OSError as exc:
            error: type[BaseException] = type(exc)
        return upstream.refused_until, monotonic(), upstream.connect_failures, error

    until, now, failures, error = uvloop.run(scenario())
    assert error is ConnectionRefusedError
    assert now < until <= now + REFUSED_HOLD
    assert failures == 1


def test_own_resource_errors_are_not_the_replicas() -> None:
    for code in (errno.EMFILE, errno.ENFILE):
        assert own_resource_error(OSError(code, "Too many open files"))
    assert not own_resource_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert not own_resource_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not own_resource_error(TimeoutError())
    assert not own_resource_error(None)


def test_counts_made_on_a_replaced_upstream_still_reach_its_successor() -> None:
    # An exchange that started on a replica which then died and was replaced ends on the old
    # Upstream object (its last attempt was there); its status must still be counted under
    # the replica's name, which /metrics reads from the successor.
    old = Upstream("S1", "127.0.0.1", 1)
    old.status_counts[200] += 5
    old.duration_counts[0] += 5
    new = Upstream("S1", "127.0.0.1", 2)
    new.inherit(old)
    old.status_counts[502] += 1  # after the replacement
    old.duration_counts[1] += 1
    new.status_counts[200] += 1
    assert new.responses == {200: 6, 502: 1}
    assert new.duration_counts[:2] == [5, 1]
