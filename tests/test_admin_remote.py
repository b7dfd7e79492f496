"""The admin token rule with a real non-loopback peer.

Two network namespaces made by the test, joined by a veth pair: fastlb (and its replicas, on
the namespace's own loopback) in one, the client in the other. No packet leaves them; they are
removed at the end, pass or fail.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PY, Processes

CLIENT = r"""
import http.client, json, sys
host, port, method, path, token = sys.argv[1:6]
headers = {"Authorization": f"Bearer {token}"} if token else {}
body = json.dumps({"n": 1, "hostnames": ["Remote1"]}) if method == "POST" else None
for attempt in range(100):
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        print(resp.status, resp.read().decode())
        break
    except OSError:
        import time; time.sleep(0.1)
"""


@dataclass
class Namespaces:
    server: str
    client: str
    server_ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    if os.geteuid() != 0 or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode:
        pytest.skip("needs root and iproute2 network namespaces")
    tag = uuid.uuid4().hex[:6]
    server, client = f"fl-s-{tag}", f"fl-c-{tag}"
    octet = random.randrange(1, 250)
    server_ip, client_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
    try:
        _ip("netns", "add", server)
        _ip("netns", "add", client)
        _ip(
            "link",
            "add",
            f"vs{tag}",
            "netns",
            server,
            "type",
            "veth",
            "peer",
            "name",
            f"vc{tag}",
            "netns",
            client,
        )
        for ns, dev, addr in ((server, f"vs{tag}", server_ip), (client, f"vc{tag}", client_ip)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Namespaces(server, client, server_ip)
    finally:
        for ns in (server, client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def ask(ns: Namespaces, port: int, method: str, path: str, token: str = "") -> tuple[int, str]:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns.client,
            PY,
            "-c",
            CLIENT,
            ns.server_ip,
            str(port),
            method,
            path,
            token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status, _, body = result.stdout.strip().partition(" ")
    return int(status), body


def start(procs: Processes, ns: Namespaces, tmp_path: Path, admin: str) -> int:
    port = 5000
    config = tmp_path / "lb.toml"
    config.write_text(
        f'[proxy]\nlisten = "0.0.0.0:{port}"\n[replicas]\ncount = 2\n[admin]\n{admin}'
    )
    procs.spawn(["ip", "netns", "exec", ns.server, PY, "-m", "fastlb", "--config", str(config)])
    return port


def test_remote_state_change_without_a_configured_token_is_403(
    procs: Processes, namespaces: Namespaces, tmp_path: Path
) -> None:
    port = start(procs, namespaces, tmp_path, "")
    status, body = ask(namespaces, port, "POST", "/add")
    assert status == 403
    assert "token" in json.loads(body)["message"]
    # Reading is open, and nothing was added.
    status, body = ask(namespaces, port, "GET", "/rep")
    assert status == 200 and json.loads(body)["message"]["replicas"] == ["Server1", "Server2"]


def test_remote_state_change_needs_the_right_token(
    procs: Processes, namespaces: Namespaces, tmp_path: Path
) -> None:
    port = start(procs, namespaces, tmp_path, 'token = "s3cret"\n')
    assert ask(namespaces, port, "POST", "/add", "wrong")[0] == 403
    assert ask(namespaces, port, "POST", "/add")[0] == 403
    status, body = ask(namespaces, port, "POST", "/add", "s3cret")
    assert status == 200, body
    assert json.loads(body)["message"]["replicas"] == ["Server1", "Server2", "Remote1"]
