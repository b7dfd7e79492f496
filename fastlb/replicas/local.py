"""Replicas as child processes: `python -m replica` on free loopback ports.

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
from fastlb.errors import ReplicaError
from fastlb.lifetime import die_with_parent
from fastlb.replicas.base import ExitCallback, Replica, heartbeat

log = logging.getLogger("fastlb.replicas")

_START_ATTEMPTS = 3  # a port taken between our probe and the child's bind costs a retry
_STOP_GRACE = 2.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalProvider:
    host = "127.0.0.1"

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

    def on_exit(self, callback: ExitCallback) -> None:
        self._on_exit = callback

    async def adopt(self) -> list[Replica]:
        """Children die with their parent, so there is never anything left to adopt."""
        return []

    def _watch(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        fd = os.pidfd_open(proc.pid)
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

    def command(self, name: str, port: int) -> list[str]:
        cfg = self._config
        cmd = [self._python, "-m", "replica", "--name", name, "--host", self.host]
        cmd += ["--port", str(port)]
        if cfg.latency_ms:
            cmd += ["--latency-ms", str(cfg.latency_ms)]
        if cfg.jitter_ms:
            cmd += ["--jitter-ms", str(cfg.jitter_ms)]
        return cmd

    async def start(self, name: str) -> Replica:
        if name in self._procs:
            raise ReplicaError(f"replica {name!r} is already running")
        last = ""
        parent = os.getpid()
        for _ in range(_START_ATTEMPTS):
            port = free_port(self.host)
            proc = subprocess.Popen(
                self.command(name, port),
                stdin=subprocess.DEVNULL,
                preexec_fn=functools.partial(die_with_parent, parent),
            )
            self._procs[name] = proc
            if await self._wait_ready(proc, port):
                replica = Replica(name, self.host, port, self._weights.get(name, 1), proc.pid)
                self._replicas[name] = replica
                self._watch(name, proc)
                return replica
            last = f"exit code {proc.returncode}" if proc.returncode is not None else "timeout"
            await self._terminate(name)
        raise ReplicaError(
            f"replica {name!r} did not answer /heartbeat within "
            f"{self._config.start_timeout:g} s ({last}); run "
            f"`{' '.join(self.command(name, 8000))}` to see why"
        )

    async def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout
        while loop.time() < deadline:
            if proc.poll() is not None:
                return False
            if await heartbeat(self.host, port, 2.0):
                return True
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
