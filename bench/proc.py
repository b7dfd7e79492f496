"""Processes for the benchmark: start them pinned, find their children, read their CPU, stop them.

Why this module exists: the benchmark starts servers (backends, proxies) and load generators,
and every one of them must be stopped by its pid however the run ends (error, Ctrl-C, SIGTERM).
CPU cost is read from /proc/PID/stat so it covers exactly the proxy's processes (nginx master
and worker, HAProxy, fastlb) and nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "CLK_TCK",
    "Managed",
    "ProcStat",
    "ProcessRegistry",
    "parse_proc_stat",
    "parse_system_busy",
    "read_proc_stat",
    "system_busy_ticks",
    "tree_cpu_ticks",
    "tree_pids",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat the harness uses (times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int

    @property
    def own_ticks(self) -> int:
        """CPU the process itself used."""
        return self.utime + self.stime

    @property
    def tree_sys_ticks(self) -> int:
        """The part of `tree_ticks` spent in the kernel."""
        return self.stime + self.cstime

    @property
    def tree_ticks(self) -> int:
        """Own CPU plus that of children it has reaped.

        Summed over the live processes of a tree this is conserved when a child exits and is
        reaped: its ticks move into its parent's cutime/cstime instead of vanishing.
        """
        return self.utime + self.stime + self.cutime + self.cstime


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one /proc/PID/stat line.

    comm is in parentheses and may itself hold spaces or ')', so split on the *last* ')'.
    """
    lpar = text.index("(")
    rpar = text.rindex(")")
    pid = int(text[:lpar].strip())
    comm = text[lpar + 1 : rpar]
    rest = text[rpar + 1 :].split()
    # rest[0] is field 3 (state); field n of proc(5) is rest[n - 3].
    if len(rest) < 20:
        raise ValueError(f"truncated /proc stat line: {text!r}")
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        utime=int(rest[11]),
        stime=int(rest[12]),
        cutime=int(rest[13]),
        cstime=int(rest[14]),
        starttime=int(rest[19]),
    )


def read_proc_stat(pid: int, proc: Path = Path("/proc")) -> ProcStat | None:
    """The stat of a live (or zombie) process, or None once it is gone."""
    try:
        return parse_proc_stat((proc / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def _all_stats(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            st = read_proc_stat(int(entry.name), proc)
            if st is not None:
                stats[st.pid] = st
    return stats


def tree_pids(root: int, stats: Mapping[int, ProcStat] | None = None) -> list[int]:
    """root and all its live descendants, root first.

    Scans /proc for parent links rather than /proc/PID/task/*/children, which needs a kernel
    option that is not always on.
    """
    if stats is None:
        stats = _all_stats()
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(sorted(children.get(pid, ())))
    return out


def tree_cpu_ticks(root: int) -> int:
    """CPU clock ticks used so far by root and its descendants (see ProcStat.tree_ticks)."""
    stats = _all_stats()
    return sum(stats[pid].tree_ticks for pid in tree_pids(root, stats))


def tree_sys_ticks(root: int) -> int:
    """The part of `tree_cpu_ticks(root)` spent in the kernel (system time)."""
    stats = _all_stats()
    return sum(stats[pid].tree_sys_ticks for pid in tree_pids(root, stats))


def parse_system_busy(text: str) -> int:
    """Busy clock ticks of all CPUs from /proc/stat's first ("cpu ") line.

    user+nice+system+irq+softirq+steal: everything but idle and iowait. Steal counts as busy
    because on a VM it is time someone else took from us, which is noise all the same.
    """
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(v) for v in line.split()[1:]]
            f += [0] * (8 - len(f))
            user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
            return user + nice + system + irq + softirq + steal
    raise ValueError("no aggregate 'cpu ' line in /proc/stat")


def system_busy_ticks() -> int:
    """Busy ticks of the whole machine so far (see parse_system_busy)."""
    return parse_system_busy(Path("/proc/stat").read_text())


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the harness dies (even by SIGKILL).

    Survives exec (so it covers what taskset execs), and is our last line against orphans
    when the harness cannot run its own cleanup.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(slots=True)
class Managed:
    """One started process (and whatever descendants it was seen to have)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # (pid, starttime) of descendants seen, so we can stop leftovers without pid reuse risk.
    seen: set[tuple[int, int]] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def remember_children(self) -> None:
        stats = _all_stats()
        for pid in tree_pids(self.pid, stats)[1:]:
            self.seen.add((pid, stats[pid].starttime))

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of the process's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        return " / ".join(tail[-lines:])


class ProcessRegistry:
    """Starts processes and guarantees each is stopped, by pid, on exit from the `with` block."""

    def __init__(self) -> None:
        self._procs: list[Managed] = []

    def __enter__(self) -> ProcessRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Managed:
        """Start argv in its own session (so a terminal Ctrl-C reaches only the harness, which
        then stops everything in order), output to log_path."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # single-threaded harness: safe
            )
        managed = Managed(name=name, popen=popen, log_path=log_path)
        self._procs.append(managed)
        return managed

    def stop(self, managed: Managed, timeout: float = 5.0) -> int | None:
        """SIGTERM the process, SIGKILL it after timeout, then kill any descendant left over.

        Returns the exit code (None if it could not be reaped).
        """
        with contextlib.suppress(OSError):
            managed.remember_children()
        if managed.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(managed.pid, signal.SIGTERM)
            try:
                managed.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(managed.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    managed.popen.wait(timeout)
        self._kill_leftovers(managed, timeout)
        if managed in self._procs:
            self._procs.remove(managed)
        return managed.popen.returncode

    def _kill_leftovers(self, managed: Managed, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for pid, start in sorted(managed.seen):
            while True:
                st = read_proc_stat(pid)
                if st is None or st.starttime != start or st.state == "Z":
                    break
                sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if sig == signal.SIGKILL:
                    break
                time.sleep(0.05)

    def stop_all(self) -> None:
        """Stop everything still registered, newest first (proxies before their backends).

        SIGINT/SIGTERM are held back meanwhile, so a second Ctrl-C cannot cut the cleanup
        short; they are delivered (and acted on) once everything is stopped.
        """
        held = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            for managed in reversed(list(self._procs)):
                self.stop(managed)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def __iter__(self) -> Iterator[Managed]:
        return iter(list(self._procs))
