"""The data path end to end: a real fastlb process, real backends, real sockets.

Each test runs with both parsers where the parser could matter (`http` parameter).
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    COMBINED,
    Backend,
    Fastlb,
    free_port,
    http_get,
    raw_exchange,
    read_response,
    static_config,
    wait_for,
)

StartFastlb = Callable[[str], Fastlb]
StartBackend = Callable[..., Backend]

PARSERS = ["httptools", "h11"]


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def echo(start_backend: StartBackend) -> Backend:
    return start_backend("echo", name="echo")


@pytest.fixture
def lb(start_fastlb: StartFastlb, echo: Backend, parser: str) -> Fastlb:
    return start_fastlb(static_config(0, [("echo", echo.port)], http=parser).replace(":0", ":{port}"))


def forwarded(backend: Backend) -> list[str]:
    """What reached `backend` of the clients' requests (fastlb's heartbeats left out)."""
    return [line for line in backend.requests() if not line.startswith("GET /heartbeat ")]


def echoed(body: bytes) -> dict[str, object]:
    return json.loads(body)  # type: ignore[no-any-return]


def header_names(seen: dict[str, object]) -> list[str]:
    headers = seen["headers"]
    assert isinstance(headers, list)
    return [name for name, _ in headers]


# ------------------------------------------------------------------- relaying
def test_keep_alive_both_sides(lb: Fastlb) -> None:
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        buf = bytearray()
        conns = set()
        for i in range(5):
            sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            head, body = read_response(sock, buf)
            assert head.startswith(b"HTTP/1.1 200 ")
            seen = echoed(body)
            assert seen["target"] == f"/k{i}"
            conns.add(seen["conn"])
    # One client connection, one pooled backend connection reused for every request.
    assert len(conns) == 1


def test_pipelined_requests_answered_in_order(lb: Fastlb) -> None:
    batch = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(10))
    batch += b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    data = raw_exchange(lb.port, batch)
    targets = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["target"]
               for part in data.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert targets == [f"/p{i}" for i in range(10)] + ["/last"]
    assert b"Connection: close" in data.rsplit(b"HTTP/1.1 200 OK", 1)[1]


def test_http10_client_is_closed_after_the_response(lb: Fastlb) -> None:
    data = raw_exchange(lb.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK")
    seen = echoed(data.split(b"\r\n\r\n", 1)[1])
    assert seen["version"] == "1.0"


def test_http10_keep_alive_is_honoured(lb: Fastlb) -> None:
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        buf = bytearray()
        for _ in range(2):
            sock.sendall(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head, _ = read_response(sock, buf)
            assert b"Connection: keep-alive" in head


def test_forwarded_headers_added_and_hop_by_hop_dropped(lb: Fastlb) -> None:
    status, _, body = lb.get(
        "/h",
        {"Connection": "keep-alive, X-Secret", "X-Secret": "s", "Keep-Alive": "300",
         "Proxy-Authorization": "Basic x", "X-Forwarded-For": "192.0.2.1", "X-Kept": "yes"},
    )
    assert status == 200
    seen = echoed(body)
    pairs = seen["headers"]
    assert isinstance(pairs, list)
    headers = {name: value for name, value in pairs}
    names = header_names(seen)
    for hop in ("connection", "x-secret", "keep-alive", "proxy-authorization"):
        assert hop not in names
    assert headers["x-kept"] == "yes"
    assert headers["x-forwarded-for"] == "192.0.2.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"


def test_forwarded_headers_can_be_turned_off(
    start_fastlb: StartFastlb, echo: Backend
) -> None:
    cfg = static_config(0, [("echo", echo.port)], proxy="forwarded_headers = false")
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    _, _, body = lb.get("/h")
    assert "x-forwarded-for" not in header_names(echoed(body))


@pytest.mark.parametrize("size", [0, 1, 70_000, 3_000_000])
def test_request_body_with_content_length_arrives_intact(lb: Fastlb, size: int) -> None:
    import hashlib
    import http.client

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    conn.request("POST", "/upload", body=payload)
    seen = echoed(conn.getresponse().read())
    conn.close()
    assert seen["body_len"] == size
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_chunked_request_body_arrives_intact(lb: Fastlb) -> None:
    import hashlib

    chunks = [b"a" * 10, b"b" * 70000, b"c"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        head = b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head + body[:5])
        time.sleep(0.05)  # the body arrives in pieces, after the head went out
        sock.sendall(body[5:])
        _, resp = read_response(sock, bytearray())
    seen = echoed(resp)
    assert seen["body_len"] == 70011
    assert seen["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_chunked_response_relayed(start_fastlb: StartFastlb, start_backend: StartBackend) -> None:
    backend = start_backend("chunked", size=50_000)
    lb = start_fastlb(static_config(0, [("c", backend.port)]).replace(":0", ":{port}"))
    for _ in range(3):  # the pooled connection is reused after each chunked response
        status, headers, body = lb.get("/chunks")
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert body == b"c" * 50_000


def test_close_delimited_response_relayed(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    backend = start_backend("close", size=30_000)
    lb = start_fastlb(static_config(0, [("c", backend.port)]).replace(":0", ":{port}"))
    data = raw_exchange(lb.port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head
    assert body == b"d" * 30_000


def test_interim_responses_are_relayed_before_the_final_one(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    backend = start_backend("interim")
    lb = start_fastlb(static_config(0, [("i", backend.port)]).replace(":0", ":{port}"))
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        buf = bytearray()
        for i in range(2):  # and the connection stays usable after them
            sock.sendall(b"GET /i%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            heads = []
            while True:
                head, body = read_response(sock, buf)
                heads.append(head.split(b"\r\n", 1)[0])
                if not head.startswith(b"HTTP/1.1 1"):
                    break
            assert heads == [b"HTTP/1.1 100 Continue", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 200 OK"]
            assert echoed(body)["target"] == f"/i{i}"


def test_head_request_has_no_body(lb: Fastlb) -> None:
    status, headers, body = http_get(lb.port, "/h", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


# ---------------------------------------------------------------- failures
def test_unknown_path_gets_the_spec_error(
    start_fastlb: StartFastlb, echo: Backend, parser: str
) -> None:
    cfg = static_config(0, [("echo", echo.port)], http=parser, paths=["/home", "/heartbeat"])
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    status, headers, body = lb.get("/other")
    assert status == 400
    assert body == (
        b'{"message": "<Error> \'/other\' endpoint does not exist in server replicas", '
        b'"status": "failure"}'
    )
    assert headers["content-type"] == "application/json"
    assert forwarded(echo) == []
    assert lb.get("/home?x=1")[0] == 200


def test_refused_replica_falls_through_to_the_next(
    start_fastlb: StartFastlb, start_backend: StartBackend, echo: Backend
) -> None:
    # Routed (it answered its first heartbeat), then gone: its port refuses connections, and
    # the requests keyed to it fall through to the next candidate until the table drops it.
    doomed = start_backend("echo", name="doomed")
    cfg = static_config(0, [("doomed", doomed.port), ("echo", echo.port)])
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    doomed.proc.kill()
    doomed.proc.wait()
    results = [lb.get(f"/r{i}") for i in range(40)]
    assert all(status == 200 for status, _, _ in results)
    assert len(forwarded(echo)) == 40


def test_a_static_replica_down_at_start_gets_no_traffic(
    start_fastlb: StartFastlb, start_backend: StartBackend, echo: Backend
) -> None:
    # A static replica is routed only after its first good heartbeat (as a local one is after
    # its startup heartbeat): one that accepts and never answers is never sent a request.
    hang = start_backend("hang", name="hang")
    cfg = static_config(0, [("hang", hang.port), ("echo", echo.port)], proxy="backend_timeout = 2")
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    results = [lb.get(f"/r{i}") for i in range(20)]
    assert [status for status, _, _ in results] == [200] * 20
    assert {headers["x-served-by"] for _, headers, _ in results} == {"echo"}
    assert forwarded(hang) == []


def test_no_replica_left_is_a_503(start_fastlb: StartFastlb) -> None:
    cfg = static_config(0, [("a", free_port()), ("b", free_port())])
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    status, _, body = lb.get("/x")
    assert status == 503
    assert json.loads(body) == {
        "message": "<Error> no replica is available to serve the request",
        "status": "failure",
    }


@pytest.mark.parametrize("replicas", [1, 2])
def test_pipelined_requests_behind_a_503_are_each_answered(
    start_fastlb: StartFastlb, parser: str, replicas: int
) -> None:
    # Every replica's port refuses: with a route whose members all refuse, and with no route at
    # all once heartbeats take them out, each pipelined request gets its own 503, in order.
    cfg = static_config(0, [(f"d{i}", free_port()) for i in range(replicas)], http=parser)
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    batch = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(3))
    batch += b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    # At once: routed to ports that refuse (or, once static replicas wait for their first
    # heartbeat, no route yet).
    data = raw_exchange(lb.port, batch)
    assert data.count(b"HTTP/1.1 503 ") == 4, data
    # Then with every replica down by its heartbeats: no route at all.
    deadline = time.monotonic() + 20
    while re.search(rb"^fastlb_replica_up\{.*\} 1", http_get(lb.port, "/metrics")[2], re.M):
        assert time.monotonic() < deadline, "a replica is still up"
        time.sleep(0.05)
    data = raw_exchange(lb.port, batch)
    assert data.count(b"HTTP/1.1 503 ") == 4, data


def test_thousands_of_pipelined_requests_behind_own_answers(
    start_fastlb: StartFastlb, echo: Backend, parser: str
) -> None:
    # Found by bench.fuzz: each own answer read the next pipelined request from inside the
    # last one's ending, and 20,000 of them overflowed the stack (a RecursionError from source,
    # a segfault compiled). Sent from a thread while this one reads: fastlb stops reading a
    # client that does not read its answers.
    cfg = static_config(0, [("echo", echo.port)], http=parser, paths=["/home"])
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    batch = b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" * 20_000
    batch += b"GET /home HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", lb.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(batch,), daemon=True)
        sender.start()
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
        sender.join(10)
    data = b"".join(chunks)
    assert data.count(b"HTTP/1.1 400 ") == 20_000
    assert data.rsplit(b"HTTP/1.1 ", 1)[1].startswith(b"200 OK")
    assert lb.proc.poll() is None
    reached = forwarded(echo)
    assert len(reached) == 1 and reached[0].startswith("GET /home "), reached


@pytest.fixture
def quirky() -> Iterator[Callable[[bytes | None], int]]:
    """A replica (in a thread, on a real socket) that answers /heartbeat, so that it is routed,
    and every other request with the given bytes (None: never). Returns its port."""
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(answer: bytes | None) -> int:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                if data.startswith(b"GET /heartbeat "):
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                elif answer is None:
                    while self.request.recv(65536):  # until fastlb gives up and closes
                        pass
                else:
                    self.request.sendall(answer)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        port: int = server.server_address[1]
        return port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_upload_that_fails_over_to_a_503_leaves_the_connection_readable(
    start_fastlb: StartFastlb, start_backend: StartBackend, parser: str
) -> None:
    # A body that arrives whole while the replica connection is being opened waits in fastlb,
    # which stops reading the client past high_water; the connect is refused (the replica
    # died after its heartbeat) and the request gets a keep-alive 503. That pause belonged to
    # the exchange: the next request on the connection must be read and answered.
    doomed = start_backend("echo", name="doomed")
    cfg = static_config(
        0, [("doomed", doomed.port)], http=parser,
        proxy="high_water = 16384\nlow_water = 4096\nidle_timeout = 30",
    ) + "[health]\ninterval = 30\ntimeout = 1\n"
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    doomed.proc.kill()
    doomed.proc.wait()
    body = b"u" * 40_000
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        buf = bytearray()
        head, _ = read_response(sock, buf)
        assert head.startswith(b"HTTP/1.1 503 "), head
        if b"Connection: close" in head:
            pytest.skip("the body did not arrive in one read: the scenario did not happen")
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_response(sock, buf)  # timed out (5 s) when reading stayed paused
        assert head.startswith(b"HTTP/1.1 503 "), head


def test_replica_that_does_not_answer_is_a_504(
    start_fastlb: StartFastlb, quirky: Callable[[bytes | None], int]
) -> None:
    cfg = static_config(0, [("h", quirky(None))], proxy="backend_timeout = 0.5")
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    started = time.monotonic()
    status, _, body = lb.get("/slow")
    assert status == 504
    assert time.monotonic() - started < 5
    assert json.loads(body)["status"] == "failure"


def test_garbage_from_a_replica_is_a_502(
    start_fastlb: StartFastlb, quirky: Callable[[bytes | None], int]
) -> None:
    port = quirky(b"THIS IS NOT HTTP\r\n\r\n")
    lb = start_fastlb(static_config(0, [("g", port)]).replace(":0", ":{port}"))
    status, _, body = lb.get("/x")
    assert status == 502
    assert json.loads(body)["message"].startswith("<Error> replica sent an invalid response")


def test_stale_pooled_connection_is_retried(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    # This replica answers once per connection and drops the connection on the next
    # request: what a replica whose keep-alive timer fired looks like to a pool.
    backend = start_backend("one-per-conn")
    lb = start_fastlb(static_config(0, [("o", backend.port)]).replace(":0", ":{port}"))
    for i in range(10):
        status, _, _ = lb.get(f"/s{i}")
        assert status == 200


# ------------------------------------------------------------------ bad input
BAD_REQUESTS = {
    "malformed request line": (b"GET\x00/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "bad header": (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400),
    "bare LF": (b"GET / HTTP/1.1\nHost: t\n\n\r\n\r\n", 400),
    "CL and TE": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "differing CL": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    "TE not final chunked": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "TE gzip": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxx", 400),
    "bad chunk size": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
        400,
    ),
    "oversize headers": (
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n",
        431,
    ),
    "too many fields": (
        b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120))
        + b"\r\n",
        431,
    ),
    "endless head": (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000, 431),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_refused_and_never_forwarded(
    lb: Fastlb, echo: Backend, case: str
) -> None:
    request, status = BAD_REQUESTS[case]
    data = raw_exchange(lb.port, request)  # returns only once fastlb closes the connection
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:80]
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head
    assert json.loads(body)["status"] == "failure"
    assert forwarded(echo) == []


def test_bad_chunk_after_the_head_cuts_the_replica_off(lb: Fastlb, echo: Backend) -> None:
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.1)
        sock.sendall(b"nothex\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 400 ")
    # The replica saw a head and part of a body, then its connection was closed: it never
    # got a complete request, so it never answered one.
    assert forwarded(echo) == []


def test_slow_headers_get_408(start_fastlb: StartFastlb, echo: Backend) -> None:
    cfg = static_config(0, [("echo", echo.port)], proxy="header_timeout = 0.4")
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 3
        assert sock.recv(100) == b""


def test_idle_keep_alive_connection_is_closed(start_fastlb: StartFastlb, echo: Backend) -> None:
    cfg = static_config(0, [("echo", echo.port)], proxy="idle_timeout = 0.4")
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock, bytearray())
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed quietly, no response
        assert time.monotonic() - started < 3


# -------------------------------------------------------------- backpressure
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_of_a_100mb_response_keeps_rss_flat(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    size = 100 * 1024 * 1024
    backend = start_backend("big", size=size)
    lb = start_fastlb(static_config(0, [("big", backend.port)]).replace(":0", ":{port}"))
    lb.get("/warm")  # the first exchange allocates what a steady state needs
    base = rss_kib(lb.proc.pid)
    peak = base
    received = 0
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        # Read slowly for a while: 64 KiB every 10 ms while the replica could send GB/s.
        for _ in range(150):
            chunk = sock.recv(65536)
            received += len(chunk)
            time.sleep(0.01)
            peak = max(peak, rss_kib(lb.proc.pid))
        # Then take the rest at full speed, still watching.
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
            if received % (8 << 20) < (1 << 20):
                peak = max(peak, rss_kib(lb.proc.pid))
    assert received > size  # head + the whole body arrived
    # Without backpressure fastlb would hold ~100 MB; with it, a few socket buffers.
    assert peak - base < 16 * 1024, f"RSS grew by {peak - base} KiB"




def wait_lines(log: Path, count: int) -> list[str]:
    """The access log's lines, once it has `count` (it is flushed by a timer)."""
    deadline = time.monotonic() + 10
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_access_log_lines(start_fastlb: StartFastlb, echo: Backend, tmp_path: Path) -> None:
    # The default format is nginx's combined one, which log tools read as it is.
    log = tmp_path / "access.log"
    cfg = static_config(0, [("echo", echo.port)], paths=["/ok"]).replace(":0", ":{port}")
    lb = start_fastlb(cfg + f'[log]\naccess = true\naccess_file = "{log}"\n')
    before = time.time()
    agent = 'curl/8 "quoted" \\'
    assert lb.get("/ok?x=1", {"User-Agent": agent, "Referer": "http://a/b"})[0] == 200
    assert lb.get("/missing")[0] == 400
    first, second = (COMBINED.match(line) for line in wait_lines(log, 2))
    assert first is not None and second is not None, log.read_text()
    assert first["ip"] == "127.0.0.1" and first["request"] == "GET /ok?x=1 HTTP/1.1"
    assert (first["status"], first["replica"], first["code"]) == ("200", "echo", "-")
    # A quote or backslash in a field cannot end it early (nginx's \xHH escaping).
    assert first["agent"] == "curl/8 \\x22quoted\\x22 \\x5C", first["agent"]
    assert first["referer"] == "http://a/b" and int(first["bytes"]) > 0 and float(first["ms"]) >= 0
    stamp = datetime.datetime.strptime(first["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
    assert before - 1 <= stamp <= time.time() + 1
    assert second["request"] == "GET /missing HTTP/1.1" and second["agent"] == "-"
    assert (second["status"], second["replica"], second["referer"]) == ("400", "-", "-")


def test_access_log_json_and_reopened_on_sighup(
    start_fastlb: StartFastlb, echo: Backend, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    cfg = static_config(0, [("echo", echo.port)], paths=["/ok"]).replace(":0", ":{port}")
    lb = start_fastlb(cfg + f'[log]\naccess = true\naccess_file = "{log}"\naccess_format = "json"\n')
    assert lb.get("/ok?x=1")[0] == 200
    (line,) = wait_lines(log, 1)
    record = json.loads(line)
    assert set(record) == {
        "time", "client", "method", "target", "status", "bytes", "duration", "replica", "code"
    }
    assert (record["client"], record["method"], record["target"]) == ("127.0.0.1", "GET", "/ok?x=1")
    assert (record["status"], record["replica"], record["code"]) == (200, "echo", None)
    assert record["bytes"] > 0 and record["duration"] >= 0
    stamp = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert abs(stamp.timestamp() - time.time()) < 10
    # logrotate: move the file, SIGHUP; the next lines go to a new file under the old name.
    log.rename(tmp_path / "access.log.1")
    lb.proc.send_signal(signal.SIGHUP)
    wait_for(log.exists, 5, "the access log opened again")
    assert lb.get("/ok?y=2")[0] == 200
    (line,) = wait_lines(log, 1)
    assert json.loads(line)["target"] == "/ok?y=2"
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 1



def test_access_format_follows_a_reload(start_fastlb: StartFastlb, echo: Backend, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    cfg = static_config(0, [("echo", echo.port)], paths=["/ok"]).replace(":0", ":{port}")
    lb = start_fastlb(cfg + f'[log]\naccess = true\naccess_file = "{log}"\n')
    assert lb.get("/ok?a")[0] == 200
    (first,) = wait_lines(log, 1)
    assert COMBINED.match(first), first
    lb.config.write_text(lb.config.read_text() + 'access_format = "json"\n')
    lb.proc.send_signal(signal.SIGHUP)

    def json_now() -> bool:
        lb.get("/ok?b")
        lines = log.read_text().splitlines()
        return lines[-1].startswith("{")

    wait_for(json_now, 10, "JSON lines after the reload")
    assert json.loads(log.read_text().splitlines()[-1])["target"] == "/ok?b"


def test_access_log_has_refused_cut_and_aborted_exchanges(
    start_fastlb: StartFastlb, quirky: Callable[[bytes | None], int], tmp_path: Path
) -> None:
    # Each exchange gets its line, also when it does not end cleanly: the status fastlb sent
    # ("-" when none) and a short reason in the last field ("-" for a clean end).
    logs = {}
    lbs = {}
    for name, answer in (("cut", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
                         ("hang", None)):
        logs[name] = tmp_path / f"{name}.log"
        cfg = static_config(0, [(name, quirky(answer))]).replace(":0", ":{port}")
        lbs[name] = start_fastlb(cfg + f'[log]\naccess = true\naccess_file = "{logs[name]}"\n')
    # Refused by policy (two Host fields: RFC 9110 §7.2, a 400), nothing forwarded.
    data = raw_exchange(lbs["cut"].port, b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")
    # Cut: the replica closes after 5 of its 100 body bytes; the client sees the 200 head only.
    data = raw_exchange(lbs["cut"].port, b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"short")
    # Aborted: the client goes away (a reset: a FIN alone is a half-close, whose answer is
    # still owed) while the replica has not answered.
    with socket.create_connection(("127.0.0.1", lbs["hang"].port), timeout=5) as sock:
        sock.sendall(b"GET /gone HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)  # the request reaches the replica first
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    refused, cut = (COMBINED.match(line) for line in wait_lines(logs["cut"], 2))
    (aborted,) = (COMBINED.match(line) for line in wait_lines(logs["hang"], 1))
    assert refused is not None and cut is not None and aborted is not None
    assert (refused["replica"], refused["status"], refused["code"]) == ("-", "400", "refused")
    assert cut["request"] == "GET /cut HTTP/1.1"
    assert (cut["replica"], cut["status"], cut["code"]) == ("cut", "200", "replica-closed")
    assert aborted["request"] == "GET /gone HTTP/1.1"
    assert (aborted["replica"], aborted["status"], aborted["code"]) == ("hang", "-", "client-aborted")
