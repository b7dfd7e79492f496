"""Replicas as child processes: `python -m replica`, each serving on a loopback socket that
fastlb bound and listens on before it starts the child, which inherits it (`--fd N`).

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
import signal
import socket
import subprocess
import sys

from fastlb.config import ReplicasConfig
from fastlb.errors import ReplicaError, own_resource_error
from fastlb.lifetime import die_with_parent
from fastlb.replicas.base import ExitCallback, Replica, probe

log = logging.getLogger("fastlb.replicas")

_STOP_GRACE = 2.0
_BACKLOG = 1024  # what the replica's own listener asks for (replica/server.py)


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a port the kernel picks and already listening, for one child to
    inherit. The port is the child's from this moment on: no other socket can bind it while
    the child (or this process, until it has handed it over) holds it. Picking a free port,
    closing it and letting the child bind it later gave two replicas started together the same
    port now and then; the second one's startup heartbeat was then answered by the first.
    Connections made before the child accepts wait in the backlog rather than being refused."""
    return socket.create_server((host, 0), backlog=_BACKLOG)


def _start_failure(name: str, exc: OSError) -> ReplicaError:
    why = exc.strerror or str(exc)
    if own_resource_error(exc):
        return ReplicaError(
            f"replica {name!r} cannot be started: fastlb is out of a resource ({why}); "
            "it keeps trying; raise the descriptor limit (ulimit -n) if this lasts"
        )
    return ReplicaError(f"replica {name!r} cannot be started: {why}")


class LocalProvider:
    host = "127.0.0.1"
    replaceable = True  # a child that dies or hangs is replaced by a new one

    def __init__(self, config: ReplicasConfig, python: str = sys.executable) -> None:
        self._config = config
        self._python = python
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._replicas: dict[str, Replica] = {}
        self._weights = dict(config.weights)
        self._watched: dict[str, int] = {}  # name -> pidfd
        self._on_exit: ExitCallback | None = None

    def names(self) -> list[str]:
        return list(self._config.names)

    def reconfigure(self, config: ReplicasConfig) -> None:
        # Children started from now on take the new latency, jitter, start timeout, weights.
        self._config = config
        self._weights = dict(config.weights)

    def on_exit(self, callback: ExitCallback) -> None:
        self._on_exit = callback

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
        proc.wait()  # reap: it has exited, this does not block
        if self._procs.get(name) is proc:
            del self._procs[name]
            self._replicas.pop(name, None)
            log.warning("replica %s (pid %d) exited with %s", name, proc.pid, proc.returncode)
            if self._on_exit is not None:
                self._on_exit(name)

    def command(self, name: str, *, fd: int | None = None, port: int = 0) -> list[str]:
        """The child's command line: serving on inherited descriptor `fd`, or (to run it by
        hand) on `port`."""
        cfg = self._config
        cmd = [self._python, "-m", "replica", "--name", name, "--host", self.host]
        cmd += ["--fd", str(fd)] if fd is not None else ["--port", str(port)]
        if cfg.latency_ms:
            cmd += ["--latency-ms", str(cfg.latency_ms)]
        if cfg.jitter_ms:
            cmd += ["--jitter-ms", str(cfg.jitter_ms)]
        return cmd

    def _spawn(self, name: str) -> tuple[subprocess.Popen[bytes], int]:
        """Start the child on a listening socket bound here; it inherits the socket, and this
        process closes its own copy once the child has it."""
        sock = listening_socket(self.host)
        try:
            port: int = sock.getsockname()[1]
            fd = sock.fileno()
            proc = subprocess.Popen(
                self.command(name, fd=fd),
                stdin=subprocess.DEVNULL,
                pass_fds=(fd,),
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )
        finally:
            sock.close()
        return proc, port

    async def start(self, name: str) -> Replica:
        if name in self._procs:
            raise ReplicaError(f"replica {name!r} is already running")
        try:
            proc, port = self._spawn(name)
        except OSError as exc:  # EMFILE on socket() or Popen's pipes, ENOMEM on fork, ...
            raise _start_failure(name, exc) from None
        self._procs[name] = proc
        if await self._wait_ready(proc, port, name):
            replica = Replica(
                name, self.host, port, self._weights.get(name, 1), proc.pid, identity=name
            )
            self._replicas[name] = replica
            self._watch(name, proc)
            return replica
        last = f"exit code {proc.returncode}" if proc.returncode is not None else "timeout"
        await self._terminate(name)
        raise ReplicaError(
            f"replica {name!r} did not answer /heartbeat within "
            f"{self._config.start_timeout:g} s ({last}); run "
            f"`{' '.join(self.command(name, port=8000))}` to see why"
        )

    async def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, name: str) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout
        while loop.time() < deadline:
            if proc.poll() is not None:
                return False
            # Bounded by the deadline: the socket listens before the child runs, so a probe
            # connects at once and would otherwise wait for the child past start_timeout.
            beat = await probe(self.host, port, min(2.0, max(0.001, deadline - loop.time())), name)
            if beat.ok:
                return True
            if beat.served_by is not None:
                # Cannot happen with the socket handed over; if it does, say so, once.
                log.warning("replica %s: port %d %s", name, port, beat.reason)
                return False
            await asyncio.sleep(0.02)
        return False

    def address(self, name: str) -> tuple[str, int]:
        replica = self._replicas[name]
        return replica.host, replica.port

    async def stop(self, name: str) -> None:
        self._replicas.pop(name, None)
        await self._terminate(name)

    async def _terminate(self, name: str) -> None:
        self._unwatch(name)  # asked to stop: not an exit to report
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a stopped (hung) process must run to exit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_GRACE
        while proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if proc.poll() is None:
            log.warning("replica %s ignored SIGTERM for %.1f s; killing it", name, _STOP_GRACE)
            proc.kill()
            proc.wait()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._procs)))
