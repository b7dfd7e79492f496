"""The replica as the balancer and its clients see it: real processes, real sockets.

Each test talks HTTP over TCP to a `python -m replica` process, because what matters is what goes
over the wire (exact bytes, framing, connection handling), not what the code means to send.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 10.0
IO_TIMEOUT = 5.0


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    listening_line: str

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=IO_TIMEOUT)

    def socket(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)

    def get(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = self.connect()
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REPLICA_NAME", "SERVER_ID")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"replica exited with {proc.returncode} before answering: {err}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            try:
                conn.request("GET", "/heartbeat")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"replica did not answer /heartbeat on port {port} within {START_TIMEOUT}s")


@contextmanager
def replica_process(
    name: str | None, *args: str, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """A replica on a free port, ready (it answered /heartbeat); killed by pid whatever happens."""
    port = free_port()
    argv = [sys.executable, "-m", "replica", "--port", str(port), *args]
    if name is not None:
        argv += ["--name", name]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=_child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_ready(proc, port)
        assert proc.stderr is not None
        line = proc.stderr.readline().decode().strip()
        yield Running(name or "", port, proc, line)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=IO_TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="module")
def replica() -> Iterator[Running]:
    with replica_process("Alpha") as running:
        yield running


def read_response(f: BinaryIO, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response off a raw connection, framed by its Content-Length."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = b"" if head else f.read(int(headers.get("content-length", "0")))
    return status, headers, body


def assert_closed(sock: socket.socket) -> None:
    assert sock.recv(1) == b""


# -- the classic API --------------------------------------------------------------------------


def test_prints_one_listening_line(replica: Running) -> None:
    assert replica.listening_line == f"replica Alpha listening on 127.0.0.1:{replica.port}"


def test_home_exact_bytes(replica: Running) -> None:
    response, body = replica.get("/home")
    assert response.status == 200
    assert body == b'{"message": "Hello from Server: Alpha", "status": "successful"}'
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Content-Length") == str(len(body))
    assert response.getheader("X-Served-By") == "Alpha"


def test_heartbeat_is_empty_200(replica: Running) -> None:
    response, body = replica.get("/heartbeat")
    assert response.status == 200
    assert body == b""
    assert response.getheader("Content-Length") == "0"
    assert response.getheader("X-Served-By") == "Alpha"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/home", 200),
        ("GET", "/home?x=1", 200),
        ("HEAD", "/heartbeat", 200),
        ("GET", "/neo?start_date=2020-01-01", 200),
        ("GET", "/neo", 400),
        ("GET", "/apod?date=2020-01-01", 200),
        ("GET", "/apod?date=1900-01-01", 400),
        ("GET", "/nope", 404),
        ("POST", "/home", 405),
        ("DELETE", "/neo", 405),
    ],
)
def test_every_response_says_who_served_it(
    replica: Running, method: str, path: str, status: int
) -> None:
    response, body = replica.get(path, method)
    assert response.status == status
    assert response.getheader("X-Served-By") == "Alpha"
    if method != "HEAD":
        assert response.getheader("Content-Length") == str(len(body))
    if body:
        assert response.getheader("Content-Type") == "application/json"
        json.loads(body)


def test_unknown_path_is_404_in_classic_shape(replica: Running) -> None:
    response, body = replica.get("/other?a=b")
    assert response.status == 404
    assert json.loads(body) == {
        "message": "<Error> '/other' endpoint does not exist in server replicas",
        "status": "failure",
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_known_paths_are_405(replica: Running, method: str) -> None:
    response, body = replica.get("/home", method)
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD"
    document = json.loads(body)
    assert document["status"] == "failure"
    assert document["message"].startswith("<Error> ")


@pytest.mark.parametrize("path", ["/home", "/heartbeat", "/neo?start_date=2021-02-03", "/apod",
                                  "/missing"])
def test_head_has_get_headers_and_no_body(replica: Running, path: str) -> None:
    get, get_body = replica.get(path)
    with replica.socket() as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1:{replica.port}\r\n\r\n".encode()
                     + b"GET /heartbeat HTTP/1.1\r\n\r\n")
        f = sock.makefile("rb")
        status, headers, body = read_response(f, head=True)
        # If HEAD had sent a body, it would be read here instead of the heartbeat's status line.
        assert read_response(f)[0] == 200
    assert status == get.status
    assert body == b""
    assert headers["content-length"] == str(len(get_body))
    assert headers["x-served-by"] == "Alpha"


# -- /neo ----------------------------------------------------------------------------------------


def test_neo_feed_shape(replica: Running) -> None:
    host = f"127.0.0.1:{replica.port}"
    response, body = replica.get("/neo?start_date=2015-09-07&end_date=2015-09-08")
    assert response.status == 200
    feed = json.loads(body)
    assert list(feed) == ["links", "element_count", "near_earth_objects"]
    assert feed["links"] == {
        "next": f"http://{host}/neo?start_date=2015-09-08&end_date=2015-09-09",
        "previous": f"http://{host}/neo?start_date=2015-09-06&end_date=2015-09-07",
        "self": f"http://{host}/neo?start_date=2015-09-07&end_date=2015-09-08",
    }
    days = feed["near_earth_objects"]
    assert list(days) == ["2015-09-07", "2015-09-08"]
    assert feed["element_count"] == sum(len(objects) for objects in days.values())
    for day, objects in days.items():
        assert 3 <= len(objects) <= 12
        for neo in objects:
            _check_neo(neo, day)


def _check_neo(neo: dict[str, Any], day: str) -> None:
    assert neo["id"].isdigit() and neo["neo_reference_id"] == neo["id"]
    assert isinstance(neo["name"], str) and neo["name"].endswith(")")
    assert neo["nasa_jpl_url"].startswith("https://ssd.jpl.nasa.gov/")
    assert isinstance(neo["absolute_magnitude_h"], float)
    diameters = neo["estimated_diameter"]
    assert set(diameters) == {"kilometers", "meters", "miles", "feet"}
    for unit in diameters.values():
        assert 0 < unit["estimated_diameter_min"] < unit["estimated_diameter_max"]
    assert diameters["meters"]["estimated_diameter_min"] == pytest.approx(
        diameters["kilometers"]["estimated_diameter_min"] * 1000
    )
    assert isinstance(neo["is_potentially_hazardous_asteroid"], bool)
    assert isinstance(neo["is_sentry_object"], bool)
    (approach,) = neo["close_approach_data"]
    assert approach["close_approach_date"] == day
    assert approach["close_approach_date_full"][:4] == day[:4]
    assert isinstance(approach["epoch_date_close_approach"], int)
    assert approach["orbiting_body"] == "Earth"
    speeds = approach["relative_velocity"]
    assert set(speeds) == {"kilometers_per_second", "kilometers_per_hour", "miles_per_hour"}
    distances = approach["miss_distance"]
    assert set(distances) == {"astronomical", "lunar", "kilometers", "miles"}
    for number in (*speeds.values(), *distances.values()):
        assert isinstance(number, str) and float(number) > 0
    assert float(speeds["kilometers_per_hour"]) == pytest.approx(
        float(speeds["kilometers_per_second"]) * 3600
    )


def test_neo_end_date_defaults_to_seven_days_later(replica: Running) -> None:
    response, body = replica.get("/neo?start_date=2024-02-26")
    assert response.status == 200
    days = list(json.loads(body)["near_earth_objects"])
    start = date(2024, 2, 26)
    assert days == [(start + timedelta(days=n)).isoformat() for n in range(8)]


def test_neo_same_date_twice_is_identical(replica: Running) -> None:
    assert replica.get("/neo?start_date=2001-01-01&end_date=2001-01-03")[1] == replica.get(
        "/neo?start_date=2001-01-01&end_date=2001-01-03"
    )[1]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start_date=2015-09-07&end_date=2015-09-15", "The Feed date limit is only 7 Days"),
        ("start_date=2015-09-07&end_date=2015-09-06", "end_date"),
        ("start_date=2015-13-07", "Date Format Exception"),
        ("start_date=07-09-2015", "Date Format Exception"),
        ("start_date=2015-09-07&end_date=soon", "Date Format Exception"),
        ("", "start_date"),
        ("end_date=2015-09-07", "start_date"),
    ],
)
def test_neo_errors_are_nasa_shaped(replica: Running, query: str, message: str) -> None:
    target = f"/neo?{query}" if query else "/neo"
    response, body = replica.get(target)
    assert response.status == 400
    error = json.loads(body)
    assert list(error) == ["code", "http_error", "error_message", "request"]
    assert error["code"] == 400
    assert error["http_error"] == "BAD_REQUEST"
    assert message in error["error_message"]
    assert error["request"] == f"http://127.0.0.1:{replica.port}{target}"


# -- /apod ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["1995-06-16", "2000-02-29", "2013-07-04", "2026-12-31"])
def test_apod_shape(replica: Running, day: str) -> None:
    response, body = replica.get(f"/apod?date={day}")
    assert response.status == 200
    entry = json.loads(body)
    assert entry["date"] == day
    assert entry["service_version"] == "v1"
    assert entry["media_type"] in ("image", "video")
    assert entry["title"] and entry["explanation"].endswith((".", "?"))
    assert entry["url"].startswith("https://")
    assert ("hdurl" in entry) == (entry["media_type"] == "image")
    assert set(entry) <= {"copyright", "date", "explanation", "hdurl", "media_type",
                          "service_version", "title", "url"}


def test_apod_without_date_is_the_last_day(replica: Running) -> None:
    assert replica.get("/apod")[1] == replica.get("/apod?date=2026-12-31")[1]


@pytest.mark.parametrize(
    ("day", "fragment"),
    [
        ("1995-06-15", "between Jun 16, 1995 and Dec 31, 2026"),
        ("2027-01-01", "between Jun 16, 1995 and Dec 31, 2026"),
        ("2020-02-30", "does not match format"),
        ("yesterday", "does not match format"),
    ],
)
def test_apod_errors(replica: Running, day: str, fragment: str) -> None:
    response, body = replica.get(f"/apod?date={day}")
    assert response.status == 400
    error = json.loads(body)
    assert list(error) == ["code", "msg"]
    assert error["code"] == 400
    assert fragment in error["msg"]


# -- connection handling ---------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(replica: Running) -> None:
    conn = replica.connect()
    try:
        ports = set()
        for path in ["/home", "/heartbeat", "/apod", "/nope", "/home"]:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.getheader("Connection") is None
            assert conn.sock is not None
            ports.add(conn.sock.getsockname()[1])
        assert len(ports) == 1
    finally:
        conn.close()


def test_http10_closes_after_the_response(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"GET /home HTTP/1.0\r\n\r\n")
        f = sock.makefile("rb")
        status, headers, body = read_response(f)
        assert status == 200
        assert headers["connection"] == "close"
        assert body == b'{"message": "Hello from Server: Alpha", "status": "successful"}'
        assert f.read() == b""


def test_http10_keep_alive_when_asked(replica: Running) -> None:
    with replica.socket() as sock:
        f = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(b"GET /heartbeat HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(f)
            assert status == 200
            assert headers["connection"] == "keep-alive"


def test_http11_connection_close_is_honoured(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\nConnection: close\r\n\r\nGET /home HTTP/1.1\r\n\r\n")
        f = sock.makefile("rb")
        status, headers, _ = read_response(f)
        assert (status, headers["connection"]) == (200, "close")
        assert f.read() == b""


PIPELINE = [
    ("GET", "/home", 200),
    ("GET", "/neo?start_date=2010-10-10&end_date=2010-10-11", 200),
    ("GET", "/missing", 404),
    ("HEAD", "/home", 200),
    ("POST", "/heartbeat", 405),
    ("GET", "/apod?date=2012-12-12", 200),
    ("GET", "/heartbeat", 200),
]


def _pipeline(running: Running) -> list[tuple[int, dict[str, str], bytes]]:
    raw = b"".join(
        f"{m} {p} HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\nContent-Length: 0\r\n\r\n".encode()
        for m, p, _ in PIPELINE
    )
    with running.socket() as sock:
        sock.sendall(raw)
        f = sock.makefile("rb")
        return [read_response(f, head=m == "HEAD") for m, _, _ in PIPELINE]


def test_pipelined_requests_are_answered_in_order(replica: Running) -> None:
    answers = _pipeline(replica)
    assert [status for status, _, _ in answers] == [status for _, _, status in PIPELINE]
    for (method, path, _), (_, _, body) in zip(PIPELINE, answers, strict=True):
        if method == "GET":
            assert body == replica.get(path, headers={"Host": f"127.0.0.1:{replica.port}"})[1]


def test_pipelined_bytes_split_anywhere(replica: Running) -> None:
    raw = b"GET /home HTTP/1.1\r\n\r\nGET /heartbeat HTTP/1.1\r\n\r\nGET /home HTTP/1.1\r\n\r\n"
    with replica.socket() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw), 7):
            sock.sendall(raw[i : i + 7])
            time.sleep(0.001)
        f = sock.makefile("rb")
        assert [read_response(f)[0] for _ in range(3)] == [200, 200, 200]


def test_chunked_request_body_is_read_and_dropped(replica: Running) -> None:
    chunked = (
        b"POST /home HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n10\r\nGET /evil HTTP/1\r\n0\r\n\r\n"
    )
    with replica.socket() as sock:
        sock.sendall(chunked + b"GET /home HTTP/1.1\r\n\r\n")
        f = sock.makefile("rb")
        assert read_response(f)[0] == 405
        status, _, body = read_response(f)
        assert status == 200 and body.startswith(b'{"message": "Hello')


def test_content_length_body_is_read_and_dropped(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\nContent-Length: 22\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
                     b"GET /heartbeat HTTP/1.1\r\n\r\n")
        f = sock.makefile("rb")
        assert read_response(f)[0] == 200
        assert read_response(f)[0] == 200  # /heartbeat: the body was not taken for a request


def test_expect_100_continue(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"POST /home HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        f = sock.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        sock.sendall(b"body")
        assert read_response(f)[0] == 405


@pytest.mark.parametrize(
    "raw",
    [
        b"BLAH\r\n\r\n",
        b"GET /home HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /home HTTP/9.9\r\n\r\n",
        b"GET /home HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ],
)
def test_malformed_request_is_400_then_close(replica: Running, raw: bytes) -> None:
    with replica.socket() as sock:
        sock.sendall(raw)
        f = sock.makefile("rb")
        status, headers, body = read_response(f)
        assert status == 400
        assert headers["connection"] == "close"
        assert headers["x-served-by"] == "Alpha"
        assert json.loads(body)["status"] == "failure"
        assert f.read() == b""


def test_good_requests_before_a_malformed_one_are_answered(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\n\r\nGET /heartbeat HTTP/1.1\r\n\r\nNOT HTTP\r\n\r\n")
        f = sock.makefile("rb")
        assert [read_response(f)[0] for _ in range(3)] == [200, 200, 400]
        assert f.read() == b""


def test_overlong_target_is_414(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n")
        f = sock.makefile("rb")
        assert read_response(f)[0] == 414
        assert f.read() == b""


def test_upgrade_request_is_answered_and_closed(replica: Running) -> None:
    with replica.socket() as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                     b"\x81\x05hello")
        f = sock.makefile("rb")
        status, headers, _ = read_response(f)
        assert (status, headers["connection"]) == (200, "close")
        assert f.read() == b""


# -- processes and options -------------------------------------------------------------------


def test_latency_delays_each_response() -> None:
    with replica_process("Slow", "--latency-ms", "200") as slow:
        conn = slow.connect()
        try:
            for path in ("/home", "/heartbeat"):
                started = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                assert time.perf_counter() - started >= 0.2
        finally:
            conn.close()


def test_jitter_keeps_pipelined_responses_in_order() -> None:
    with replica_process("Jittery", "--latency-ms", "30", "--jitter-ms", "30") as jittery:
        for _ in range(3):
            answers = _pipeline(jittery)
            assert [s for s, _, _ in answers] == [s for _, _, s in PIPELINE]
            assert all(h["x-served-by"] == "Jittery" for _, h, _ in answers)


@pytest.mark.parametrize("variable", ["REPLICA_NAME", "SERVER_ID"])
def test_name_from_environment(variable: str) -> None:
    with replica_process(None, env={variable: "FromEnv"}) as running:
        response, body = running.get("/home")
        assert json.loads(body)["message"] == "Hello from Server: FromEnv"
        assert response.getheader("X-Served-By") == "FromEnv"


def test_sigterm_exits_zero_quickly() -> None:
    with replica_process("Doomed") as doomed:
        idle = doomed.socket()  # an open keep-alive connection must not hold the exit up
        try:
            idle.sendall(b"GET /heartbeat HTTP/1.1\r\n\r\n")
            read_response(idle.makefile("rb"))
            started = time.monotonic()
            doomed.proc.send_signal(signal.SIGTERM)
            assert doomed.proc.wait(timeout=IO_TIMEOUT) == 0
            assert time.monotonic() - started < 2.0
            assert_closed(idle)
        finally:
            idle.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", doomed.port), timeout=1.0).close()


def test_sigint_exits_zero() -> None:
    with replica_process("Interrupted") as running:
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(timeout=IO_TIMEOUT) == 0


def test_port_in_use_exits_1(replica: Running) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "replica", "--name", "Twin", "--port", str(replica.port)],
        cwd=REPO, env=_child_env(None), capture_output=True, timeout=START_TIMEOUT, check=False,
    )
    assert done.returncode == 1
    assert b"cannot listen" in done.stderr


def test_runs_as_one_thread(replica: Running) -> None:
    # No idle thread pool (uvloop resolves create_server's host in libuv's): a process with
    # threads pays for them on every socket call.
    status = Path(f"/proc/{replica.proc.pid}/status").read_text()
    assert "\nThreads:\t1\n" in status


def test_address_not_on_this_machine_exits_1_and_says_why() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails, nothing is sent anywhere.
    done = subprocess.run(
        [sys.executable, "-m", "replica", "--name", "Lost", "--host", "192.0.2.1"],
        cwd=REPO, env=_child_env(None), capture_output=True, timeout=START_TIMEOUT, check=False,
    )
    assert done.returncode == 1
    assert b"replica Lost: cannot listen on 192.0.2.1:" in done.stderr
    assert b"assign requested address" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--name", "bad\nname"],
        ["--name", "x", "--port", "70000"],
        ["--name", "x", "--latency-ms", "-1"],
        ["--name", "x", "--jitter-ms", "nan"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from replica.server import main

    monkeypatch.delenv("REPLICA_NAME", raising=False)
    monkeypatch.delenv("SERVER_ID", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2


# -- serving on an inherited socket (--fd: how fastlb starts its local replicas) --------------


def _spawn_on(sock: socket.socket, name: str, *args: str) -> subprocess.Popen[bytes]:
    """`python -m replica --fd N` on `sock`, which the child inherits; our copy is closed at
    once, as fastlb closes its own."""
    fd = sock.fileno()
    argv = [sys.executable, "-m", "replica", "--name", name, "--fd", str(fd), *args]
    try:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=_child_env(None),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(fd,),
        )
    finally:
        sock.close()


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound-only"])
def test_serves_on_an_inherited_socket(listening: bool) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    if listening:
        sock.listen(16)
    port = sock.getsockname()[1]
    proc = _spawn_on(sock, "Heir")
    try:
        if listening:
            # Bound and listening before the child even runs: a client that connects now
            # waits in the backlog instead of being refused, and no one else can take the port.
            early = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
            early.sendall(b"GET /heartbeat HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_response(early.makefile("rb"))
            early.close()
            assert (status, headers["x-served-by"]) == (200, "Heir")
        _wait_ready(proc, port)
        assert proc.stderr is not None
        assert proc.stderr.readline().decode().strip() == (
            f"replica Heir listening on 127.0.0.1:{port}"
        )
        running = Running("Heir", port, proc, "")
        response, body = running.get("/home")
        assert response.getheader("X-Served-By") == "Heir"
        assert json.loads(body)["message"] == "Hello from Server: Heir"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=IO_TIMEOUT) == 0
        if proc.stderr is not None:
            proc.stderr.close()


def test_fd_that_is_not_a_socket_exits_1_and_says_why(tmp_path: Path) -> None:
    with open(tmp_path / "file", "wb") as plain:
        fd = plain.fileno()
        done = subprocess.run(
            [sys.executable, "-m", "replica", "--name", "NoSock", "--fd", str(fd)],
            cwd=REPO,
            env=_child_env(None),
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
            pass_fds=(fd,),
        )
    assert done.returncode == 1
    assert f"replica NoSock: cannot listen on descriptor {fd}:".encode() in done.stderr


def test_fd_that_is_not_open_exits_1() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "replica", "--name", "NoFd", "--fd", "987"],
        cwd=REPO,
        env=_child_env(None),
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1
    assert b"replica NoFd: cannot listen on descriptor 987:" in done.stderr


@pytest.mark.parametrize(
    "args", [["--name", "x", "--fd", "3", "--port", "80"], ["--name", "x", "--fd", "-1"]]
)
def test_bad_fd_arguments_exit_2(args: list[str]) -> None:
    from replica.server import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
