"""Local process replicas: started before the listener opens, never outliving fastlb."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from fastlb.config import ReplicasConfig
from fastlb.replicas.base import Beat, Replica, probe
from fastlb.replicas.local import LocalProvider, listening_socket
from tests.conftest import (
    PY,
    Fastlb,
    Processes,
    alive,
    children_of,
    free_port,
    http_get,
    replica_children,
    wait_gone,
)

StartFastlb = Callable[[str], Fastlb]


def replica_pids(tag: str) -> list[int]:
    """Processes whose command line names a replica tagged `tag` (ours, by construction)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"replica" in args and any(a.startswith(tag.encode()) for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


def local_config(tag: str, count: int = 3) -> str:
    names = ", ".join(f'"{tag}-{i}"' for i in range(1, count + 1))
    return f'[proxy]\nlisten = "127.0.0.1:{{port}}"\n[replicas]\nnames = [{names}]\n'


def test_default_config_serves_home_from_all_three(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\n')
    seen: Counter[str] = Counter()
    for _ in range(300):
        status, headers, body = lb.get("/home")
        assert status == 200
        payload = json.loads(body)
        assert payload["status"] == "successful"
        seen[headers["x-served-by"]] += 1
        assert payload["message"] == f"Hello from Server: {headers['x-served-by']}"
    assert set(seen) == {"Server1", "Server2", "Server3"}
    # request_id keys spread identical requests: each replica gets a fair part of 300.
    assert min(seen.values()) > 50, seen
    status, _, body = lb.get("/heartbeat")
    assert (status, body) == (200, b"")
    assert len(replica_children(lb.proc.pid)) == 3


def test_replica_options_reach_the_children(start_fastlb: StartFastlb) -> None:
    tag = f"lat{uuid.uuid4().hex[:6]}"
    lb = start_fastlb(local_config(tag, 1) + "latency_ms = 200\n")
    started = time.monotonic()
    assert lb.get("/home")[0] == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_orphans_whatever_signal_ends_fastlb(
    start_fastlb: StartFastlb, sig: signal.Signals
) -> None:
    tag = f"orphan{uuid.uuid4().hex[:8]}"
    lb = start_fastlb(local_config(tag))
    # A replica added while serving: its table is built by the worker process, which must
    # not outlive fastlb either.
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=30)
    conn.request("POST", "/add", body=json.dumps({"n": 1, "hostnames": [f"{tag}-4"]}))
    assert conn.getresponse().status == 200
    conn.close()
    pids = replica_pids(tag)
    assert len(pids) == 4
    children = children_of(lb.proc.pid)
    helpers = [p for p in children if p not in pids]
    assert helpers, "no table worker was started"
    lb.proc.send_signal(sig)
    code = lb.proc.wait(timeout=10)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    assert wait_gone(pids) == [], f"replicas outlived fastlb after {sig.name}"
    assert wait_gone(helpers) == [], f"the table worker outlived fastlb after {sig.name}"


def test_no_orphans_when_startup_fails(procs: Processes, tmp_path: Path) -> None:
    tag = f"fail{uuid.uuid4().hex[:8]}"
    with socket.socket() as taken:  # the listener cannot bind: fastlb fails after the replicas
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "lb.toml"
        config.write_text(local_config(tag).replace("{port}", str(port)))
        proc = procs.spawn([PY, "-m", "fastlb", "--config", str(config)])
        code = proc.wait(timeout=30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert wait_gone(replica_pids(tag)) == []


def test_replica_that_cannot_start_is_a_clear_error(procs: Processes, tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n[replicas]\ncount = 1\n'
        "start_timeout = 0.001\n"
    )
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(config)], stdout=subprocess.PIPE)
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None
    assert "did not answer /heartbeat" in proc.stderr.read().decode()


