"""Replicas as child processes: `python -m replica` (the demo), or the operator's own app
server from `[replicas] command` (uvicorn, gunicorn, anything that serves HTTP/1.1).

The demo replica, and a command that says `{fd}`, serve on a loopback socket that fastlb bound
and listens on before it starts the child, which inherits it (`--fd N`, gunicorn's
`--bind fd://N`): no other process can take the port between its pick and its bind. A command
that says only `{port}` binds the port itself; fastlb picks a free one just before, so another
program may take it in between (rare, and then the child fails to start and is started again;
a replica that answers as another name, in X-Served-By, is never taken for this one).

A child's stdout and stderr go into one pipe that the event loop reads (fastlb/replicas/
output.py): its lines are logged under its name (or written to `log_dir`/NAME.log), and its
last lines explain its end in the `died` event or the start error. A custom command runs in a
process group of its own, so that stopping it stops the workers an app server forks too.

A child that exits is seen at once: each child's pidfd (Linux >= 5.3) is watched by the event
loop, which wakes when the process ends; no polling, no SIGCHLD handler, no thread.

A child must never outlive fastlb, however fastlb ends. A clean exit, SIGINT, SIGTERM or an
exception stops the children through `close()`; SIGKILL of fastlb cannot run any code of ours,
so each child is started with PR_SET_PDEATHSIG: the kernel kills it when its parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
from collections.abc import Sequence

from fastlb.config import HealthConfig, ReplicasConfig
from fastlb.errors import ReplicaError, own_resource_error
from fastlb.lifetime import die_with_parent
from fastlb.replicas.base import (
    DEFAULT_CHECK,
    ExitCallback,
    HeartbeatCheck,
    MoveCallback,
    Replica,
    probe,
)
from fastlb.replicas.output import Output, file_sink, last_words, log_sink

log = logging.getLogger("fastlb.replicas")

_STOP_GRACE = 2.0
_BACKLOG = 1024  # what the replica's own listener asks for (replica/server.py)


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a port the kernel picks and already listening, for one child to
    inherit. The port is the child's from this moment on: no other socket can bind it while
    the child (or this process, until it has handed it over) holds it. Picking a free port,
    closing it and letting the child bind it later gave two replicas started together the same
    port now and then; the second one's startup heartbeat was then answered by the first.
    Connections made before the child accepts wait in the backlog rather than being refused.

    TCP_NODELAY is set here because accepted sockets inherit it from the listener (Linux): an
    app server handed a descriptor may not set it, taking the socket for a Unix one (uvicorn
    --fd does), and Nagle's algorithm against delayed ACKs then holds every small answer
    ~40 ms (uvicorn --fd: 230 requests/s through fastlb instead of about 6,000)."""
    sock = socket.create_server((host, 0), backlog=_BACKLOG)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _start_failure(name: str, exc: OSError, cwd: str = "") -> ReplicaError:
    why = exc.strerror or str(exc)
    if own_resource_error(exc):
        return ReplicaError(
            f"replica {name!r} cannot be started: fastlb is out of a resource ({why}); "
            "it keeps trying; raise the descriptor limit (ulimit -n) if this lasts"
        )
    missing = isinstance(exc, FileNotFoundError | NotADirectoryError | PermissionError)
    if cwd and missing and not os.path.isdir(cwd):
        why = f"[replicas] cwd {cwd!r} is not a directory"
    return ReplicaError(f"replica {name!r} cannot be started: {why}")


def uses_placeholder(config: ReplicasConfig, name: str) -> bool:
    """Whether `{name}` appears in the command or the env of `config` (a checked template)."""
    texts = (*config.command, *(value for _, value in config.env))
    formatter = string.Formatter()
    return any(field == name for text in texts for _, field, _, _ in formatter.parse(text))


