"""WebSocket tunnels end to end (issue 13 §2): real fastlb processes in front of real WebSocket
servers (the `websockets` library's, tests/apps/ws_echo.py, and the Starlette app under
uvicorn), with the `websockets` library's client or a raw socket where a test needs to read
slowly or close without a handshake.

The relay machine's part (states, splits, outcome rows) is in tests/test_exchange.py; here
the shell's part: flow control both ways, closes from either side, a replica killed, the idle
timeout, SIGTERM, and the counters on /metrics.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from tests.conftest import (
    COMBINED,
    PY,
    ROOT,
    Fastlb,
    Processes,
    free_port,
    http_get,
    static_config,
    wait_for,
    wait_port,
)
from tests.test_proxy import rss_kib

WS_ECHO = str(ROOT / "tests" / "apps" / "ws_echo.py")
APPS = ROOT / "tests" / "apps"
BIN = Path(sys.executable).parent
StartFastlb = Callable[[str], Fastlb]


class Replica:
    def __init__(self, procs: Processes, name: str = "ws") -> None:
        self.port = free_port()
        self.proc = procs.spawn([PY, WS_ECHO, "--port", str(self.port), "--name", name])
        wait_port(self.port, 15.0, self.proc)


def lb_config(
    replicas: list[tuple[str, int]], *, http: str = "httptools", proxy: str = "", log: str = ""
) -> str:
    text = static_config(0, replicas, http=http, proxy=proxy).replace(":0", ":{port}", 1)
    if log:
        text += f'[log]\naccess = true\naccess_file = "{log}"\n'
    return text


def ws(lb: Fastlb, path: str = "/chat", headers: dict[str, str] | None = None) -> ClientConnection:
    """A `websockets` client through fastlb (no pings: a test's idle tunnel stays idle)."""
    return connect(
        f"ws://127.0.0.1:{lb.port}{path}",
        additional_headers=headers,
        ping_interval=None,
        compression=None,
        open_timeout=10,
        close_timeout=5,
    )


def metrics(lb: Fastlb) -> dict[str, float]:
    """The tunnel samples of /metrics, by sample name (with the direction label if any)."""
    status, _, body = http_get(lb.port, "/metrics")
    assert status == 200
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name.startswith("fastlb_tunnel"):
            for sample in family.samples:
                key = sample.name + "".join(f":{v}" for v in sample.labels.values())
                found[key] = sample.value
    return found


def tunnels_open(lb: Fastlb) -> float:
    return metrics(lb)["fastlb_tunnels_open"]


def tunnel_lines(path: Path) -> list[re.Match[str]]:
    """The access log's lines of tunnels (status 101; /metrics scrapes are logged too)."""
    if not path.exists():
        return []
    lines = [COMBINED.match(line) for line in path.read_text().splitlines()]
    assert all(lines), path.read_text()
    return [m for m in lines if m is not None and m["status"] == "101"]


def log_codes(path: Path) -> list[str]:
    return [m["code"] for m in tunnel_lines(path)]


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_echo_of_10000_messages(
    procs: Processes, start_fastlb: StartFastlb, tmp_path: Path, http: str
) -> None:
    replica = Replica(procs)
    access = tmp_path / "access.log"
    lb = start_fastlb(lb_config([("ws", replica.port)], http=http, log=str(access)))
    sent = 0
    with ws(lb) as conn:
        for i in range(10_000):
            message: str | bytes = f"message {i}" if i % 2 else os.urandom(i % 200)
            conn.send(message)
            assert conn.recv(timeout=10) == message
            sent += len(message) if isinstance(message, bytes) else len(message.encode())
        assert tunnels_open(lb) == 1
    # The client closed: the handshake ended both ends, and the tunnel is counted closed.
    wait_for(lambda: tunnels_open(lb) == 0, 5.0, "the tunnel to be counted closed")
    m = metrics(lb)
    assert m["fastlb_tunnels_total"] == 1
    # Each direction carried every message (framed: more bytes than the payloads).
    assert m["fastlb_tunnel_bytes_total:to_replica"] > sent
    assert m["fastlb_tunnel_bytes_total:to_client"] > sent
    wait_for(lambda: bool(log_codes(access)), 5.0, "the access log line")
    (line,) = tunnel_lines(access)
    assert (line["request"], line["replica"]) == ("GET /chat HTTP/1.1", "ws")
    # Closed by the replica after the close handshake (RFC 6455 §7.1.1: the server closes
    # the TCP connection first) or by the client: either is a normal end.
    assert line["code"] in ("tunnel-replica", "tunnel-client")


def test_a_websocket_server_behind_fastlb_gets_only_the_websocket_upgrade(
    procs: Processes, start_fastlb: StartFastlb
) -> None:
    # h2c listed first: the handshake still works, since only websocket goes on.
    replica = Replica(procs)
    lb = start_fastlb(lb_config([("ws", replica.port)]))
    with ws(lb, headers={"X-Trace": "1"}) as conn:
        conn.send("name")
        assert conn.recv(timeout=5) == "ws"
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(
            b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nupgrade: websocket\r\n" in head.lower()


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def handshake(port: int, path: str = "/chat") -> socket.socket:
    """A raw socket with the WebSocket handshake done (for reading at a pace of one's own)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ") and head.endswith(b"\r\n\r\n"), head
    return sock


def binary_frame(payload: bytes) -> bytes:
    """A client's binary frame (RFC 6455 §5.2), masked with a zero key (payload unchanged)."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65536:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return b"\x82" + length + b"\0\0\0\0" + payload


def test_a_10mb_message_with_a_slow_reader_keeps_rss_flat(
    procs: Processes, start_fastlb: StartFastlb
) -> None:
    size = 10 * 1024 * 1024
    replica = Replica(procs)
    lb = start_fastlb(lb_config([("ws", replica.port)]))
    # A first tunnel with a 1 MB message allocates what a steady state needs.
    with handshake(lb.port) as warm:
        warm.sendall(binary_frame(b"w" * (1 << 20)))
        got = 0
        while got < (1 << 20) + 10:
            got += len(warm.recv(1 << 20))
    base = rss_kib(lb.proc.pid)
    peak = base
    payload = os.urandom(1024) * (size // 1024)
    with handshake(lb.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        # The whole message goes up at once (the replica reads it whole before it echoes).
        sock.sendall(binary_frame(payload))
        peak = max(peak, rss_kib(lb.proc.pid))
        received = bytearray()
        # Read the echo slowly for a while: 64 KiB every 10 ms while the replica could send
        # at memory speed.
        for _ in range(60):
            received += sock.recv(65536)
            time.sleep(0.01)
            peak = max(peak, rss_kib(lb.proc.pid))
        # Then the rest at full speed, still watching.
        while len(received) < size + 10:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed mid-message"
            received += chunk
            peak = max(peak, rss_kib(lb.proc.pid))
    assert received[:2] == b"\x82\x7f" and received[10:] == payload  # the echo, unmasked
    print(f"\nfastlb's RSS grew by {peak - base} KiB relaying 10 MB to a slow reader")
    # Without flow control fastlb holds what the kernel's socket buffers do not: 6 MB of the
    # 10 (measured with ClientConnection.pause_writing not pausing the replica); 320 KiB with.
    assert peak - base < 2 * 1024, f"RSS grew by {peak - base} KiB"


def text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def test_10mb_to_a_replica_that_stops_reading_keeps_rss_flat(
    procs: Processes, start_fastlb: StartFastlb
) -> None:
    # The other direction: the replica stops reading for 2 s while the client sends 10 MB
    # in 64 KiB messages; fastlb stops reading the client (P_BACKEND) rather than buffer.
    replica = Replica(procs)
    lb = start_fastlb(lb_config([("ws", replica.port)]))
    message = os.urandom(64 * 1024)
    count = 160
    with handshake(lb.port) as sock:
        sock.sendall(binary_frame(message))  # a first echo allocates what a steady state needs
        got = bytearray()
        while len(got) < len(message) + 10:  # a 64 KiB payload has an 8-byte length
            got += sock.recv(1 << 20)
        base = rss_kib(lb.proc.pid)
        peak = base
        sock.sendall(text_frame("sleep:2"))
        sock.setblocking(False)
        pending = binary_frame(message) * count
        sent = 0
        started = time.monotonic()
        while sent < len(pending) and time.monotonic() - started < 1.5:
            try:
                sent += sock.send(pending[sent : sent + (1 << 20)])
            except BlockingIOError:
                time.sleep(0.01)
            peak = max(peak, rss_kib(lb.proc.pid))
        # The replica is asleep: what fastlb took meanwhile is in the kernel's socket buffers
        # (loopback's autotuning lets them hold megabytes), not in fastlb.
        asleep = peak - base
        sock.setblocking(True)
        sock.settimeout(10)
        echoed = 0
        expected = count * (len(message) + 10)
        while sent < len(pending) or echoed < expected:
            if sent < len(pending):
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(pending[sent : sent + (1 << 20)])
                sock.settimeout(10)
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                raise AssertionError(f"stalled at {sent} sent, {echoed} echoed") from None
            assert chunk, "closed mid-stream"
            echoed += len(chunk)
            peak = max(peak, rss_kib(lb.proc.pid))
    assert echoed == expected
    print(f"\nfastlb's RSS grew by {asleep} KiB while the replica slept, {peak - base} in all")
    assert peak - base < 2 * 1024, f"RSS grew by {peak - base} KiB"


def test_a_close_from_the_client(
    procs: Processes, start_fastlb: StartFastlb, tmp_path: Path
) -> None:
    replica = Replica(procs)
    access = tmp_path / "access.log"
    lb = start_fastlb(lb_config([("ws", replica.port)], log=str(access)))
    # With the close handshake: done within the close timeout, code 1000 seen by the client.
    with ws(lb) as conn:
        conn.send("hi")
        assert conn.recv(timeout=5) == "hi"
        started = time.monotonic()
        conn.close()
        assert time.monotonic() - started < 2
        assert conn.close_code == 1000
    # Without one: the client's socket just closes; the replica sees the tunnel close.
    sock = handshake(lb.port)
    wait_for(lambda: tunnels_open(lb) == 1, 5.0, "the second tunnel")
    sock.close()
    wait_for(lambda: tunnels_open(lb) == 0, 5.0, "the tunnels to be closed")
    wait_for(lambda: len(log_codes(access)) == 2, 5.0, "two access log lines")
    assert log_codes(access)[1] == "tunnel-client"
    with ws(lb) as again:  # the replica and fastlb are fine
        again.send("again")
        assert again.recv(timeout=5) == "again"


def test_a_close_from_the_server(
    procs: Processes, start_fastlb: StartFastlb, tmp_path: Path
) -> None:
    replica = Replica(procs)
    access = tmp_path / "access.log"
    lb = start_fastlb(lb_config([("ws", replica.port)], log=str(access)))
    with ws(lb) as conn:
        conn.send("close:4000")
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=5)
    # The server's close frame came through, and the client's answer went back.
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert closed.value.rcvd.reason == "asked to close" and closed.value.sent is not None
    wait_for(lambda: tunnels_open(lb) == 0, 5.0, "the tunnel to be closed")
    wait_for(lambda: bool(log_codes(access)), 5.0, "the access log line")
    assert log_codes(access) == ["tunnel-replica"]


def test_the_replica_killed_mid_tunnel(
    procs: Processes, start_fastlb: StartFastlb, tmp_path: Path
) -> None:
    replica = Replica(procs)
    lb = start_fastlb(lb_config([("ws", replica.port)]))
    with ws(lb) as conn:
        conn.send("before")
        assert conn.recv(timeout=5) == "before"
        replica.proc.kill()
        replica.proc.wait(5)
        started = time.monotonic()
        with pytest.raises(ConnectionClosedError) as closed:
            conn.recv(timeout=10)
        assert time.monotonic() - started < 3, "the client waited for a dead replica"
        assert closed.value.rcvd is None  # no close frame: the TCP close only
    wait_for(lambda: tunnels_open(lb) == 0, 5.0, "the tunnel to be closed")
    assert lb.proc.poll() is None


def test_an_idle_tunnel_is_closed_at_tunnel_timeout(
    procs: Processes, start_fastlb: StartFastlb, tmp_path: Path
) -> None:
    replica = Replica(procs)
    access = tmp_path / "access.log"
    lb = start_fastlb(
        lb_config([("ws", replica.port)], proxy="tunnel_timeout = 0.6", log=str(access))
    )
    with ws(lb) as busy, ws(lb) as idle:
        # One message every 0.2 s keeps a tunnel open past the timeout.
        for i in range(8):
            busy.send(str(i))
            assert busy.recv(timeout=5) == str(i)
            time.sleep(0.2)
        # The other said nothing for 1.6 s: closed, with no close frame from anyone.
        with pytest.raises(ConnectionClosed):
            idle.recv(timeout=5)
        busy.send("still")
        assert busy.recv(timeout=5) == "still"
    wait_for(lambda: "tunnel-idle" in log_codes(access), 5.0, "the idle tunnel's log line")
    assert log_codes(access).count("tunnel-idle") == 1


def test_sigterm_closes_tunnels_at_the_end_of_shutdown_timeout(
    procs: Processes, start_fastlb: StartFastlb, tmp_path: Path
) -> None:
    replica = Replica(procs)
    access = tmp_path / "access.log"
    lb = start_fastlb(
        lb_config([("ws", replica.port)], proxy="shutdown_timeout = 1.5", log=str(access))
    )
    with ws(lb) as conn:
        conn.send("hi")
        assert conn.recv(timeout=5) == "hi"
        lb.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        time.sleep(0.3)
        conn.send("during the grace")  # still relayed while the grace runs
        assert conn.recv(timeout=5) == "during the grace"
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=10)
        took = time.monotonic() - started
    assert 1.2 < took < 4.0, took
    assert lb.proc.wait(10) == 0
    assert log_codes(access) == ["tunnel-shutdown"]


@pytest.fixture
def uvicorn_lb(procs: Processes, tmp_path: Path) -> Fastlb:
    """fastlb running the Starlette app under uvicorn as three replicas ([replicas] command),
    routed by the X-Room header."""
    port = free_port()
    command = [
        str(BIN / "uvicorn"), "starlette_app:app", "--fd", "{fd}", "--no-access-log",
    ]
    path = tmp_path / "lb.toml"
    path.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{port}"\nreplica_paths = []\n'
        '[routing]\nkey = "header:X-Room"\n'
        '[replicas]\nnames = ["App1", "App2", "App3"]\n'
        f"command = {json.dumps(command)}\n"
        f'env = {{ REPLICA_NAME = "{{name}}" }}\ncwd = "{APPS}"\nstart_timeout = 30\n'
        '[health]\npath = "/healthz"\n'
    )
    log = (tmp_path / "lb.log").open("wb")
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(path)], stderr=log)
    log.close()
    wait_port(port, 60.0, proc)
    lb = Fastlb(proc, port, path)
    # fastlb's own /healthz (the apps' /healthz is their heartbeat, asked of them directly).
    wait_for(
        lambda: json.loads(http_get(port, "/healthz")[2])["up"] == 3, 30.0, "the apps to be up"
    )
    return lb


def test_the_uvicorn_apps_websocket_route_routed_by_the_same_key(uvicorn_lb: Fastlb) -> None:
    served: set[str] = set()
    for room in ("a", "b", "c", "d", "e", "f"):
        status, headers, _ = http_get(uvicorn_lb.port, "/home", {"X-Room": room})
        assert status == 200
        name = headers["x-served-by"]
        served.add(name)
        with ws(uvicorn_lb, "/ws", headers={"X-Room": room}) as conn:
            for i in range(20):
                conn.send(f"{room}{i}")
                # The tunnel reached the replica a plain request with that key reaches.
                assert conn.recv(timeout=5) == f"{name}: {room}{i}"
            conn.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                conn.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert len(served) >= 2  # the key spread the rooms: routing was exercised
