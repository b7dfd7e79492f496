"""Faults under load: replicas that die with requests in flight, and fastlb's own limits.

Every request here is an idempotent GET without a body, so none may fail while a replica can
take it: a request whose replica died before a byte of its answer goes to the next candidate,
by the table in place when it failed. At the descriptor limit, fastlb's own EMFILE is never
read as a replica's failure. `python -m bench.kill` runs the load test at full size (wrk, 64
and 256 connections); the one here is smaller, its outcome (not its timing) asserted.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.conftest import (
    Fastlb,
    LoadResult,
    http_get,
    read_response,
    replica_children,
    run_load,
    wait_for,
)

StartFastlb = Callable[[str], Fastlb]

GET = b"GET /home HTTP/1.1\r\nHost: fastlb\r\n\r\n"


def local_config(names: list[str], extra: str = "", health: str = "") -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return (
        f'[proxy]\nlisten = "127.0.0.1:{{port}}"\n{extra}\n'
        f"[replicas]\nnames = [{quoted}]\n[health]\n{health}\n"
    )


def replica_pid(lb_pid: int, name: str) -> int | None:
    """The pid of the replica child started as `--name name`, if one runs."""
    for pid in replica_children(lb_pid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if name.encode() in args:
            return pid
    return None


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample of fastlb's /metrics (None when it is not there)."""
    _, _, body = http_get(port, "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", body.decode(), re.M)
    return float(found.group(1)) if found else None


