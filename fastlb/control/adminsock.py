"""The admin unix socket: `[admin] socket = PATH` lets an operator (or `fastlb ctl`) run
commands on the running balancer, in the spirit of HAProxy's runtime API.

Wire protocol: one command per line (UTF-8, "\\n" or "\\r\\n"); each answer is its text lines
followed by one empty line, which is how a client knows an answer is complete (an answer never
holds an empty line itself). A connection may send any number of commands, also several at once:
they run one at a time, and their answers come back in order. `quit` closes the connection; a
line longer than MAX_LINE bytes is answered with an error and the connection is closed, because
the rest of the stream can no longer be split into the lines the client meant.

Access control is the file's mode: 0600, so only the user fastlb runs as can connect. Admin
traffic is rare and small, so asyncio streams are used here rather than raw protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat

from fastlb.control.api import ClusterControl
from fastlb.control.commands import (
    Command,
    CommandError,
    Quit,
    changes_state,
    execute,
    parse_command,
)
from fastlb.errors import FastlbError

__all__ = ["MAX_LINE", "AdminSocket", "AdminSocketError", "frame"]

log = logging.getLogger("fastlb")

MAX_LINE = 4096  # bytes in one command line, without its line ending
_MODE = 0o600
# sun_path holds 108 bytes on Linux, its terminating NUL included.
_MAX_PATH = 107


class AdminSocketError(FastlbError):
    """The admin socket could not be set up; the message names the path and what to do."""


def frame(text: str) -> bytes:
    """An answer as sent: its lines, then the empty line that ends it. Empty lines inside the
    text (a multi-line error from somewhere deep) are dropped, since a client would take the
    first of them for the end of the answer and read the rest as the next one."""
    lines = [line for line in text.replace("\r", "").split("\n") if line.strip()]
    return "".join(f"{line}\n" for line in lines).encode() + b"\n"


class AdminSocket:
    """Serves commands for one cluster on a unix socket path, from `start` until `close`."""

    def __init__(self, cluster: ClusterControl) -> None:
        self._cluster = cluster
        self._server: asyncio.AbstractServer | None = None
        self._path = ""
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we bound
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> str:
        return self._path

    async def start(self, path: str) -> None:
        """Listen on `path`. A socket file left there by a fastlb that exited is replaced; one
        something still answers on is not (AdminSocketError), nor is any other kind of file."""
        if self._server is not None:
            raise AdminSocketError(f"admin socket: already listening on {self._path}")
        sock, identity = _bind(path)
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            _unlink_if_same(path, identity)
            raise
        self._path = path
        self._inode = identity
        log.info("admin socket on %s", path)

    async def close(self) -> None:
        """Stop listening, end every connection and remove the socket file. A command still
        running is cancelled: the balancer is going away, and its own shutdown settles the
        replicas; waiting for an `add` to finish would only delay the exit."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        _unlink_if_same(self._path, self._inode)
        self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            # A connection accepted just before close() may only get here after it: it would
            # escape the cancellation and keep talking to a cluster that is shutting down.
            if self._server is not None:
                await self._converse(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or we are closing: nobody is left to tell
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: read a line, answer it, repeat. Reading the next line only after the
        answer is written is what keeps commands sequential and answers in order."""
        while True:
            last = False
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                # End of input. A last command without its newline (`printf 'show table' | nc`)
                # is still a command.
                if not exc.partial.strip():
                    return
                raw, last = exc.partial, True
            except asyncio.LimitOverrunError:
                writer.write(
                    frame(f"error: line longer than {MAX_LINE} bytes; closing the connection")
                )
                await writer.drain()
                return
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                text = "error: the line is not UTF-8 text"
            else:
                try:
                    cmd = parse_command(line)
                except CommandError as exc:
                    text = f"error: {exc}"
                else:
                    if isinstance(cmd, Quit):
                        return
                    text = await self._execute(line, cmd)
            writer.write(frame(text))
            await writer.drain()
            if last:
                return

    async def _execute(self, line: str, cmd: Command) -> str:
        """Run one command; a bug in the cluster becomes an answer (and a traceback in the log)
        instead of a dropped connection the operator can make nothing of."""
        try:
            text = await execute(cmd, self._cluster)
        except Exception as exc:
            log.exception("admin socket: %r failed", line)
            return f"error: internal error ({type(exc).__name__}: {exc}); see the fastlb log"
        if changes_state(cmd):
            log.info("admin socket: %s -> %s", line.strip(), text.partition("\n")[0])
        return text


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _unlink_if_same(path: str, identity: tuple[int, int] | None) -> None:
    """Remove the socket file only if it is still the one we bound: a fastlb started after us on
    the same path (once we stopped answering) must not lose its socket when we exit."""
    if identity is not None and _identity(path) == identity:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _bind(path: str) -> tuple[socket.socket, tuple[int, int] | None]:
    """A listening socket at `path`, mode 0600 from the moment the file exists.

    The umask is tightened around bind() so that no other user can connect between bind and
    chmod; the umask is process-wide, but the window is one system call and the only effect on
    another thread's file created in it would be a tighter mode. The chmod and the check after
    it cover a filesystem that ignores the umask for sockets.
    """
    where = f"admin socket {path}"
    if not path:
        raise AdminSocketError("admin socket: empty path")
    size = len(os.fsencode(path))
    if size > _MAX_PATH:
        raise AdminSocketError(
            f"{where}: the path is {size} bytes, unix sockets allow at most {_MAX_PATH}; "
            "set [admin] socket to a shorter path"
        )
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    identity: tuple[int, int] | None = None
    try:
        umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(umask)
        identity = _identity(path)
        os.chmod(path, _MODE)
        mode = os.stat(path).st_mode
        if not stat.S_ISSOCK(mode) or stat.S_IMODE(mode) != _MODE:
            raise AdminSocketError(
                f"{where}: expected a socket file with mode 0600, got mode "
                f"{stat.S_IMODE(mode):04o}; put the socket on a filesystem that keeps modes"
            )
        sock.listen(64)
        sock.setblocking(False)
    except BaseException as exc:
        sock.close()
        _unlink_if_same(path, identity)
        if isinstance(exc, OSError):
            raise AdminSocketError(f"{where}: cannot listen: {_reason(exc)}{_hint(exc)}") from None
        raise
    return sock, identity


def _clear_stale(path: str) -> None:
    """Remove a socket file nothing answers on (left by a fastlb that was killed); refuse one
    that answers, since that fastlb would lose its admin socket, and any file that is no socket."""
    where = f"admin socket {path}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AdminSocketError(f"{where}: cannot check the path: {_reason(exc)}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise AdminSocketError(
            f"{where}: a file that is not a socket is in the way; "
            "remove it or set [admin] socket to another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live server with a full backlog must not hang the start
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # stale: nobody listens
    except FileNotFoundError:
        return  # gone meanwhile
    except BlockingIOError:
        raise AdminSocketError(_in_use(where)) from None
    except OSError as exc:
        raise AdminSocketError(
            f"{where}: cannot tell whether another fastlb uses it: {_reason(exc)}"
        ) from None
    else:
        raise AdminSocketError(_in_use(where))
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AdminSocketError(
            f"{where}: cannot remove the stale socket file: {_reason(exc)}"
        ) from None
    log.info("admin socket %s: replaced a stale socket file nothing answered on", path)


def _in_use(where: str) -> str:
    return (
        f"{where}: another fastlb is using it (something answers on it); "
        "stop that one, or set [admin] socket to another path"
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _hint(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return "; create the directory, or set [admin] socket to a path in an existing one"
    if isinstance(exc, PermissionError):
        return "; set [admin] socket to a path in a directory fastlb may write to"
    return ""