def listening_socket_of(pid: int) -> tuple[int, str]:
    """The TCP port and the inode link ("socket:[N]") of the listening socket a replica child
    serves on: the descriptor its command line names (--fd N), found in /proc/net/tcp."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--port" not in cmdline, cmdline
    fd = int(cmdline[cmdline.index(b"--fd") + 1])
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    assert link.startswith("socket:["), link
    inode = link[len("socket:[") : -1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] == inode:
            assert fields[3] == "0A", f"descriptor {fd} of {pid} is not listening: {line}"
            return int(fields[1].split(":")[1], 16), link
    raise AssertionError(f"socket {inode} of pid {pid} is not in /proc/net/tcp")


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                found.add(link)
    return found


def test_heartbeat_of_a_child_directly(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb(local_config(f"hb{uuid.uuid4().hex[:6]}", 1))
    (child,) = replica_children(lb.proc.pid)
    port, _ = listening_socket_of(child)
    status, headers, _ = http_get(port, "/heartbeat")
    assert status == 200 and headers["x-served-by"].startswith("hb")


def test_listening_socket_holds_its_port_from_the_start() -> None:
    # The old way (bind, read the port, close, let the child bind it later) left the port free
    # in between; this one is bound and listening until the child has it.
    sock = listening_socket()
    try:
        port = sock.getsockname()[1]
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        # Connecting already works: the connection waits in the backlog for the child.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        sock.close()


def test_replicas_started_at_once_get_distinct_ports_on_sockets_they_inherited() -> None:
    count = 12
    names = [f"Many{i}" for i in range(count)]
    provider = LocalProvider(ReplicasConfig(names=tuple(names), count=count))

    async def scenario() -> tuple[list[Replica], list[tuple[int, str | None]], set[str], set[str]]:
        started = list(await asyncio.gather(*(provider.start(n) for n in names)))
        try:
            beats, links = [], set()
            for replica in started:
                beat = await probe(replica.host, replica.port, 5.0, replica.name)
                port, link = listening_socket_of(replica.pid or 0)
                beats.append((port, beat.served_by))
                links.add(link)
            return started, beats, links, socket_inodes(os.getpid())
        finally:
            await provider.close()

    started, beats, children, ours = uvloop.run(scenario())
    ports = [r.port for r in started]
    assert len(set(ports)) == count, ports
    assert [r.identity for r in started] == names
    # Each child serves on the very socket whose port fastlb recorded, and answers as itself;
    # fastlb kept no copy of any of them.
    assert beats == [(r.port, r.name) for r in started]
    assert len(children) == count and not children & ours
    for replica in started:
        assert replica.pid is not None and not alive(replica.pid)


def test_a_heartbeat_answered_by_another_replica_fails() -> None:
    # Two real replicas; the port recorded for B is answered by A (what the port race did).
    provider = LocalProvider(ReplicasConfig(names=("PortA", "PortB"), count=2))

    async def anonymous(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> list[Beat]:
        a, b = await asyncio.gather(provider.start("PortA"), provider.start("PortB"))
        other = await asyncio.start_server(anonymous, "127.0.0.1", 0)
        try:
            other_port = other.sockets[0].getsockname()[1]
            return [
                await probe(a.host, a.port, 5.0, "PortA"),
                await probe(b.host, b.port, 5.0, "PortB"),
                await probe(a.host, a.port, 5.0, "PortB"),  # B's name, A's port
                await probe(a.host, a.port, 5.0, None),  # no identity expected: status alone
                await probe("127.0.0.1", other_port, 5.0, "PortB"),  # no identity given
            ]
        finally:
            other.close()
            await provider.close()

    good_a, good_b, impostor, anyone, anonymous_app = uvloop.run(scenario())
    assert (good_a.ok, good_a.served_by) == (True, "PortA")
    assert (good_b.ok, good_b.served_by) == (True, "PortB")
    assert not impostor.ok and not impostor.own
    assert impostor.served_by == "PortA"
    assert impostor.reason == "answered as 'PortA', not 'PortB'"
    assert anyone.ok
    assert anonymous_app.ok and anonymous_app.served_by is None