def how_it_ended(returncode: int | None) -> str:
    """"exit code 1", "killed by SIGKILL", for messages and events."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class LocalProvider:
    host = "127.0.0.1"
    replaceable = True  # a child that dies or hangs is replaced by a new one

    def __init__(
        self,
        config: ReplicasConfig,
        python: str = sys.executable,
        health: HealthConfig | None = None,
    ) -> None:
        self._config = config
        self._python = python
        self._check = DEFAULT_CHECK if health is None else HeartbeatCheck.of(health)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: dict[str, Output] = {}  # name -> its child's stdout and stderr
        self._groups: set[int] = set()  # pids of children that lead a process group of their own
        self._replicas: dict[str, Replica] = {}
        self._weights = dict(config.weights)
        self._watched: dict[str, int] = {}  # name -> pidfd
        self._on_exit: ExitCallback | None = None

    def names(self) -> list[str]:
        return list(self._config.names)

    def reconfigure(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        # Children started from now on take the new command, latency, jitter, start timeout,
        # weights, and must answer the new heartbeat to count as started.
        self._config = config
        self._weights = dict(config.weights)
        if health is not None:
            self._check = HeartbeatCheck.of(health)

    def on_exit(self, callback: ExitCallback) -> None:
        self._on_exit = callback

    def on_move(self, callback: MoveCallback) -> None:
        """Addresses change only through `start` here."""

    def new_names(self, count: int, running: Sequence[str]) -> list[str] | None:
        return None  # fastlb names its replicas

    def removal(self, count: int, running: Sequence[str]) -> list[str] | None:
        return None  # any replica may be stopped

    async def adopt(self) -> list[Replica]:
        """Children die with their parent, so there is never anything left to adopt."""
        return []

    def _watch(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError as exc:
            # Out of descriptors: the child runs and answers, so keep it; its death will show
            # in the heartbeats instead of at once.
            log.warning("replica %s (pid %d): not watched for exit (%s); heartbeats will see it",
                        name, proc.pid, exc.strerror or exc)
            return
        self._watched[name] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, name, proc)

    def _unwatch(self, name: str) -> None:
        fd = self._watched.pop(name, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _exited(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self._unwatch(name)
        if proc.pid in self._groups:
            # Before the reap, while its pid cannot be anyone else's: the workers an app
            # server leaves behind would go on serving on the old port.
            self._groups.discard(proc.pid)
            self._signal(proc, signal.SIGKILL, group=True)
        proc.wait()  # reap: it has exited, this does not block
        if self._procs.get(name) is proc:
            del self._procs[name]
            self._replicas.pop(name, None)
            ended = how_it_ended(proc.returncode)
            log.warning("replica %s (pid %d) exited: %s", name, proc.pid, ended)
            words = last_words(self._close_output(name))
            if self._on_exit is not None:
                self._on_exit(name, ended + words)

    def _close_output(self, name: str) -> list[str]:
        """The last lines of `name`'s output, once what is left in its pipe is read; the pipe
        is closed (a worker the child leaves behind writes to no one)."""
        output = self._outputs.pop(name, None)
        if output is None:
            return []
        lines = output.tail()
        output.close()
        return lines

    def command(self, name: str, *, fd: int | None = None, port: int = 0) -> list[str]:
        """The child's command line: serving on inherited descriptor `fd`, or (to run it by
        hand) on `port`. A [replicas] command is its template filled in."""
        cfg = self._config
        if cfg.command:
            return [arg.format_map(self._values(name, fd, port)) for arg in cfg.command]
        cmd = [self._python, "-m", "replica", "--name", name, "--host", self.host]
        cmd += ["--fd", str(fd)] if fd is not None else ["--port", str(port)]
        if cfg.latency_ms:
            cmd += ["--latency-ms", str(cfg.latency_ms)]
        if cfg.jitter_ms:
            cmd += ["--jitter-ms", str(cfg.jitter_ms)]
        return cmd

    def _values(self, name: str, fd: int | None, port: int) -> dict[str, str]:
        return {"host": self.host, "port": str(port), "name": name, "fd": str(fd or "")}

    def _environment(self, name: str, fd: int | None, port: int) -> dict[str, str]:
        """fastlb's environment, with [replicas] env on top. PYTHONUNBUFFERED unless set:
        a Python app writing to a pipe buffers its output, and a replica killed then loses
        the lines that would have said why."""
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        values = self._values(name, fd, port)
        env.update((key, value.format_map(values)) for key, value in self._config.env)
        return env

    def _program(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """argv with its program found: on PATH, else beside fastlb's own Python (its venv's
        bin/, where `pip install uvicorn` puts uvicorn), else a clear error."""
        program = argv[0]
        if os.sep in program:
            return argv
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        found = found or shutil.which(program, path=os.path.dirname(self._python))
        if found is None:
            raise ReplicaError(
                f"[replicas] command: {program!r} is not found on PATH nor beside fastlb's "
                f"Python ({os.path.dirname(self._python)}); install it, or give its full path"
            )
        return [found, *argv[1:]]

    def _sink(self, name: str) -> tuple[Output, int]:
        """The pipe `name`'s stdout and stderr go to: (its read side, watched, and the write
        end for the child)."""
        log_dir = self._config.log_dir
        file = None
        if log_dir:
            path = os.path.join(log_dir, f"{name}.log")
            try:
                os.makedirs(log_dir, exist_ok=True)
                file = open(path, "ab")  # noqa: SIM115 (closed with the pipe, below)
            except OSError as exc:
                raise ReplicaError(
                    f"replica {name!r}: cannot open its log file {path} ([replicas] log_dir): "
                    f"{exc.strerror or exc}"
                ) from None
        try:
            read_end, write_end = os.pipe()
        except OSError:
            if file is not None:
                file.close()
            raise
        sink = log_sink(name) if file is None else file_sink(file)
        output = Output(read_end, sink, on_close=file.close if file is not None else None)
        return output, write_end

    def _spawn(self, name: str) -> tuple[subprocess.Popen[bytes], int]:
        """Start the child. The demo replica and a command with {fd} get a listening socket
        bound here, which the child inherits and this process closes once the child has it;
        a command with only {port} gets a port that was free a moment ago."""
        cfg = self._config
        custom = bool(cfg.command)
        inherit = not custom or uses_placeholder(cfg, "fd")
        sock = listening_socket(self.host)
        try:
            port: int = sock.getsockname()[1]
            fd = sock.fileno() if inherit else None
            if fd is None:
                sock.close()  # the child binds the port itself
            env = self._environment(name, fd, port)
            argv = self.command(name, fd=fd, port=port)
            if custom:
                argv = self._program(argv, env)
            output, write_end = self._sink(name)
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=write_end,
                    stderr=write_end,
                    pass_fds=(fd,) if fd is not None else (),
                    preexec_fn=functools.partial(die_with_parent, os.getpid()),
                    cwd=cfg.cwd or None,
                    env=env,
                    # A process group of its own, for every replica: the terminal's Ctrl-C
                    # (SIGINT to the foreground group) is fastlb's to act on, not theirs.
                    # Sharing fastlb's group, the replicas died at once, in-flight requests
                    # failed while fastlb drained them, and each exit was logged as a death.
                    # fastlb stops them itself (SIGTERM) once requests in flight are done.
                    # An app server's workers are its children, stopped with it as a group.
                    process_group=0,
                )
            except BaseException:
                output.close()
                raise
            finally:
                os.close(write_end)
        finally:
            sock.close()
        self._outputs[name] = output
        if custom:
            self._groups.add(proc.pid)
        return proc, port

    async def start(self, name: str) -> Replica:
        if name in self._procs:
            raise ReplicaError(f"replica {name!r} is already running")
        try:
            proc, port = self._spawn(name)
        except OSError as exc:  # EMFILE on socket() or Popen's pipes, ENOMEM on fork, ...
            raise _start_failure(name, exc, self._config.cwd) from None
        self._procs[name] = proc
        check = self._check
        reason = await self._wait_ready(proc, port, name, check)
        if reason is None:
            replica = Replica(
                name, self.host, port, self._weights.get(name, 1), proc.pid, identity=name
            )
            self._replicas[name] = replica
            self._watch(name, proc)
            return replica
        exited = proc.returncode is not None
        await self._terminate(name)
        words = last_words(self._close_output(name))
        what = f"{check.path} ({check.method}, status {check.wanted()}) on {self.host}:{port}"
        if exited:
            message = (
                f"replica {name!r} exited ({how_it_ended(proc.returncode)}) before it "
                f"answered {what}"
            )
        else:
            message = (
                f"replica {name!r} did not answer {what} within "
                f"{self._config.start_timeout:g} s ({reason})"
            )
        if words:
            message += words
        elif not self._config.command:
            message += f"; run `{' '.join(self.command(name, port=8000))}` to see why"
        else:
            message += "; it wrote nothing"
        raise ReplicaError(message)

    async def _wait_ready(
        self, proc: subprocess.Popen[bytes], port: int, name: str, check: HeartbeatCheck
    ) -> str | None:
        """None once the child answers its heartbeat; otherwise why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout
        reason = "timeout"
        while loop.time() < deadline:
            if proc.poll() is not None:
                return how_it_ended(proc.returncode)
            # Bounded by the deadline: the socket listens before the child runs, so a probe
            # connects at once and would otherwise wait for the child past start_timeout.
            timeout = min(2.0, max(0.001, deadline - loop.time()))
            beat = await probe(self.host, port, timeout, name, check)
            if beat.ok:
                return None
            if beat.served_by is not None:
                # Another replica answers on this port (a {port} command whose port was
                # taken in between; cannot happen with the socket handed over): not this one.
                log.warning("replica %s: port %d %s", name, port, beat.reason)
                return beat.reason
            reason = f"last heartbeat: {beat.reason}" if beat.reason else reason
            await asyncio.sleep(0.02)
        return reason

    def address(self, name: str) -> tuple[str, int]:
        replica = self._replicas[name]
        return replica.host, replica.port

    async def stop(self, name: str) -> None:
        self._replicas.pop(name, None)
        await self._terminate(name)
        self._close_output(name)

    async def _terminate(self, name: str) -> None:
        self._unwatch(name)  # asked to stop: not an exit to report
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        group = proc.pid in self._groups
        self._groups.discard(proc.pid)
        if proc.poll() is not None:
            if group:
                self._signal(proc, signal.SIGKILL, group)  # workers it left behind
            return
        self._signal(proc, signal.SIGTERM, group)
        self._signal(proc, signal.SIGCONT, group)  # a stopped (hung) process must run to exit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_GRACE
        while proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if proc.poll() is None:
            log.warning("replica %s ignored SIGTERM for %.1f s; killing it", name, _STOP_GRACE)
            self._signal(proc, signal.SIGKILL, group)
            proc.wait()
        elif group:
            # The group's leader is gone; workers it left behind go with it.
            self._signal(proc, signal.SIGKILL, group)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._procs)))
