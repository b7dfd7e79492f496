"""Fixtures that start real processes on free loopback ports and always stop them by pid."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BACKENDS = str(ROOT / "tests" / "backends.py")


#: The access log's default line (fastlb/observe/access.py): nginx's combined format, then
#: fastlb's replica, milliseconds and termination code.
COMBINED = re.compile(
    r'^(?P<ip>\S+) - - \[(?P<time>[^]]+)\] "(?P<request>[^"]*)" (?P<status>\S+) (?P<bytes>\S+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<replica>\S+) (?P<ms>\S+) (?P<code>\S+)$'
)


def output_under_hash_seed(script: str, seed: str) -> str:
    """What `python -c script` prints in a fresh process with PYTHONHASHSEED=seed: tables must
    not depend on the process's string-hash randomisation."""
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [PY, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds, for what happens after a signal or a kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"process exited with {proc.returncode} before listening: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (no psutil)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def replica_children(pid: int) -> list[int]:
    """Children of `pid` that are replica processes (not the table-building worker)."""
    found = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if b"replica" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                found.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


class Processes:
    """Every process a test starts; all are killed and reaped at teardown, pass or fail."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.extra_pids: list[int] = []

    def spawn(self, cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(cmd, cwd=ROOT, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def close(self) -> None:
        for proc in self.procs:
            self.extra_pids += children_of(proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
        for pid in wait_gone(self.extra_pids, 3.0):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs() -> Iterator[Processes]:
    registry = Processes()
    try:
        yield registry
    finally:
        registry.close()


@dataclass
class Fastlb:
    proc: subprocess.Popen[bytes]
    port: int
    config: Path

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.port, path, headers)


@dataclass
class Backend:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def static_config(
    port: int,
    backends: list[tuple[str, int]],
    *,
    http: str = "httptools",
    key: str = "path",
    paths: list[str] | None = None,
    proxy: str = "",
) -> str:
    quoted = "[]" if paths is None else "[" + ", ".join(f'"{p}"' for p in paths) + "]"
    lines = [
        "[proxy]",
        f'listen = "127.0.0.1:{port}"',
        f'http = "{http}"',
        f"replica_paths = {quoted}",
        proxy,
        "[routing]",
        f'key = "{key}"',
        "[replicas]",
        'provider = "static"',
    ]
    for name, bport in backends:
        lines += ["[[replicas.static]]", f'name = "{name}"', f'address = "127.0.0.1:{bport}"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def start_fastlb(procs: Processes, tmp_path: Path) -> Callable[[str], Fastlb]:
    """Start `python -m fastlb --config` on a config text whose listen port is `{port}`."""

    def start(config_text: str) -> Fastlb:
        port = free_port()
        path = tmp_path / f"lb-{port}.toml"
        path.write_text(config_text.replace("{port}", str(port)))
        proc = procs.spawn([PY, "-m", "fastlb", "--config", str(path)])
        wait_port(port, 30.0, proc)
        return Fastlb(proc, port, path)

    return start


@pytest.fixture
def start_backend(procs: Processes, tmp_path: Path) -> Callable[..., Backend]:
    def start(mode: str, *, size: int = 1000, name: str = "backend") -> Backend:
        port = free_port()
        log = tmp_path / f"backend-{port}.log"
        cmd = [PY, BACKENDS, mode, "--port", str(port), "--log", str(log)]
        cmd += ["--size", str(size), "--name", name]
        proc = procs.spawn(cmd)
        wait_port(port, 10.0, proc)
        return Backend(proc, port, log)

    return start


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def read_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """Read one Content-Length response from `sock` (leftover bytes stay in `buf`)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-head: {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed mid-body")
        buf += chunk
    body = bytes(buf[end : end + length])
    del buf[: end + length]
    return head, body


@dataclass
class LoadResult:
    ok: int
    failures: list[str]
    served: dict[str, int]


def run_load(
    port: int,
    *,
    seconds: float | None = None,
    total: int | None = None,
    concurrency: int = 20,
    path: str = "/home",
    timeout: float = 10.0,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Keep-alive GETs from `concurrency` connections until `seconds` pass, `total` are done
    or `stop` is set (a request in flight then finishes).

    Bounded in time and count, loopback only. A failure is anything but a 200 (status, reset,
    timeout), recorded with its reason; `served` counts X-Served-By.
    """
    import asyncio

    assert seconds is not None or total is not None
    served: dict[str, int] = {}
    failures: list[str] = []
    ok = 0
    request = f"GET {path} HTTP/1.1\r\nHost: fastlb\r\n\r\n".encode()

    async def worker(deadline: float, budget: list[int]) -> None:
        nonlocal ok
        reader = writer = None
        loop = asyncio.get_running_loop()
        while loop.time() < deadline and budget[0] > 0 and not (stop and stop.is_set()):
            budget[0] -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(request)
                async with asyncio.timeout(timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
                    # Field names are case-insensitive (RFC 9110 §5.1): Starlette sends them
                    # in lower case.
                    fields = {
                        name.lower(): value
                        for name, value in (
                            line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line
                        )
                    }
                    length = int(fields.get(b"content-length", b"0"))
                    await reader.readexactly(length)
                status = int(head[9:12])
                if status != 200:
                    failures.append(f"status {status}")
                else:
                    ok += 1
                    name = fields.get(b"x-served-by", b"?").strip().decode()
                    served[name] = served.get(name, 0) + 1
                if b"close" in fields.get(b"connection", b"").lower():
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (seconds if seconds is not None else 3600)
        budget = [total if total is not None else 1 << 60]
        await asyncio.gather(*(worker(deadline, budget) for _ in range(concurrency)))

    asyncio.run(main())
    return LoadResult(ok, failures, served)


def load_in_background(
    port: int, seconds: float, *, stop: threading.Event | None = None, **kwargs: object
) -> tuple[threading.Thread, list[LoadResult]]:
    """run_load in a thread: join the thread, then read the one LoadResult from the list.
    With `stop`, the load lasts until it is set (at most `seconds`): for a test whose own
    steps take an unknown time under load, so that the load cannot end before they do."""
    results: list[LoadResult] = []

    def run() -> None:
        results.append(run_load(port, seconds=seconds, stop=stop, **kwargs))  # type: ignore[arg-type]

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results
