"""Routing tables built without stalling the event loop: inline at startup, in a worker
process (`fastlb.control.table_worker`) while serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from fastlb.build import build_table
from fastlb.config import RoutingConfig
from fastlb.errors import FastlbError
from fastlb.table import Table

#: Where the `fastlb` package lives, so the worker imports this very copy of it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)

#: Each message on the worker's pipes: a 4-byte big-endian length, then a pickle.
LENGTH_BYTES = 4


class TableWorkerError(FastlbError):
    """The table worker died or answered something unreadable."""


def frame(obj: object) -> bytes:
    """One message of the worker protocol."""
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(LENGTH_BYTES, "big") + data


class TableBuilder:
    """Builds routing tables without stalling the event loop.

    A Maglev table of 65537 entries takes milliseconds even compiled (tens in pure Python),
    and a thread would hold the GIL for up to the 5 ms switch interval at a time, so a rebuild
    while serving runs in a worker process and comes back pickled. Building before the
    listener opens stays inline.

    The worker is fastlb's own child, started with the event loop's subprocess support and
    spoken to over its stdin and stdout, rather than a multiprocessing pool: the pool runs two
    threads in fastlb, and a process with threads pays on every socket call of the data path
    (file references are counted atomically, glibc takes its malloc and cancellation locks).
    It dies with fastlb, however fastlb ends (fastlb.lifetime).
    """

    def __init__(self, routing: RoutingConfig) -> None:
        #: Replaced on reload; the next build uses it.
        self.routing = routing
        self._worker: asyncio.subprocess.Process | None = None
        # One request at a time on the pipe: replies come back in the order asked.
        self._lock = asyncio.Lock()

    def build_now(self, members: Sequence[tuple[str, int]]) -> Table:
        return build_table(self.routing, members)

    async def build(
        self, members: Sequence[tuple[str, int]], routing: RoutingConfig | None = None
    ) -> Table:
        """The table for `members`, built in the worker with `routing` (the current
        `self.routing` unless given: a caller that must know which one was used passes it)."""
        routing = self.routing if routing is None else routing
        async with self._lock:
            worker = self._worker
            if worker is None or worker.returncode is not None:
                worker = self._worker = await self._start()
            assert worker.stdin is not None and worker.stdout is not None
            try:
                worker.stdin.write(frame((routing, list(members))))
                await worker.stdin.drain()
                size = int.from_bytes(await worker.stdout.readexactly(LENGTH_BYTES), "big")
                ok, value = pickle.loads(await worker.stdout.readexactly(size))
            except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError) as exc:
                self._kill()
                raise TableWorkerError(
                    f"the table worker failed ({exc or type(exc).__name__}); "
                    "the next table change starts a new one"
                ) from None
            except BaseException:
                # Cancelled mid-exchange: a reply may still come, out of step with the next
                # request. A new worker is cheaper than telling the two apart.
                self._kill()
                raise
        if not ok:
            raise value  # a FastlbError from build_table (a bad member), raised here
        if not isinstance(value, Table):
            raise TableWorkerError(f"the table worker answered a {type(value).__name__}")
        return value

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fastlb.control.table_worker",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # Out of the terminal's process group: Ctrl-C is fastlb's to handle, and reached
            # the worker blocked in its read as a KeyboardInterrupt traceback. It ends when
            # its input does, or with fastlb (die_with_parent). A session of its own, as
            # uvloop takes no process_group (setsid makes a group too).
            start_new_session=True,
        )

    def _kill(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                worker.kill()

    async def close(self) -> None:
        """Stop the worker: end of its input is its signal to exit, a kill if it lingers."""
        worker, self._worker = self._worker, None
        if worker is None or worker.returncode is not None:
            return
        assert worker.stdin is not None
        worker.stdin.close()
        try:
            await asyncio.wait_for(worker.wait(), 2.0)
        except TimeoutError:
            worker.kill()
            await worker.wait()
