"""`fastlb ctl`: one command to a running fastlb over its admin socket, for shells and scripts.

Exit status: 0 for data or `ok`, 1 when fastlb answered `error: ...` (nothing changed), 2 when
fastlb could not be asked at all (no socket, nobody answering, no answer in time, bad usage), so
a script can tell "refused" from "not running".

A blocking socket is enough: one connection, one line out, one answer in.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from fastlb.config import load
from fastlb.control.adminsock import MAX_LINE
from fastlb.errors import ConfigError

__all__ = ["main"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


class _Unreachable(Exception):
    """fastlb could not be asked, or its answer did not arrive; the message says which."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlb ctl",
        description="Run one command on a running fastlb through its admin socket "
        "([admin] socket in its config).",
        epilog='"fastlb ctl --socket PATH help" lists the commands. Exit status: 0 ok, '
        "1 refused by fastlb, 2 fastlb not reachable.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the admin socket's path")
    where.add_argument(
        "--config", metavar="FILE", help="the config fastlb runs with; its [admin] socket is used"
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="how long to wait for the answer (default 60; add and del wait for replicas)",
    )
    parser.add_argument("command", nargs="+", metavar="CMD", help='e.g. "show replicas"')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    words: list[str] = args.command
    if any("\n" in word or "\r" in word for word in words):
        # The socket reads one command a line: a line break would smuggle in a second one.
        parser.error("a command word holds a line break; give one command per call")
    line = " ".join(words)
    if len(line.encode()) > MAX_LINE:
        parser.error(f"the command is longer than {MAX_LINE} bytes")

    try:
        path, origin = _socket_path(args.socket, args.config)
        reply = _ask(path, origin, line, args.timeout)
    except _Unreachable as exc:
        print(f"fastlb ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if reply is None:  # `quit`: fastlb closed the connection, as asked
        return EXIT_OK
    if reply.startswith("error:"):
        print(reply, file=sys.stderr)
        return EXIT_REFUSED
    print(reply)
    return EXIT_OK


def _socket_path(socket_arg: str | None, config_arg: str | None) -> tuple[str, str]:
    """The path to connect to and where it came from, for messages."""
    if socket_arg is not None:
        return socket_arg, ""
    if config_arg is None:
        raise _Unreachable(
            "no admin socket given: pass --socket PATH, or --config FILE with the config fastlb "
            "runs with (it must set [admin] socket)"
        )
    try:
        config = load(config_arg)
    except ConfigError as exc:
        raise _Unreachable(str(exc)) from None
    if not config.admin.socket:
        raise _Unreachable(
            f"{config_arg} does not set [admin] socket, so fastlb runs without one; add socket = "
            '"/run/fastlb/admin.sock" (for example) under [admin] and restart fastlb'
        )
    return config.admin.socket, f" ([admin] socket in {config_arg})"


def _ask(path: str, origin: str, line: str, timeout: float) -> str | None:
    """Send `line`, return the answer's text (None if fastlb closed without one, as for quit)."""
    where = f"{path}{origin}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise _Unreachable(f"cannot reach {where}: {_why(exc, path, bool(origin))}") from None
        try:
            sock.sendall(line.encode() + b"\n")
            data = _read_answer(sock)
        except TimeoutError:
            raise _Unreachable(
                f"no answer from {where} within {timeout:g} s; the command may still complete "
                f"(see: fastlb ctl --socket {path} show replicas), or use --timeout"
            ) from None
        except OSError as exc:
            raise _Unreachable(f"lost the connection to {where}: {_reason(exc)}") from None
    if data is None:
        if line.split()[0].lower() == "quit":
            return None
        raise _Unreachable(f"{where} closed the connection before answering; see the fastlb log")
    return data.decode("utf-8", errors="replace")


def _read_answer(sock: socket.socket) -> bytes | None:
    """Bytes up to the empty line that ends an answer; None if the connection closed first."""
    buf = b""
    while True:
        if buf.startswith(b"\n"):
            return b""
        end = buf.find(b"\n\n")
        if end != -1:
            return buf[:end]
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk


def _why(exc: OSError, path: str, from_config: bool) -> str:
    running = (
        "is fastlb running with this config?"
        if from_config
        else f'is fastlb running, with [admin] socket = "{path}" in its config?'
    )
    if isinstance(exc, FileNotFoundError):
        return f"no such socket; {running}"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing answers on it (a socket file left by a fastlb that exited?); {running}"
    if isinstance(exc, PermissionError):
        return (
            "permission denied; the socket is private to the user fastlb runs as (mode 0600), "
            "run fastlb ctl as that user"
        )
    if isinstance(exc, TimeoutError):
        return "fastlb did not accept the connection in time (busy?)"
    return f"{_reason(exc)}; {running}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
