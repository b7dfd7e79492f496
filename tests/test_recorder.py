"""tests/recorder.py, the strict recording replica: what it frames, what it refuses, its log.

Why: the hostile corpus and the fuzzer judge proxies by this server's log, so its own parser
must accept exactly RFC 9112's grammar: a lenient recorder would hide a smuggled request, a
too strict one would report a correct proxy.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest

from tests.conftest import Processes, raw_exchange
from tests.hostile.corpus import CASES
from tests.hostile.exchange import LogTail, play
from tests.test_hostile import start_recorder


def log_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def recorder(procs: Processes, tmp_path: Path) -> tuple[int, Path]:
    log = tmp_path / "rec.jsonl"
    return start_recorder(procs, log), log


def test_frames_keep_alive_requests_and_logs_each(recorder: tuple[int, Path]) -> None:
    port, log = recorder
    data = (
        b"\r\nGET /a?b HTTP/1.1\r\nHost: h\r\nX-A:  caf\xe9 \t\r\n\r\n"
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\n\r\nhello"
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b'5;a=b ; c="d e"\r\nhello\r\n000\r\nX-T: 1\r\n\r\n'
        b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    out = raw_exchange(port, data)
    assert out.count(b"HTTP/1.1 200 OK") == 4
    assert b"X-Recorder: 2 3\r\n" in out and out.endswith(b"Connection: close\r\n\r\n")
    lines = log_lines(log)
    assert [(x["conn"], x["seq"], x["method"], x["target"]) for x in lines] == [
        (2, 1, "GET", "/a?b"),  # connection 1 was wait_port's
        (2, 2, "POST", "/p"),
        (2, 3, "POST", "/c"),
        (2, 4, "HEAD", "/"),
    ]
    assert lines[0]["headers"] == [["Host", "h"], ["X-A", "caf\xe9"]]
    assert lines[1]["body_len"] == 5
    assert lines[1]["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert lines[2]["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert lines[2]["headers"] == [
        ["Host", "h"],
        ["Transfer-Encoding", "Chunked"],
        ["", ""],
        ["X-T", "1"],
    ]


def test_http10_closes_and_expect_gets_100(recorder: tuple[int, Path]) -> None:
    port, log = recorder
    assert raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200 OK")
    assert [x["method"] for x in log_lines(log)] == ["GET", "PUT"]


INVALID = {
    b"GET / HTTP/1.1\nHost: h\n\n": "bare LF",
    b"GET / HTTP/1.1\r\nHost: h\r\n\n": "bare LF",
    b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n": "bare CR",
    b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n": "obs-fold",
    b"GET / HTTP/1.1\r\nX : a\r\n\r\n": "invalid field line",
    b"GET / HTTP/1.1\r\n: a\r\n\r\n": "invalid field line",
    b"GET / HTTP/1.1\r\nX: a\x00\r\n\r\n": "invalid field line",
    b"GET  / HTTP/1.1\r\n\r\n": "invalid request line",
    b"get / HTTP/1.2\r\n\r\n": "invalid request line",
    b"GET /a b HTTP/1.1\r\n\r\n": "invalid request line",
    b"GET /\r\n\r\n": "invalid request line",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": "both",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": "HTTP/1.0",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n": "not exactly chunked",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n": "not exactly",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx": "2 Content-Length",
    b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx": "invalid Content-Length",
    b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx": "invalid Content-Length",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n": "overflow",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n": "chunk size",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n": "chunk size",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n": "not followed by CRLF",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T : a\r\n\r\n": "trailer",
    b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc": "eof in body",
    b"GET / HTTP/1.1\r\nHost: h\r\n": "eof in header",
}


def test_refuses_what_it_cannot_frame_and_closes(recorder: tuple[int, Path]) -> None:
    port, log = recorder
    for data in INVALID:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1000) == b"", data  # closed without an answer
    lines = log_lines(log)
    assert len(lines) == len(INVALID), lines
    for line, (data, why) in zip(lines, INVALID.items(), strict=True):
        assert "seq" not in line and why in str(line["error"]), (data, line)
    assert str(lines[-1]["error"]).startswith("eof") and str(lines[-2]["error"]).startswith("eof")


def test_clean_close_between_messages_logs_nothing(recorder: tuple[int, Path]) -> None:
    port, log = recorder
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200 OK")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert raw_exchange(port, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"seq=1\n")
    assert [(x["conn"], x["target"]) for x in log_lines(log)] == [(2, "/"), (4, "/x")]


def test_corpus_forward_cases_frame_as_expected_when_sent_straight_to_it(
    recorder: tuple[int, Path],
) -> None:
    """The corpus's own consistency: each case fastlb must forward, sent to the recorder with
    no proxy between, is framed as the case expects (method, body, number of requests; the
    target too unless fastlb must rewrite an absolute-form one); a request pipelined behind
    them may be framed too when only fastlb's policy refuses it (a second Host, say). A case that fails here has
    a wrong expectation, not fastlb a bug."""
    port, log = recorder
    tail = LogTail(log)
    wrong = []
    for case in CASES:
        if case.expect.rejects or case.slow:
            continue
        play(port, case, wait=0.5)
        # Logged before each answer was sent; /rep is fastlb's own (admin) answer, not forwarded.
        framed = [x for x in tail.read() if "seq" in x and x["target"] != "/rep"]
        if len(framed) < len(case.expect.forwarded):  # more: a tail only the policy refuses
            wrong.append(f"{case.name}: framed {len(framed)}, expects {len(case.expect.forwarded)}")
            continue
        for seen, got in zip(case.expect.forwarded, framed, strict=False):
            absolute = str(got["target"]).lower().startswith(("http:", "https:"))
            if got["method"] != seen.method or (got["target"] != seen.target and not absolute):
                wrong.append(f"{case.name}: {got['method']} {got['target']!s:.40}")
            if got["body_sha256"] != hashlib.sha256(seen.body).hexdigest():
                wrong.append(f"{case.name}: body of {got['body_len']} bytes")
    assert not wrong, "\n".join(wrong)