def open_fds(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def test_failover_uses_the_table_in_place_when_the_replica_fails(
    start_fastlb: StartFastlb,
) -> None:
    # A request that outlives its table: it waits on replica A (stopped: the kernel accepted
    # the connection, nobody answers), while B dies and is replaced by a new process under the
    # same name. Then A dies too. The request's own table lists A and the old B, both gone;
    # the table in place lists the new B, which must get the request (before: 503 "no
    # replica is available", counted on the old B's Upstream, so not in /metrics either).
    tag = uuid.uuid4().hex[:6]
    a, b = f"fa{tag}", f"fb{tag}"
    # Heartbeats far apart: the stopped replicas must not be taken down by them meanwhile.
    lb = start_fastlb(local_config([a, b], health="interval = 30.0\ntimeout = 1.0\n"))
    assert http_get(lb.port, "/home")[0] == 200
    pid_a, pid_b = replica_pid(lb.proc.pid, a), replica_pid(lb.proc.pid, b)
    assert pid_a is not None and pid_b is not None
    os.kill(pid_a, signal.SIGSTOP)
    os.kill(pid_b, signal.SIGSTOP)
    with socket.create_connection(("127.0.0.1", lb.port), timeout=20) as sock:
        sock.sendall(GET)  # lands on A or B; neither answers
        time.sleep(0.3)
        os.kill(pid_b, signal.SIGKILL)
        # B's replacement is in the table: restarted once, and its share is back.
        wait_for(
            lambda: metric(lb.port, "fastlb_replica_restarts_total", replica=b) == 1
            and (metric(lb.port, "fastlb_table_share", replica=b) or 0) > 0,
            15.0,
            f"{b} replaced and published",
        )
        os.kill(pid_a, signal.SIGKILL)
        head, body = read_response(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200 "), head + body
    assert f"x-served-by: {b}".encode() in head.lower()


def test_own_descriptor_exhaustion_is_not_a_replica_failure(start_fastlb: StartFastlb) -> None:
    # pool_size = 0: every request opens a connection to its replica, so at the descriptor
    # limit the connect itself fails with EMFILE. That is fastlb's condition, not the
    # replica's: the client is told so (503), nothing suspects or charges the replica.
    name = f"fd{uuid.uuid4().hex[:6]}"
    lb = start_fastlb(local_config([name], "pool_size = 0", "interval = 30.0\n"))
    pid = lb.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as sock:
        buf = bytearray()
        sock.sendall(GET)
        head, _ = read_response(sock, buf)
        assert head.startswith(b"HTTP/1.1 200 ")
        # The lowest free descriptor number becomes the limit: any new descriptor fails. The
        # replica connection of that request closes (pool_size = 0) a loop round after the
        # response: wait until the descriptors stop changing.
        fds = open_fds(pid)
        while True:
            time.sleep(0.2)
            if (now := open_fds(pid)) == fds:
                break
            fds = now
        lowest_free = next(n for n in range(len(fds) + 1) if n not in fds)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            sock.sendall(GET)
            head, body = read_response(sock, buf)
            # /metrics is answered by fastlb itself on this connection: no descriptor needed.
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: fastlb\r\n\r\n")
            _, metrics = read_response(sock, buf)
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert head.startswith(b"HTTP/1.1 503 "), head + body
    assert b"file descriptors" in body
    text = metrics.decode()
    lines = [line for line in text.splitlines() if line.startswith("fastlb_")]
    assert re.search(r'^fastlb_requests_total\{code="503",replica="none"\} 1\.0$', text, re.M), lines
    assert re.search(rf'^fastlb_backend_failures_total\{{replica="{name}"\}} 0\.0$', text, re.M)
    assert re.search(rf'^fastlb_replica_up\{{replica="{name}"\}} 1\.0$', text, re.M)
    time.sleep(0.5)  # a suspicion would have probed by now
    assert metric(lb.port, "fastlb_replica_up", replica=name) == 1.0
    assert http_get(lb.port, "/home")[0] == 200


def test_no_replica_503_keeps_the_pipelined_requests(start_fastlb: StartFastlb) -> None:
    # With no replica up, each request gets a 503 at once; the requests pipelined behind the
    # first must be answered too (they were dropped, and the connection hung until
    # idle_timeout). The replica stays in the table (health is read at the pick), down.
    name = f"nr{uuid.uuid4().hex[:6]}"
    health = "interval = 0.2\ntimeout = 0.1\nfall = 1\nreplace_after = 60.0\n"
    lb = start_fastlb(local_config([name], health=health))
    pid = replica_pid(lb.proc.pid, name)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    wait_for(
        lambda: metric(lb.port, "fastlb_replica_up", replica=name) == 0.0,
        10.0,
        "the stopped replica down",
    )
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(GET * 3)
        buf = bytearray()
        heads = [read_response(sock, buf)[0] for _ in range(3)]
    for head in heads:
        assert head.startswith(b"HTTP/1.1 503 "), head
    os.kill(pid, signal.SIGCONT)


def test_no_failed_requests_while_replicas_are_killed_under_64_connections(
    start_fastlb: StartFastlb,
) -> None:
    # Requests in flight on the killed replica's pooled connections, and the ones dispatched
    # to it between its death and the table swap, all go elsewhere: not one fails.
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\npool_size = 128\n')
    results: list[LoadResult] = []
    thread = threading.Thread(
        target=lambda: results.append(run_load(lb.port, seconds=10.0, concurrency=64))
    )
    thread.start()
    killed: list[int] = []
    try:
        for _ in range(2):
            time.sleep(3.5)
            replicas = replica_children(lb.proc.pid)
            os.kill(replicas[len(killed) % len(replicas)], signal.SIGKILL)
            killed.append(replicas[len(killed) % len(replicas)])
    finally:
        thread.join()
    (result,) = results
    print(f"\n{result.ok} requests, {len(result.failures)} failed, served {result.served}")
    assert result.failures == []
    assert result.ok > 1000
    # Each killed replica was replaced (new processes, three in all) and takes traffic again.
    wait_for(lambda: len(replica_children(lb.proc.pid)) == 3, 10.0, "three replicas again")
    assert not set(killed) & set(replica_children(lb.proc.pid))
    after = run_load(lb.port, total=600, concurrency=8)
    assert after.failures == []
    assert set(after.served) == {"Server1", "Server2", "Server3"}
    assert metric(lb.port, "fastlb_replicas", state="healthy") == 3.0
