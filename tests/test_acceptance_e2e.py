"""Issue 11's request-side defects end to end: fastlb (each parser) before the strict recorder.

Each test sends raw bytes on a real socket and checks what the client got and what the
recording replica (tests/recorder.py, a strict parser of its own) framed: a request to refuse
must not reach it, a request to forward must arrive framed exactly once, and "at once" means
the answer comes while the header timeout (30 s here) is far off.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PY, Fastlb, Processes, free_port, static_config, wait_port

RECORDER = str(Path(__file__).resolve().parent / "recorder.py")
# Long enough that an answer within the client's 5 s is never the timeout's.
PROXY = "header_timeout = 30.0"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


class Setup:
    def __init__(self, lb: Fastlb, log: Path) -> None:
        self.lb = lb
        self.log = log

    def framed(self) -> list[dict[str, object]]:
        """What the recorder logged (requests and errors), heartbeats left out."""
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [line for line in lines if line.get("target") != "/heartbeat"]

    def targets(self) -> list[object]:
        return [line.get("target") for line in self.framed() if "error" not in line]


@pytest.fixture(params=["httptools", "h11"])
def setup(
    request: pytest.FixtureRequest,
    procs: Processes,
    start_fastlb: Callable[[str], Fastlb],
    tmp_path: Path,
) -> Iterator[Setup]:
    log = tmp_path / "recorder.jsonl"
    rport = free_port()
    proc = procs.spawn([PY, RECORDER, "--port", str(rport), "--log", str(log)])
    wait_port(rport, 10.0, proc)
    config = static_config(0, [("recorder", rport)], http=request.param, proxy=PROXY)
    lb = start_fastlb(config.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:{port}"'))
    yield Setup(lb, log)
    assert lb.proc.poll() is None, "fastlb exited"


def exchange(port: int, *segments: bytes, half_close: bool = False) -> tuple[bytes, bool]:
    """Send the segments, read until the close or 5 s of silence: (bytes, closed).

    A half-closed exchange must end in fastlb's close, so silence there is a failure rather
    than the end of what was sent: it waits 20 s (still well inside the header timeout), which
    a loaded machine's stall cannot pass for a missing answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20.0 if half_close else 5.0) as sock:
        for segment in segments:
            sock.sendall(segment)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return got, False
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk


def statuses(data: bytes) -> list[int]:
    return [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]


@pytest.mark.parametrize(
    "connection", ["Content-Length", "close, Content-Length", "keep-alive, Content-Length"]
)
def test_connection_cannot_drop_content_length(setup: Setup, connection: str) -> None:
    raw = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n"
        % (connection.encode(), len(SMUGGLED))
    ) + SMUGGLED
    got, _ = exchange(setup.lb.port, raw)
    assert statuses(got) == [200]
    assert setup.targets() == ["/a"], "the body was read as a second request"
    (line,) = setup.framed()
    assert line["body_len"] == len(SMUGGLED)


def test_connection_cannot_drop_host_or_transfer_encoding(setup: Setup) -> None:
    raw = b"GET /h HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n"
    raw += b"POST /t HTTP/1.1\r\nHost: a\r\nConnection: close, Transfer-Encoding\r\n"
    raw += b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    got, _ = exchange(setup.lb.port, raw)
    assert statuses(got) == [200, 200]
    framed = setup.framed()
    assert [line.get("target") for line in framed] == ["/h", "/t"]
    assert ["Host", "a"] in framed[0]["headers"]  # type: ignore[operator]
    assert framed[1]["body_len"] == 5


@pytest.mark.parametrize(
    "body",
    [
        b"ffffffffffffffff\r\n",
        b"8000000000000005\r\nhello\r\n0\r\n\r\n",
        b"5;a\rxx\r\nhello\r\n0\r\n\r\n",
        b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX-T : a\r\n\r\n",
        b"5\r\nhello\r\nzz\r\n0\r\n\r\n",
    ],
)
def test_bad_chunk_lines_never_reach_the_replica(setup: Setup, body: bytes) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    got, closed = exchange(setup.lb.port, head + body)
    assert statuses(got) == [400] and closed
    errors = [line for line in setup.framed() if "error" in line]
    assert not [e for e in errors if not str(e["error"]).startswith("eof")], errors
    assert setup.targets() == []


def test_a_bad_second_chunk_after_a_good_first_is_not_forwarded(setup: Setup) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    got, closed = exchange(setup.lb.port, head, b"5;a=\x00\r\nworld\r\n0\r\n\r\n")
    assert statuses(got) == [400] and closed
    invalid = [e for e in setup.framed() if "error" in e and not str(e["error"]).startswith("eof")]
    assert not invalid and setup.targets() == []


def test_chunked_body_is_forwarded_re_encoded(setup: Setup) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"005;ext=1\r\nhello\r\n6\r\n world\r\n00000000000000000000\r\nX-T: a\r\n\r\n"
    got, _ = exchange(setup.lb.port, head + body[:7], body[7:], half_close=True)
    assert statuses(got) == [200]
    (line,) = setup.framed()
    assert line["body_len"] == 11


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET a.b:80 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET a HTTP/1.1\r\nHost: a\r\n\r\n",
        b"connect a:80 HTTP/1.1\r\nHost: a:80\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35, 35\r\n\r\n" + b"x" * 35,
        b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://u:p@a/x HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_refused_in_both_modes(setup: Setup, raw: bytes) -> None:
    got, closed = exchange(setup.lb.port, raw)
    assert statuses(got) == [400] and closed
    assert setup.framed() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /\r\n",  # HTTP/0.9: no answer at all before
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    ],
)
def test_answered_at_once(setup: Setup, raw: bytes) -> None:
    got, closed = exchange(setup.lb.port, raw)
    assert statuses(got) == [400] and closed, got
    assert setup.framed() == []


@pytest.mark.parametrize("method", [b"get", b"FOO", b"M-SEARCH", b"!#$%&'*+-.^_`|~09azAZ"])
def test_any_token_method_is_forwarded(setup: Setup, method: bytes) -> None:
    got, closed = exchange(setup.lb.port, method + b" /m HTTP/1.1\r\nHost: a\r\n\r\n", half_close=True)
    assert statuses(got) == [200] and closed, (got, closed, setup.framed())
    (line,) = setup.framed()
    assert line["method"] == method.decode()


def test_absolute_form_goes_in_origin_form(setup: Setup) -> None:
    got, _ = exchange(setup.lb.port, b"GET http://A:80/x?q HTTP/1.1\r\nHost: a\r\n\r\n", half_close=True)
    assert statuses(got) == [200]
    (line,) = setup.framed()
    assert line["target"] == "/x?q"
    hosts = [v for k, v in line["headers"] if k.lower() == "host"]  # type: ignore[attr-defined]
    assert hosts == ["A:80"]


def test_pipelined_bytes_behind_an_admin_request_are_served(setup: Setup) -> None:
    body = b"b" * 300_000
    second = b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    third = b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    got, closed = exchange(setup.lb.port, b"GET /rep HTTP/1.1\r\nHost: a\r\n\r\n" + second + third)
    assert statuses(got) == [200, 200, 200] and closed
    assert b'"replicas"' in got.split(b"HTTP/1.1 ")[1]
    assert setup.targets() == ["/big", "/last"]


def test_half_closed_admin_request_is_answered(setup: Setup) -> None:
    got, closed = exchange(setup.lb.port, b"GET /rep HTTP/1.1\r\nHost: a\r\n\r\n", half_close=True)
    assert statuses(got) == [200] and closed
