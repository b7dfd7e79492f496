"""Local process replicas: started before the listener opens, never outliving fastlb."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    PY,
    Fastlb,
    Processes,
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


def test_heartbeat_of_a_child_directly(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb(local_config(f"hb{uuid.uuid4().hex[:6]}", 1))
    (child,) = replica_children(lb.proc.pid)
    cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    port = int(cmdline[cmdline.index(b"--port") + 1])
    assert http_get(port, "/heartbeat")[0] == 200
