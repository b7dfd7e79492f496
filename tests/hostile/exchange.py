"""Play hostile cases against a proxy in front of tests/recorder.py, and judge what happened.

Why this shape: the proxy pools its replica connections, so a recorder log line cannot be tied
to a client connection by its number. Cases are therefore played one at a time, each followed
by a probe (a good request on a fresh connection, which also proves the proxy still serves):
the recorder lines logged before the probe's own line belong to the case. Cases that must wait
for a timeout (`Case.slow`) are played together, concurrently, before the others; what the
replica logs during that batch is attributed to the batch as a whole (none of those cases may
have a request framed).

Two judgements (pure functions of a Case and its Observation):
- `judge_policy`: fastlb's acceptance policy exactly (tests/test_hostile.py): the statuses,
  the requests the replica framed (method, target, Host, body, fields), closes, and the
  invariants below;
- `judge_safety`: only what is a defect for any proxy (bench/hardening.py): a desync, invalid
  or unvalidated bytes reaching the replica, a hang, no answer or a 5xx to a valid request, a
  body altered on its way, more than one Host reaching the replica, the proxy no longer
  serving. Other differences from fastlb's policy are normalisation choices.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from tests.hostile.corpus import Case, Seen

WAIT = 2.0  # seconds a client waits for an answer or a close after its last byte
GRACE = 0.02  # seconds to wait for anything beyond the expected answers
SEGMENT_PAUSE = 0.02  # between the segments of a split case, so they arrive apart
HTTP09_ANSWER = re.compile(rb"conn=(\d+) seq=(\d+)\n")  # status 0 in Observation.statuses


@dataclass(slots=True)
class Response:
    status: int
    recorder: str | None  # the X-Recorder header: the answer came from the replica
    close: bool  # it said Connection: close


@dataclass(slots=True)
class Observation:
    responses: list[Response] = field(default_factory=list)  # final responses, in order
    closed: bool = False  # the proxy closed (FIN or reset)
    timed_out: bool = False  # waited WAIT s for more answers or the close
    garbage: bytes = b""  # bytes that do not parse as a response
    lines: list[dict[str, object]] = field(default_factory=list)  # recorder log lines
    probe: str | None = None  # why the good request after the case failed, if it did
    elapsed: float = 0.0

    @property
    def statuses(self) -> tuple[int, ...]:
        return tuple(r.status for r in self.responses)

    def summary(self) -> str:
        """The outcome in one line (also what two parsers must agree on)."""
        framed = [
            f"{x.get('method')} {str(x.get('target'))[:40]}" for x in self.lines if "seq" in x
        ]
        # Distinct and sorted: the slow cases are played together and share the batch's
        # replica errors, so their order (and a repeat from a neighbouring case of the batch)
        # is the scheduler's, not the proxy's.
        errors = sorted({str(x["error"])[:60] for x in self.lines if "error" in x})
        parts = [f"statuses={list(self.statuses)}"]
        parts.append(f"framed={framed}" if framed else "framed=0")
        if errors:
            parts.append(f"replica-errors={errors}")
        parts.append("closed" if self.closed else "open")
        if self.timed_out:
            parts.append("timed-out")
        if self.garbage:
            parts.append(f"garbage={self.garbage[:40]!r}")
        if self.probe:
            parts.append(f"probe-failed={self.probe}")
        return " ".join(parts)


class LogTail:
    """The recorder's log, read from where the last read stopped (whole lines only)."""

    def __init__(self, path: Path, ignore: Iterable[str] = ("/heartbeat", "/bench/ready")) -> None:
        self.path = path
        self.ignore = set(ignore)  # targets of requests that are not a case's (health checks)
        self.offset = path.stat().st_size if path.exists() else 0
        self.pending: list[dict[str, object]] = []

    def read(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        lines = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        return [x for x in lines if x.get("target") not in self.ignore]

    def until(self, target: str, timeout: float = 1.0) -> tuple[list[dict[str, object]], bool]:
        """Lines up to (without) the request for `target`; False if it never came."""
        deadline = time.monotonic() + timeout
        got = self.pending
        self.pending = []
        while True:
            got += self.read()
            for i, line in enumerate(got):
                if line.get("target") == target:
                    self.pending = got[i + 1 :]
                    return got[:i], True
            if time.monotonic() > deadline:
                return got, False
            time.sleep(0.005)


def _parse(buf: bytearray, head_only: bool) -> tuple[Response, bool] | None:
    """One response from buf (removed from it), and whether it was final; None if incomplete.
    Raises ValueError on bytes that are not a response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) >= 5 and not buf.startswith(b"HTTP/"):
            raise ValueError("not a response")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if (
        len(status_line) < 2
        or not status_line[0].startswith(b"HTTP/")
        or not status_line[1].isdigit()
    ):
        raise ValueError("not a status line")
    status = int(status_line[1])
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    length = 0
    if 100 <= status < 200 or status in (204, 304) or head_only:
        length = 0
    elif b"content-length" in fields:
        length = int(fields[b"content-length"])
    elif b"transfer-encoding" in fields:
        raise ValueError("chunked response (not expected from the recorder or an error page)")
    else:
        length = -1  # close-delimited
    start = end + 4
    if length < 0:
        return None  # read until the close; the caller takes it from there
    if len(buf) < start + length:
        return None
    del buf[: start + length]
    recorder = fields.get(b"x-recorder")
    close = b"close" in fields.get(b"connection", b"").lower()
    response = Response(status, recorder.decode("latin-1") if recorder is not None else None, close)
    return response, not 100 <= status < 200


def _close_delimited_status(buf: bytearray) -> Response | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0 or not buf.startswith(b"HTTP/"):
        return None
    parts = bytes(buf[:end]).split(b"\r\n")[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    del buf[:]
    return Response(int(parts[1]), None, True)


def play(port: int, case: Case, wait: float = WAIT) -> Observation:
    """Send the case on a fresh connection and read answers until the close, or until the
    expected answers came (plus GRACE), or until `wait` passes after the last byte sent."""
    obs = Observation()
    start = time.monotonic()
    heads = {i for i, seen in enumerate(case.expect.forwarded) if seen.method == "HEAD"}
    want = len(case.expect.statuses)
    buf = bytearray()
    broken = False
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i, segment in enumerate(case.data):
                if i:
                    time.sleep(SEGMENT_PAUSE)
                sock.sendall(segment)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy closed early (a reject while we were sending): read what it said
        deadline = time.monotonic() + wait
        while True:
            try:
                while not broken and (parsed := _parse(buf, len(obs.responses) in heads)):
                    response, final = parsed
                    if final:
                        obs.responses.append(response)
            except ValueError:
                broken = True  # not a response: kept whole, to be read at the close
            got = len(obs.responses)
            matches = obs.statuses == case.expect.statuses
            wants_close = case.expect.close or (got and obs.responses[-1].close)
            now = time.monotonic()
            if want and got >= want and not (matches and wants_close):
                timeout = GRACE
            else:
                timeout = deadline - now
            if timeout <= 0:
                obs.timed_out = True
                break
            sock.settimeout(timeout)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if timeout == GRACE:
                    break
                obs.timed_out = True
                break
            except OSError:
                obs.closed = True
                break
            if not chunk:
                obs.closed = True
                break
            buf += chunk
        if buf and not obs.closed:
            obs.garbage = bytes(buf[:200])
        elif buf:
            last = _close_delimited_status(buf)
            if last is not None:
                obs.responses.append(last)
            elif (simple := HTTP09_ANSWER.fullmatch(bytes(buf))) is not None:
                # The recorder's body without a head: an HTTP/0.9 answer (nginx serves 0.9).
                obs.responses.append(Response(0, f"{int(simple[1])} {int(simple[2])}", True))
            else:
                obs.garbage = bytes(buf[:200])
    obs.elapsed = time.monotonic() - start
    return obs


def probe(port: int, target: str, timeout: float = WAIT) -> str | None:
    """A good request on a fresh connection; None if it was answered 200."""
    request = f"GET {target} HTTP/1.1\r\nHost: probe\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            buf = bytearray()
            while (parsed := _parse(buf, False)) is None or not parsed[1]:
                chunk = sock.recv(65536)
                if not chunk:
                    return f"closed after {bytes(buf[:80])!r}"
                buf += chunk
            return None if parsed[0].status == 200 else f"status {parsed[0].status}"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def run_corpus(
    port: int, log: Path, cases: Iterable[Case], wait: float = WAIT
) -> dict[str, Observation]:
    """Every case against the proxy on `port` (slow ones first, together), with the recorder
    lines each caused."""
    tail = LogTail(log)
    cases = list(cases)
    slow = [c for c in cases if c.slow]
    results: dict[str, Observation] = {}
    if slow:
        observed: dict[str, Observation] = {}

        def one(case: Case) -> None:
            observed[case.name] = play(port, case, wait)

        threads = [threading.Thread(target=one, args=(c,)) for c in slow]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        target = "/__probe/slow-batch"
        failure = probe(port, target)
        lines, _ = tail.until(target)
        partial = [c.name for c in slow if c.expect.partial_ok]
        for case in slow:
            obs = observed[case.name]
            obs.probe = failure
            for line in lines:
                eof = str(line.get("error", "")).startswith("eof")
                # An eof line comes from a cut-off body: give it to the cases that have one.
                if not eof or case.expect.partial_ok or not partial:
                    obs.lines.append(line)
            results[case.name] = obs
    previous: Case | None = None
    for i, case in enumerate(c for c in cases if not c.slow):
        obs = play(port, case, wait)
        target = f"/__probe/{i}"
        obs.probe = probe(port, target)
        lines, _ = tail.until(target)
        for line in lines:
            late_eof = str(line.get("error", "")).startswith("eof") and "seq" not in line
            if (
                late_eof
                and previous is not None
                and previous.expect.partial_ok
                and not case.expect.partial_ok
                and line.get("conn") not in {x.get("conn") for x in obs.lines}
            ):
                # A replica connection closed after a cut-off body of the previous case, and
                # its eof reached the log after that case's probe.
                results[previous.name].lines.append(line)
                continue
            obs.lines.append(line)
        results[case.name] = obs
        previous = case
    return results


def _norm_host(value: str) -> str:
    value = value.lower()
    for suffix in (":80", ":443", ":"):
        if value.endswith(suffix) and not value.endswith("]" + suffix[1:]):
            return value[: -len(suffix)]
    return value


def _headers(line: dict[str, object]) -> list[tuple[str, str]]:
    """A framed request's fields as (lower-case name, value); trailers after a ("", "") pair."""
    raw = cast(list[list[str]], line["headers"])
    return [(n.lower(), v) for n, v in raw]


def _seen_problems(seen: Seen, line: dict[str, object]) -> list[str]:
    problems = []
    headers = _headers(line)
    if "" in [n for n, _ in headers]:
        headers = headers[: [n for n, _ in headers].index("")]  # trailers are not checked
    if line["method"] != seen.method:
        problems.append(f"method {line['method']!r} (want {seen.method!r})")
    if line["target"] != seen.target:
        problems.append(f"target {str(line['target'])[:60]!r} (want {seen.target[:60]!r})")
    hosts = [v for n, v in headers if n == "host"]
    if len(hosts) > 1:
        problems.append(f"{len(hosts)} Host fields {hosts}")
    elif seen.host is not None:
        if not hosts:
            problems.append(f"no Host (want {seen.host!r})")
        elif _norm_host(hosts[0]) != _norm_host(seen.host):
            problems.append(f"Host {hosts[0]!r} (want {seen.host!r})")
    digest = hashlib.sha256(seen.body).hexdigest()
    if line["body_len"] != len(seen.body) or line["body_sha256"] != digest:
        problems.append(f"body of {line['body_len']} bytes (want {len(seen.body)}, or other bytes)")
    names = {n for n, _ in headers}
    for name in seen.absent:
        if name in names:
            problems.append(f"{name} reached the replica")
    for name, value in seen.present:
        if (name, value) not in headers:
            got = [v for n, v in headers if n == name]
            problems.append(f"{name}: {got} (want {value!r})")
    return problems


def statuses_ok(case: Case, got: tuple[int, ...]) -> bool:
    e = case.expect
    if got == e.statuses:
        return True
    if len(got) == len(e.statuses) and got[:-1] == e.statuses[:-1] and got[-1] in e.last_alt:
        return True
    return e.no_response_ok and got == e.statuses[:-1]


def _common(case: Case, obs: Observation, policy: bool) -> list[str]:
    """Defects for any proxy. A client that half-closed may see its answers dropped (an
    abort, as nginx reads it): a desync only under fastlb's policy, which answers them."""
    problems = []
    framed = [x for x in obs.lines if "seq" in x]
    errors = [str(x["error"]) for x in obs.lines if "error" in x]
    for error in errors:
        if not (case.expect.partial_ok and error.startswith("eof")):
            problems.append(f"replica could not frame what it got: {error}")
    answered = [r for r in obs.responses if r.recorder]
    aborted = case.half_close and obs.closed and len(answered) < len(framed)
    if len(framed) != len(answered) and not (aborted and not policy):
        problems.append(
            f"desync: replica framed {len(framed)} requests, client got {len(answered)} answers from it"
        )
    if obs.timed_out and not obs.responses and not obs.closed:
        problems.append(f"hang: no answer and no close within {WAIT:g} s")
    elif obs.timed_out and len(obs.responses) < len(case.expect.statuses):
        problems.append(f"hang: {len(obs.responses)} answers, then nothing for {WAIT:g} s")
    if obs.probe:
        problems.append(f"stopped serving: a good request after the case got {obs.probe}")
    return problems


def judge_policy(case: Case, obs: Observation) -> list[str]:
    """Everything fastlb's policy says about this case; empty when it passed."""
    problems = _common(case, obs, True)
    e = case.expect
    framed = [x for x in obs.lines if "seq" in x]
    if e.rejects and framed:
        problems.append(
            "reached the replica: "
            + ", ".join(f"{x['method']} {str(x['target'])[:40]}" for x in framed)
        )
    if not statuses_ok(case, obs.statuses):
        problems.append(f"statuses {list(obs.statuses)} (want {list(e.statuses)})")
    if e.close and not obs.closed and statuses_ok(case, obs.statuses):
        problems.append(f"not closed within {WAIT:g} s after the answer")
    if not e.rejects:
        if len(framed) != len(e.forwarded):
            problems.append(f"replica framed {len(framed)} requests (want {len(e.forwarded)})")
        for seen, line in zip(e.forwarded, framed, strict=False):
            problems += [f"request {line['seq']}: {p}" for p in _seen_problems(seen, line)]
    if obs.garbage:
        problems.append(f"unparseable answer {obs.garbage[:60]!r}")
    return problems


def judge_safety(case: Case, obs: Observation) -> list[str]:
    """Only what is a defect for any proxy (see the module docstring)."""
    problems = _common(case, obs, False)
    e = case.expect
    framed = [x for x in obs.lines if "seq" in x]
    for line in framed:
        hosts = [v for n, v in _headers(line) if n == "host"]
        if len(hosts) > 1:
            problems.append(f"{len(hosts)} Host fields reached the replica")
    valid = not e.rejects and not e.no_response_ok
    if valid:
        if not obs.responses:
            problems.append("no answer to a valid request")
        elif any(
            s >= 500 and not (i < len(e.statuses) and e.statuses[i] >= 400)
            for i, s in enumerate(obs.statuses)
        ):
            # An answer where the policy itself refuses the request (a pipelined
            # `GET /b HTTP/1.2` after a good GET: 505, RFC 9110 §15.6.6) answers an invalid
            # request, whatever its status; only a 5xx to a request the policy forwards fails.
            problems.append(f"5xx to a valid request: {list(obs.statuses)}")
        for seen, line in zip(e.forwarded, framed, strict=False):
            digest = hashlib.sha256(seen.body).hexdigest()
            if line["body_sha256"] != digest and line["method"] == seen.method:
                problems.append(f"body altered: {line['body_len']} bytes (sent {len(seen.body)})")
    # Bytes that are not an HTTP/1.x answer (HAProxy answers an h2 preface in HTTP/2) are a
    # difference only: a desync shows in the replica's count.
    return problems


Judge = Callable[[Case, Observation], list[str]]
