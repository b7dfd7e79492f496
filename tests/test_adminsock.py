"""The admin unix socket, for real: a socket file on a temporary path, clients over the wire,
the in-memory cluster from test_commands behind it, on uvloop as in production."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from fastlb.control.adminsock import MAX_LINE, AdminSocket, AdminSocketError, frame
from fastlb.errors import FastlbError
from tests.test_commands import FakeCluster


@pytest.fixture
def path(tmp_path: Path) -> Iterator[str]:
    # tmp_path can be long; a unix socket path may not be (107 bytes).
    short = Path("/tmp") / f"fastlb-test-{os.getpid()}-{tmp_path.name[-20:]}"
    short.mkdir()
    try:
        yield str(short / "admin.sock")
    finally:
        for entry in short.iterdir():
            entry.unlink()
        short.rmdir()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: str) -> Client:
        return cls(*await asyncio.open_unix_connection(path))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> str:
        """One answer: lines up to the empty line that ends it."""
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            assert line.endswith(b"\n"), f"connection closed mid-answer after {lines}"
            if line == b"\n":
                return "\n".join(lines)
            lines.append(line.decode().rstrip("\n"))

    async def ask(self, line: str) -> str:
        self.send(line.encode() + b"\n")
        return await self.answer()

    async def closed(self) -> bool:
        """Whether the server closed the connection (EOF) with nothing more to read."""
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def serve(
    path: str, test: Callable[[AdminSocket, FakeCluster], Awaitable[None]], cluster: FakeCluster | None = None
) -> None:
    """Run `test` against a started AdminSocket; close it afterwards whatever happens."""
    fake = cluster or FakeCluster()

    async def main() -> None:
        admin = AdminSocket(fake)
        await admin.start(path)
        try:
            await test(admin, fake)
        finally:
            await admin.close()

    uvloop.run(main())


def test_socket_file_is_private_whatever_the_umask(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert admin.path == path

    old = os.umask(0)
    try:
        serve(path, test)
    finally:
        os.umask(old)
    assert os.umask(old) == old  # and the process umask is back as it was


def test_several_commands_on_one_connection_answer_in_order(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        # All at once: each runs after the one before has finished, answers in order.
        client.send(b"add replica Server4\r\nshow table\ndisable Server1\nset weight Server2 3\nshow replicas\n")
        assert await client.answer() == "ok: added Server4"
        table = (await client.answer()).splitlines()
        assert table[:5] == [
            "NAME     SHARE", "Server1  25.0%", "Server2  25.0%", "Server3  25.0%", "Server4  25.0%"
        ]
        assert table[5].startswith("table: maglev, fingerprint ")
        assert await client.answer() == "ok: Server1 disabled"
        assert await client.answer() == "ok: Server2 weight 1 -> 3"
        replicas = (await client.answer()).splitlines()
        assert replicas[0].split()[:4] == ["NAME", "ADDRESS", "STATE", "WEIGHT"]
        assert [line.split()[:4] for line in replicas[1:]] == [
            ["Server1", "127.0.0.1:40001", "disabled", "1"],
            ["Server2", "127.0.0.1:40002", "up", "3"],
            ["Server3", "127.0.0.1:40003", "up", "1"],
            ["Server4", "127.0.0.1:40004", "up", "1"],
        ]
        # And later ones on the same connection still work.
        assert await client.ask("enable Server1") == "ok: Server1 enabled"
        await client.close()

    serve(path, test)


def test_errors_answer_and_leave_state_and_connection_as_they_were(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        before = await client.ask("show replicas")
        assert await client.ask("drain nosuch") == 'error: no replica named "nosuch"'
        assert await client.ask("add replica Server1") == (
            'error: a replica named "Server1" already exists'
        )
        assert await client.ask("set weight Server1 x") == (
            'error: set weight: expected an integer from 1 to 256, got "x"; usage: set weight NAME W'
        )
        assert await client.ask("shw") == 'error: unknown command "shw"; did you mean "show replicas"?'
        assert await client.ask("") == 'error: empty command; "help" lists the commands'
        client.send(b"show \xff\n")
        assert await client.answer() == "error: the line is not UTF-8 text"
        assert await client.ask("show replicas") == before
        await client.close()

    serve(path, test)


def test_a_bug_in_the_cluster_is_an_answer_not_a_dropped_connection(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        cluster.broken = True
        client = await Client.open(path)
        assert await client.ask("reload") == (
            "error: internal error (RuntimeError: the reload machinery is broken); see the fastlb log"
        )
        assert (await client.ask("help")).startswith("show replicas")
        await client.close()

    serve(path, test)


def test_help_on_the_socket(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        assert len((await client.ask("help")).splitlines()) == 12
        await client.close()

    serve(path, test)


def test_quit_closes_the_connection(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        client.send(b"show table\nquit\nshow table\n")
        assert (await client.answer()).startswith("NAME")
        assert await client.closed()  # the line after quit is never answered
        await client.close()

    serve(path, test)


def test_a_last_line_without_newline_is_answered(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        client.send(b"disable Server2")
        client.writer.write_eof()
        assert await client.answer() == "ok: Server2 disabled"
        assert await client.closed()
        await client.close()

    serve(path, test)


def test_a_line_over_4_kib_is_refused_and_closes(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        # Exactly the limit is still a line (here: an unknown command, answered)...
        assert (await client.ask("x" * MAX_LINE)).startswith('error: unknown command "xxx')
        # ...one byte more is not, and the stream cannot be trusted after it.
        client.send(b"y" * (MAX_LINE + 1) + b"\nshow table\n")
        assert await client.answer() == f"error: line longer than {MAX_LINE} bytes; closing the connection"
        assert await client.closed()
        await client.close()

    serve(path, test)


def test_a_long_line_without_newline_is_refused_too(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        client.send(b"z" * (3 * MAX_LINE))  # no newline: the server must not wait for one
        assert await client.answer() == f"error: line longer than {MAX_LINE} bytes; closing the connection"
        assert await client.closed()
        await client.close()

    serve(path, test)


def test_connections_are_independent(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        cluster.gate = asyncio.Event()
        slow = await Client.open(path)
        slow.send(b"add replica Server4\nshow table\n")
        other = await Client.open(path)
        # The add waits on the gate; another connection is answered meanwhile.
        assert (await other.ask("show table")).count("\n") == 4
        cluster.gate.set()
        assert await slow.answer() == "ok: added Server4"
        assert (await slow.answer()).count("\n") == 5
        await slow.close()
        await other.close()

    serve(path, test)


def test_close_ends_connections_and_cancels_a_running_command(path: str) -> None:
    async def main() -> None:
        cluster = FakeCluster()
        cluster.gate = asyncio.Event()  # never set: the add would wait forever
        admin = AdminSocket(cluster)
        await admin.start(path)
        idle = await Client.open(path)
        busy = await Client.open(path)
        busy.send(b"add replica Server4\n")
        assert await idle.ask("show table")  # both connections are being served
        await asyncio.wait_for(admin.close(), 5)
        assert await idle.closed()
        assert await busy.closed()
        assert "Server4" not in cluster.members
        assert not os.path.exists(path)
        await admin.close()  # twice is harmless
        await idle.close()
        await busy.close()

    uvloop.run(main())


def test_socket_file_removed_on_close(path: str) -> None:
    async def main() -> None:
        admin = AdminSocket(FakeCluster())
        await admin.start(path)
        assert os.path.exists(path)
        await admin.close()
        assert not os.path.exists(path)
        # It can start again on the same path afterwards.
        await admin.start(path)
        await admin.close()

    uvloop.run(main())


def test_close_leaves_a_file_that_is_no_longer_ours(path: str) -> None:
    async def main() -> None:
        admin = AdminSocket(FakeCluster())
        await admin.start(path)
        os.unlink(path)
        Path(path).write_text("someone else's\n")
        await admin.close()
        assert Path(path).read_text() == "someone else's\n"

    uvloop.run(main())


def test_a_stale_socket_file_is_replaced(path: str) -> None:
    # What a killed fastlb leaves: the file of a socket nobody listens on any more.
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        client = await Client.open(path)
        assert await client.ask("disable Server1") == "ok: Server1 disabled"
        await client.close()

    serve(path, test)


def test_a_live_socket_is_refused_and_keeps_working(path: str) -> None:
    async def test(admin: AdminSocket, cluster: FakeCluster) -> None:
        second = AdminSocket(FakeCluster())
        with pytest.raises(AdminSocketError) as caught:
            await second.start(path)
        assert str(caught.value) == (
            f"admin socket {path}: another fastlb is using it (something answers on it); "
            "stop that one, or set [admin] socket to another path"
        )
        assert isinstance(caught.value, FastlbError)  # the CLI reports those and exits 1
        await second.close()  # never started: nothing to do
        client = await Client.open(path)
        assert await client.ask("disable Server3") == "ok: Server3 disabled"
        await client.close()

    serve(path, test)


def test_a_file_that_is_not_a_socket_is_never_replaced(path: str) -> None:
    Path(path).write_text("precious\n")

    async def main() -> None:
        with pytest.raises(AdminSocketError, match="a file that is not a socket is in the way"):
            await AdminSocket(FakeCluster()).start(path)

    uvloop.run(main())
    assert Path(path).read_text() == "precious\n"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "missing/admin.sock",
            "cannot listen: No such file or directory; create the directory, or set [admin] "
            "socket to a path in an existing one",
        ),
        ("x" * 120, "unix sockets allow at most 107; set [admin] socket to a shorter path"),
    ],
)
def test_an_unusable_path_says_what_to_do(path: str, where: str, message: str) -> None:
    bad = os.path.join(os.path.dirname(path), where)

    async def main() -> None:
        with pytest.raises(AdminSocketError) as caught:
            await AdminSocket(FakeCluster()).start(bad)
        assert str(caught.value).startswith(f"admin socket {bad}: ")
        assert message in str(caught.value)

    uvloop.run(main())


def test_frame_never_lets_an_answer_end_early() -> None:
    assert frame("ok: done") == b"ok: done\n\n"
    assert frame("a\n\nb\r\n") == b"a\nb\n\n"
    assert frame("") == b"\n"
