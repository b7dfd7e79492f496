"""`table = "ketama"` agrees with a live nginx (Debian's) key for key (issue 14, section 3).

Three echo backends (weights 1, 2, 3) behind nginx's `hash $request_uri consistent` and behind
fastlb (provider static, the same addresses and weights, key "path"); 10,000 distinct request
targets through each, and the X-Served-By of every answer compared; then one backend killed,
and 2,000 targets compared again (both walk the ring on to the same next server). Nothing here is faked:
nginx's own ring decides one side, fastlb's KetamaTable the other.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.peers import find_binary
from tests.conftest import Backend, Fastlb, Processes, free_port, wait_port

NGINX = find_binary("nginx")
WEIGHTS = {"b1": 1, "b2": 2, "b3": 3}
KEYS = 10_000

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def _nginx_conf(prefix: Path, port: int, backends: dict[str, Backend]) -> str:
    servers = "\n".join(
        # max_fails=0: nginx never takes a server out for a while on its own; a refused
        # connect still moves the request on to the next point's server (proxy_next_upstream
        # error, the default), which is where fastlb sends the keys of a replica it saw die.
        f"        server 127.0.0.1:{b.port} weight={WEIGHTS[name]} max_fails=0;"
        for name, b in backends.items()
    )
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    access_log off;
    upstream backends {{
        hash $request_uri consistent;
{servers}
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def _fastlb_conf(backends: dict[str, Backend]) -> str:
    lines = [
        "[proxy]",
        'listen = "127.0.0.1:{port}"',
        "replica_paths = []",
        "[routing]",
        'table = "ketama"',
        'key = "path"',
        "[replicas]",
        'provider = "static"',
    ]
    # Listed in another order than nginx's servers: the ring must not depend on it.
    for name, b in reversed(backends.items()):
        lines += [
            "[[replicas.static]]",
            f'name = "{name}"',
            f'address = "127.0.0.1:{b.port}"',
            f"weight = {WEIGHTS[name]}",
        ]
    return "\n".join(lines) + "\n"


def _served_by(port: int, targets: list[str]) -> list[str]:
    """X-Served-By of each target, over one kept-alive connection (reopened if it closes)."""
    out: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for target in targets:
            for attempt in (1, 2):
                try:
                    conn.request("GET", target)
                    resp = conn.getresponse()
                    resp.read()
                    break
                except (http.client.HTTPException, ConnectionError):
                    conn.close()
                    if attempt == 2:
                        raise
            assert resp.status == 200, (target, resp.status)
            out.append(resp.getheader("X-Served-By") or "")
    finally:
        conn.close()
    return out


def test_ketama_routes_every_key_as_nginx_does(
    procs: Processes,
    tmp_path: Path,
    start_backend: Callable[..., Backend],
    start_fastlb: Callable[[str], Fastlb],
) -> None:
    assert NGINX is not None
    backends = {name: start_backend("echo", name=name) for name in WEIGHTS}
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    nginx_port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, nginx_port, backends))
    nginx = procs.spawn(
        [NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
    )
    wait_port(nginx_port, 10.0, nginx)
    lb = start_fastlb(_fastlb_conf(backends))
    # Static replicas join the table after a good heartbeat: wait until every one is routed.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(set(_served_by(lb.port, [f"/warm/{i}" for i in range(60)]))) == 3:
            break
        time.sleep(0.2)

    # Distinct request targets of several shapes, the query string included (both hash the
    # whole target: nginx's $request_uri, fastlb's key "path").
    targets = [
        f"/k/{i}" if i % 3 else f"/item/{i * 7919}?page={i % 17}&q=x{i}" for i in range(KEYS)
    ]
    assert len(set(targets)) == KEYS
    through_nginx = _served_by(nginx_port, targets)
    through_fastlb = _served_by(lb.port, targets)

    differ = [t for t, a, b in zip(targets, through_nginx, through_fastlb, strict=True) if a != b]
    assert differ == [], f"{len(differ)} of {KEYS} keys differ, e.g. {differ[:5]}"
    # Not a vacuous agreement: all three backends took keys, roughly by weight (1:2:3).
    counts = Counter(through_nginx)
    assert set(counts) == set(WEIGHTS)
    for name, weight in WEIGHTS.items():
        assert counts[name] / KEYS == pytest.approx(weight / 6, rel=0.25)

    # Failover agrees too: with b2 gone, nginx walks on to the next point's server when the
    # connect is refused, fastlb to the key's next candidate once its heartbeat saw b2 down.
    backends["b2"].proc.kill()
    backends["b2"].proc.wait()
    deadline = time.monotonic() + 15
    while json.loads(lb.get("/status.json")[2])["totals"]["up"] != 2:
        assert time.monotonic() < deadline, "fastlb did not see b2 down"
        time.sleep(0.1)
    sample = targets[:2000]
    after_nginx = _served_by(nginx_port, sample)
    after_fastlb = _served_by(lb.port, sample)
    assert "b2" not in after_nginx
    differ = [t for t, a, b in zip(sample, after_nginx, after_fastlb, strict=True) if a != b]
    assert differ == [], f"{len(differ)} of {len(sample)} keys differ after b2 died"
    # Only b2's keys moved.
    before = dict(zip(targets, through_nginx, strict=True))
    assert all(before[t] == now for t, now in zip(sample, after_nginx, strict=True) if before[t] != "b2")
