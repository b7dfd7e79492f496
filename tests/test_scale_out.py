"""Several balancers agree (issue 14, section 2): three fastlb instances given the same config,
one of them with two worker processes, send every key to the same replica, before and after
the same adds and removes applied to each in a different order. Keys go through each balancer
for real (pipelined GETs to nginx backends that say who they are), 100,000 of them per balancer
and phase, on a fresh connection every 10,000 (so both workers of the third take their share).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.peers import Backends, start_backends
from bench.proc import ProcessRegistry
from tests.conftest import Fastlb, http_get, static_config

StartFastlb = Callable[[str], Fastlb]

KEYS = 100_000
BATCH = 2_000


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Backends]:
    """One real nginx answering as b1, b2 and b3 on three loopback ports."""
    with ProcessRegistry() as registry:
        yield start_backends(registry, tmp_path, cpu=None)


def served_by(port: int, count: int = KEYS, per_connection: int = 10_000) -> list[bytes]:
    """Who served /k0 .. /k{count-1} through the balancer on `port` (routing key: the path),
    pipelined BATCH at a time, sent from a thread while this one reads."""
    seen: list[bytes] = []
    for first in range(0, count, per_connection):
        seen += _served_on_one_connection(port, first, min(first + per_connection, count))
    return seen


def _served_on_one_connection(port: int, first: int, end: int) -> list[bytes]:
    seen: list[bytes] = []
    count = end
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start in range(first, end, BATCH):
            batch = b"".join(
                b"GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n" % i
                for i in range(start, min(start + BATCH, count))
            )
            expected = min(BATCH, count - start)
            sender = threading.Thread(target=sock.sendall, args=(batch,), daemon=True)
            sender.start()
            data = b""
            # Every response ends "hello from bN\n": the batch is whole when `expected` are in.
            while data.count(b"hello from ") < expected or not data.endswith(b"\n"):
                chunk = sock.recv(1 << 18)
                assert chunk, "the balancer closed the connection"
                data += chunk
            sender.join(10)
            got = re.findall(rb"X-Served-By: (b\d)\r\n", data)
            assert len(got) == expected and data.count(b"HTTP/1.1 200 ") == expected
            seen += got
    return seen


def write_config(lb: Fastlb, nginx: Backends, names: list[str]) -> None:
    text = static_config(lb.port, [(n, nginx.ports[n]) for n in names], key="path")
    lb.config.write_text(text)


def wait_routing(lb: Fastlb, names: list[str], timeout: float = 20.0) -> None:
    """Until the balancer lists exactly `names`, every one of them up."""
    deadline = time.monotonic() + timeout
    while True:
        body = http_get(lb.port, "/metrics")[2].decode()
        up = set(re.findall(r'^fastlb_replica_up\{replica="([^"]+)"\} 1', body, re.M))
        known = set(re.findall(r'^fastlb_replica_up\{replica="([^"]+)"\}', body, re.M))
        if up == known == set(names):
            return
        assert time.monotonic() < deadline, f"replicas {sorted(known)}, up {sorted(up)}"
        time.sleep(0.05)


def reload(lb: Fastlb, nginx: Backends, names: list[str]) -> None:
    write_config(lb, nginx, names)
    os.kill(lb.proc.pid, signal.SIGHUP)
    wait_routing(lb, names)


def test_three_balancers_one_with_two_workers_route_every_key_alike_in_any_order(
    start_fastlb: StartFastlb, nginx: Backends
) -> None:
    start = ["b1", "b2"]
    lbs = []
    for workers in (1, 1, 2):
        text = static_config(
            0, [(n, nginx.ports[n]) for n in start], key="path", proxy=f"workers = {workers}"
        )
        lb = start_fastlb(text.replace(":0", ":{port}"))
        wait_routing(lb, start)
        lbs.append(lb)
    a, b, w = lbs
    before = [served_by(lb.port) for lb in lbs]
    assert before[0] == before[1] == before[2]
    assert set(before[0]) == {b"b1", b"b2"}
    # Both workers of the third took keys.
    per_worker = re.findall(
        r"^fastlb_worker_requests(?:_total)?\{[^}]*\} (\S+)", http_get(w.port, "/metrics")[2].decode(),
        re.M,
    )
    assert len(per_worker) == 2 and all(float(n) > 1000 for n in per_worker), per_worker
    # The same changes, in two orders: a and w add b3 then remove b1, b removes b1 then adds b3.
    for lb in (a, w):
        reload(lb, nginx, ["b1", "b2", "b3"])
        reload(lb, nginx, ["b2", "b3"])
    reload(b, nginx, ["b2"])
    reload(b, nginx, ["b2", "b3"])
    after = [served_by(lb.port) for lb in lbs]
    assert after[0] == after[1] == after[2]
    assert set(after[0]) == {b"b2", b"b3"}
