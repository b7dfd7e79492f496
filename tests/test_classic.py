"""The classic admin API over real sockets to a real fastlb with real replica processes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fastlb.config import AdminConfig
from fastlb.control.classic import BadRequest, ClassicAdmin, parse_body
from fastlb.http.parsers import make_head_parser
from fastlb.proxy.client import LocalRequest
from tests.conftest import Backend, Fastlb, http_get, run_load, static_config, wait_for

StartFastlb = Callable[[str], Fastlb]
CONFIG = '[proxy]\nlisten = "127.0.0.1:{port}"\n[admin]\nmax_replicas = 8\ndrain_timeout = 2\n'


def call(lb: Fastlb, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=30)
    try:
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def replicas(lb: Fastlb) -> list[str]:
    status, body = call(lb, "GET", "/rep")
    assert status == 200
    names: list[str] = json.loads(body)["message"]["replicas"]
    return names


@pytest.fixture
def lb(start_fastlb: StartFastlb) -> Fastlb:
    return start_fastlb(CONFIG)


def test_rep_is_byte_compatible(lb: Fastlb) -> None:
    assert call(lb, "GET", "/rep") == (
        200,
        b'{"message": {"N": 3, "replicas": ["Server1", "Server2", "Server3"]}, "status": "successful"}',
    )


def test_added_replica_serves_among_10000_concurrent_requests(lb: Fastlb) -> None:
    status, body = call(lb, "POST", "/add", {"n": 1, "hostnames": []})
    assert status == 200
    assert json.loads(body) == {
        "message": {"N": 4, "replicas": ["Server1", "Server2", "Server3", "Server4"]},
        "status": "successful",
    }
    result = run_load(lb.port, total=10_000, concurrency=100)
    assert result.failures == []
    assert result.ok == 10_000
    assert set(result.served) == {"Server1", "Server2", "Server3", "Server4"}
    assert min(result.served.values()) > 1500  # about a quarter each


def test_add_named_and_generated(lb: Fastlb) -> None:
    status, body = call(lb, "POST", "/add", {"n": 3, "hostnames": ["S5", "S4"]})
    assert status == 200
    assert json.loads(body)["message"] == {
        "N": 6,
        "replicas": ["Server1", "Server2", "Server3", "S5", "S4", "Server4"],
    }
    status, _, _ = http_get(lb.port, "/home", {"X-Request-ID": "1"})
    assert status == 200


def test_rm_named_and_random(lb: Fastlb) -> None:
    call(lb, "POST", "/add", {"n": 2, "hostnames": ["S5", "S4"]})
    status, body = call(lb, "DELETE", "/rm", {"n": 3, "hostnames": ["S5", "S4"]})
    assert status == 200
    left = json.loads(body)["message"]["replicas"]
    assert len(left) == 2 and "S5" not in left and "S4" not in left
    assert set(left) < {"Server1", "Server2", "Server3"}
    result = run_load(lb.port, total=300, concurrency=10)
    assert result.failures == [] and set(result.served) == set(left)


def test_post_rm_is_accepted_too(lb: Fastlb) -> None:
    status, body = call(lb, "POST", "/rm", {"n": 1, "hostnames": ["Server2"]})
    assert status == 200
    assert json.loads(body)["message"]["replicas"] == ["Server1", "Server3"]


SPEC_ADD = b'{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}'
SPEC_RM = b'{"message": "<Error> Length of hostname list is more than removable instances", "status": "failure"}'


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/add", {"n": 1, "hostnames": ["A", "B"]}, SPEC_ADD),
        ("DELETE", "/rm", {"n": 1, "hostnames": ["Server1", "Server2"]}, SPEC_RM),
        ("POST", "/add", b"not json", b"must be JSON"),
        ("POST", "/add", [1, 2], b"JSON object"),
        ("POST", "/add", {"n": 0}, b"n must be a positive integer"),
        ("POST", "/add", {"n": -2}, b"n must be a positive integer"),
        ("POST", "/add", {"n": True}, b"n must be a positive integer"),
        ("POST", "/add", {"n": "1"}, b"n must be a positive integer"),
        ("POST", "/add", {"n": 1, "hostnames": "S1"}, b"hostnames must be a list"),
        ("POST", "/add", {"n": 1, "hostnames": [5]}, b"hostnames must be a list"),
        ("POST", "/add", {"n": 1, "hostnames": ["Server2"]}, b"already in use"),
        ("POST", "/add", {"n": 1, "hostnames": ["bad name"]}, b"expected a replica name (letters, digits"),
        ("POST", "/add", {"n": 2, "hostnames": ["X", "X"]}, b"listed twice"),
        ("POST", "/add", {"n": 6}, b"over max_replicas = 8"),
        ("POST", "/add", {"n": 1, "extra": 1}, b"unknown field"),
        ("DELETE", "/rm", {"n": 1, "hostnames": ["Nope"]}, b"is not a replica"),
        ("DELETE", "/rm", {"n": 4}, b"there are only 3"),
        ("DELETE", "/rm", {"n": 2, "hostnames": ["Server1", "Server1"]}, b"listed twice"),
    ],
)
def test_bad_admin_requests_change_nothing(
    lb: Fastlb, method: str, path: str, body: object, expected: bytes
) -> None:
    status, answer = call(lb, method, path, body)
    assert status == 400
    assert expected in answer
    assert json.loads(answer)["status"] == "failure"
    assert json.loads(answer)["message"].startswith("<Error> ")
    assert replicas(lb) == ["Server1", "Server2", "Server3"]


def test_wrong_method_is_405_with_allow(lb: Fastlb) -> None:
    # RFC 9110 15.5.6: a 405 names the methods the route takes (these routes sent none).
    for method, path, allow in (("GET", "/add", "POST"), ("POST", "/rep", "GET, HEAD"),
                                ("PUT", "/rm", "DELETE, POST")):
        status, headers, body = http_get(lb.port, path, method=method)
        assert (status, headers["allow"]) == (405, allow), (method, path)
        assert json.loads(body) == {
            "message": f"<Error> {method} is not allowed on {path}; use {allow}",
            "status": "failure",
        }
    assert replicas(lb) == ["Server1", "Server2", "Server3"]


def _request(raw: bytes, ip: bytes, body: bytes = b'{"n": 1}') -> LocalRequest:
    head = make_head_parser("httptools", None, 100, 16384).parse(raw)
    return LocalRequest(head, body, ip)


@pytest.mark.parametrize(
    ("token", "auth", "ip", "status"),
    [
        ("", b"", b"127.0.0.1", None),
        ("", b"", b"::1", None),
        ("", b"", b"10.9.8.7", 403),
        ("", b"Authorization: Bearer x\r\n", b"10.9.8.7", 403),
        ("s3cret", b"", b"10.9.8.7", 403),
        ("s3cret", b"Authorization: Bearer wrong\r\n", b"10.9.8.7", 403),
        ("s3cret", b"Authorization: Bearer s3cret\r\n", b"10.9.8.7", None),
    ],
)
def test_state_changes_from_other_hosts_need_the_token(
    token: str, auth: bytes, ip: bytes, status: int | None
) -> None:
    admin = ClassicAdmin(None, AdminConfig(token=token))  # type: ignore[arg-type]
    raw = b"POST /add HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 8\r\n\r\n"
    try:
        admin._check(_request(raw, ip), (b"POST",))
    except BadRequest as exc:
        assert exc.status == status
    else:
        assert status is None


def test_reading_the_listing_needs_no_token() -> None:
    admin = ClassicAdmin(None, AdminConfig())  # type: ignore[arg-type]
    admin._check(_request(b"GET /rep HTTP/1.1\r\nHost: a\r\n\r\n", b"10.9.8.7"), (b"GET", b"HEAD"))


def test_parse_body_accepts_missing_hostnames() -> None:
    assert parse_body(b'{"n": 2}') == (2, [])
    assert parse_body(b'{"n": 2, "hostnames": null}') == (2, [])


def test_admin_routes_can_move_off_the_data_port(start_fastlb: StartFastlb) -> None:
    from tests.conftest import free_port, wait_port

    admin_port = free_port()
    lb = start_fastlb(
        '[proxy]\nlisten = "127.0.0.1:{port}"\n'
        f'[admin]\non_data_port = false\nlisten = "127.0.0.1:{admin_port}"\n'
    )
    wait_port(admin_port)
    # On the data port /rep is now just a path the replicas do not serve.
    assert http_get(lb.port, "/rep")[0] == 400
    status, _, body = http_get(admin_port, "/rep")
    assert status == 200 and json.loads(body)["message"]["N"] == 3
    assert http_get(admin_port, "/home")[0] == 404


def test_admin_prefix_gives_the_app_its_own_metrics_and_status(
    start_fastlb: StartFastlb, start_backend: Callable[..., Backend]
) -> None:
    # [admin] prefix moves every route of fastlb's own under it; the same paths at the root
    # are the app's, forwarded to it like any other.
    app = start_backend("echo", name="app")
    cfg = static_config(0, [("app", app.port)]).replace(":0", ":{port}")
    lb = start_fastlb(cfg + '[admin]\nprefix = "/_fastlb"\n')
    own = ["/metrics", "/status", "/status.json", "/healthz", "/rep", "/add", "/rm"]
    for path in own:
        status, headers, body = http_get(lb.port, path)
        assert status == 200 and headers.get("x-served-by") == "app", (path, status)
        assert json.loads(body)["target"] == path
    wait_for(lambda: http_get(lb.port, "/_fastlb/healthz")[0] == 200, 10, "the app up")
    checks = {
        "/_fastlb/metrics": b"fastlb_requests_total",
        "/_fastlb/status": b"<html",
        "/_fastlb/status.json": b'"replicas"',
        "/_fastlb/healthz": b'"up": 1',
        "/_fastlb/rep": b'"replicas": ["app"]',
    }
    for path, marker in checks.items():
        status, headers, body = http_get(lb.port, path)
        assert status == 200 and "x-served-by" not in headers and marker in body, (path, body)
    status, body = call(lb, "POST", "/add", {"n": 1})  # the app's own /add
    assert status == 200 and json.loads(body)["method"] == "POST", body
    status, body = call(lb, "GET", "/_fastlb/add")
    assert status == 405, body  # fastlb's route, which takes POST
    # Nothing under the prefix reached the app.
    assert not [line for line in app.requests() if "/_fastlb" in line], app.requests()


def test_default_prefix_keeps_the_spec_routes_at_the_root(lb: Fastlb) -> None:
    for path in ("/rep", "/metrics", "/status", "/status.json", "/healthz"):
        status, headers, _ = http_get(lb.port, path)
        assert status in (200, 503) and "x-served-by" not in headers, (path, status)
    assert http_get(lb.port, "/_fastlb/rep")[0] == 400  # not a path of the demo replica's


# ------------------------------------------------------------------ model-based
class AdminModel(RuleBasedStateMachine):
    """Random add/rm/rep sequences, valid and invalid, against a model of the replica list."""

    lb: Fastlb

    @initialize()
    def setup(self) -> None:
        self.model = ["Server1", "Server2", "Server3"]

    @rule(
        n=st.integers(-1, 3),
        hostnames=st.lists(st.sampled_from(["S1", "S2", "Server1", "bad name", "S3"]), max_size=3),
    )
    def add(self, n: int, hostnames: list[str]) -> None:
        status, body = call(self.lb, "POST", "/add", {"n": n, "hostnames": hostnames})
        valid = (
            n > 0
            and len(hostnames) <= n
            and len(set(hostnames)) == len(hostnames)
            and all(h not in self.model and h != "bad name" for h in hostnames)
            and len(self.model) + n <= 8
        )
        assert (status == 200) == valid, body
        if valid:
            names = json.loads(body)["message"]["replicas"]
            assert names[: len(self.model)] == self.model
            assert names[len(self.model) : len(self.model) + len(hostnames)] == hostnames
            assert len(names) == len(self.model) + n
            self.model = names

    @rule(n=st.integers(-1, 3), hostnames=st.lists(st.sampled_from(["S1", "S2", "Server1", "Nope"]), max_size=2))
    def rm(self, n: int, hostnames: list[str]) -> None:
        status, body = call(self.lb, "DELETE", "/rm", {"n": n, "hostnames": hostnames})
        valid = (
            n > 0
            and len(hostnames) <= n
            and n <= len(self.model)
            and len(set(hostnames)) == len(hostnames)
            and all(h in self.model for h in hostnames)
        )
        assert (status == 200) == valid, body
        if valid:
            names = json.loads(body)["message"]["replicas"]
            assert len(names) == len(self.model) - n
            assert not set(hostnames) & set(names)
            assert set(names) <= set(self.model)
            self.model = [name for name in self.model if name in names]

    @invariant()
    def listing_matches(self) -> None:
        if hasattr(self, "model"):
            assert replicas(self.lb) == self.model


def test_admin_api_against_a_model(start_fastlb: StartFastlb) -> None:
    # One fastlb for every example: each example starts from what the last one left, which the
    # model reads back from /rep first.
    lb = start_fastlb(CONFIG)

    class Machine(AdminModel):
        @initialize()
        def setup(self) -> None:
            self.lb = lb
            self.model = replicas(lb)

    Machine.TestCase.settings = settings(
        max_examples=6,
        stateful_step_count=6,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    Machine.TestCase().runTest()


def test_rm_under_load_drains_without_failures(lb: Fastlb) -> None:
    import threading
    import time

    results = []
    thread = threading.Thread(
        target=lambda: results.append(run_load(lb.port, seconds=4.0, concurrency=16))
    )
    thread.start()
    try:
        time.sleep(1.5)
        status, body = call(lb, "DELETE", "/rm", {"n": 1, "hostnames": ["Server2"]})
    finally:
        thread.join()
    assert status == 200, body
    (result,) = results
    assert result.failures == []
    assert result.served.get("Server2", 0) > 0  # it served until it was taken out
    assert replicas(lb) == ["Server1", "Server3"]


def test_head_rep_has_no_body_and_keeps_the_connection_usable(lb: Fastlb) -> None:
    import socket

    from tests.conftest import read_response

    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(b"HEAD /rep HTTP/1.1\r\nHost: x\r\n\r\nGET /rep HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\n")  # no body after the HEAD answer
    assert json.loads(second.split(b"\r\n\r\n", 1)[1])["message"]["N"] == 3
    assert read_response is not None


# ------------------------------------------------------------------ half-close
def half_closed(port: int, request: bytes) -> bytes:
    """Send `request`, half-close (shutdown(SHUT_WR), as `nc -N` and HTTP/1.0 clients do) and
    read until fastlb closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split what a connection received into (head, body) pairs by Content-Length; a cut
    answer fails."""
    found = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, head
        fields = dict(f.partition(b":")[::2] for f in head.split(b"\r\n")[1:])
        length = int({k.lower(): v for k, v in fields.items()}.get(b"content-length", b"0"))
        assert len(data) >= length, (head, data)
        found.append((head, data[:length]))
        data = data[length:]
    return found


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_a_half_closed_client_gets_every_answer(start_fastlb: StartFastlb, parser: str) -> None:
    # RFC 9112 §9.6: a client that half-closes after its requests still reads their answers;
    # the close comes after the last. Replica paths, fastlb's own routes and a state change
    # alike, alone and with a request pipelined behind them.
    lb = start_fastlb(CONFIG.replace("[admin]", f'http = "{parser}"\n[admin]'))
    added = 0
    for method, path in [
        ("GET", "/home"),
        ("GET", "/status.json"),
        ("GET", "/rep"),
        ("GET", "/metrics"),
        ("POST", "/add"),
    ]:
        request = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
        if method == "POST":
            added += 1
            body = b'{"n": 1, "hostnames": ["S%d"]}' % added
            request += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            request += b"\r\n" + body
        else:
            request += b"\r\n"
        for pipelined in (b"", b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n"):
            if method == "POST" and pipelined:
                added += 1
                request = request.replace(b"S%d" % (added - 1), b"S%d" % added)
            answers = responses(half_closed(lb.port, request + pipelined))
            assert [h[:13] for h, _ in answers] == [b"HTTP/1.1 200 "] * (1 + bool(pipelined)), (
                path, pipelined, answers)
    assert replicas(lb)[3:] == ["S1", "S2"]
