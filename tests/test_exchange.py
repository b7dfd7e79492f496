"""The relay machine (fastlb/proxy/exchange.py) driven with no socket: bytes and events in,
what it did read back from its `Recorder` port.

Two kinds of test: hypothesis splits both byte streams at arbitrary offsets, and every split
must give the same bytes to the client and the replica and the same outcomes as the stream in
one piece; and a test per row of the outcome table, each checking what the client sees,
whether the connection stays, the retry, the suspicion, the counter and the access log's code.
The end-to-end behaviour over real sockets stays in test_proxy.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb._native import source_path
from fastlb.config import default
from fastlb.http.response import ResponseReader
from fastlb.http.rewrite import forwarded_lines
from fastlb.maglev import MaglevTable
from fastlb.observe.access import AccessLog, Entry
from fastlb.proxy import exchange as ex
from fastlb.proxy.exchange import Exchange, LocalHandler, LocalRequest, Recorder
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.routing import Route

GET = b"GET /home HTTP/1.1\r\nHost: a\r\n\r\n"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Lines(AccessLog):
    """The access log's entries, kept in a list (AccessLog formats and writes them by a timer)."""

    def __init__(self) -> None:
        self.lines: list[Entry] = []

    def add(self, entry: Entry) -> None:
        self.lines.append(entry)

    def codes(self) -> list[str]:
        return [entry[7].decode() for entry in self.lines]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # ProxyServer keeps a loop for its outbox; the Recorder port never uses it, and it never runs.
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@dataclasses.dataclass
class Rig:
    server: ProxyServer
    port: Recorder
    machine: Exchange
    upstreams: dict[str, Upstream]
    log: Lines
    suspects: list[str]

    def client(self) -> bytes:
        return b"".join(self.port.client)

    def replica(self) -> bytes:
        return b"".join(self.port.replica)

    def outcomes(self) -> list[str]:
        return [ex.outcome_name(o) for o in self.port.outcomes]

    def connected(self) -> None:
        """The connection being opened for the exchange is open."""
        assert self.machine.awaits(self.machine.seq), self.machine.state_name()
        self.machine.replica_connected(ResponseReader())

    def on(self) -> Upstream:
        """The upstream the exchange is on."""
        upstream = self.machine.upstream
        assert upstream is not None
        return upstream


def rig(
    loop: asyncio.AbstractEventLoop,
    *,
    pooled: bool = True,
    paths: tuple[str, ...] = (),
    local: dict[bytes, LocalHandler] | None = None,
    forward: bool = True,
    routed: bool = True,
    http: str = "httptools",
) -> Rig:
    proxy = dataclasses.replace(default().proxy, replica_paths=paths, http=http)
    upstreams = {name: Upstream(name, "127.0.0.1", 1) for name in ("r1", "r2", "r3")}
    route = Route.build(MaglevTable([(name, 1) for name in upstreams]), upstreams)
    server = ProxyServer(
        proxy, "path", route if routed else None, local=local, forward=forward, loop=loop
    )
    log = Lines()
    server.access_log = log
    suspects: list[str] = []
    server.on_suspect = suspects.append
    port = Recorder(pooled)
    machine = Exchange(server, port, b"127.0.0.1", forwarded_lines("127.0.0.1"))
    return Rig(server, port, machine, upstreams, log, suspects)


# ------------------------------------------------------------------ any split, same result
def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


RESPONSES = [
    OK_RESPONSE,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000,
]
REQUESTS = [
    GET,
    b"GET /a?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n",
    b"\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
]


def run(
    loop: asyncio.AbstractEventLoop,
    requests: list[bytes],
    responses: list[bytes],
    client_cuts: Sequence[int],
    replica_cuts: Sequence[Sequence[int]],
    pooled: bool,
) -> tuple[bytes, bytes, list[str], str]:
    """Every request pipelined (the client stream split at `client_cuts`), then the responses
    in turn (each split at its cuts); what the client and replicas got, and the outcomes."""
    r = rig(loop, pooled=pooled)
    for piece in split(b"".join(requests), client_cuts):
        r.machine.client_data(piece)
    for i, response in enumerate(responses):
        if r.machine.awaits(r.machine.seq):
            r.connected()
        for piece in split(response, replica_cuts[i % len(replica_cuts)] if replica_cuts else ()):
            r.machine.replica_data(piece)
    return r.client(), r.replica(), r.outcomes(), r.machine.state_name()


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(st.tuples(st.integers(0, len(REQUESTS) - 1), st.integers(0, len(RESPONSES) - 1)),
                   min_size=1, max_size=4),
    client_cuts=st.lists(st.integers(0, 10_000), max_size=12),
    replica_cuts=st.lists(st.lists(st.integers(0, 10_000), max_size=6), max_size=4),
    pooled=st.booleans(),
)
def test_any_split_gives_the_same_bytes_and_outcomes(
    loop: asyncio.AbstractEventLoop,
    picks: list[tuple[int, int]],
    client_cuts: list[int],
    replica_cuts: list[list[int]],
    pooled: bool,
) -> None:
    requests = [REQUESTS[i] for i, _ in picks]
    responses = [RESPONSES[j] for _, j in picks]
    whole = run(loop, requests, responses, (), (), pooled)
    assert whole[2] == ["OK"] * len(picks), whole
    assert whole[0] == b"".join(responses)
    assert whole[3] == "IDLE/RESP_NONE"
    assert run(loop, requests, responses, client_cuts, replica_cuts, pooled) == whole


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_a_close_delimited_response_in_any_split(
    loop: asyncio.AbstractEventLoop, cuts: list[int]
) -> None:
    # A body that ends when the replica closes: relayed as it came, then the client closes.
    response = b"HTTP/1.1 200 OK\r\n\r\n" + b"abcdefgh" * 50
    results = []
    for c in ((), cuts):
        r = rig(loop)
        r.machine.client_data(GET)
        for piece in split(response, c):
            r.machine.replica_data(piece)
        r.machine.replica_lost()
        results.append((r.client(), r.outcomes(), r.port.closed))
    assert results[0] == results[1]
    assert results[0][1] == ["OK"] and results[0][2]
    assert results[0][0].endswith(b"abcdefgh" * 50)


# ------------------------------------------------------------------ a test per row
def test_ok(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    assert r.replica().startswith(b"GET /home HTTP/1.1\r\n")
    r.machine.replica_data(OK_RESPONSE)
    assert r.client() == OK_RESPONSE
    assert r.outcomes() == ["OK"] and r.log.codes() == ["-"]
    assert r.port.events[-1] == "release keep" and not r.port.closed
    assert r.machine.state_name() == "IDLE/RESP_NONE"
    assert sum(u.status_counts[200] for u in r.upstreams.values()) == 1
    assert all(u.active == 0 for u in r.upstreams.values())


def test_refused(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET)
    assert r.client().startswith(b"HTTP/1.1 400 ") and b"Connection: close" in r.client()
    assert r.replica() == b"" and r.port.closed
    assert r.outcomes() == ["REFUSED"] and r.log.codes() == ["refused"]
    assert r.server.refused == 1


def test_a_bad_chunk_in_an_upload_is_refused_and_the_replica_connection_closed(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n")
    r.machine.client_data(b"zz\r\n")
    assert r.client().startswith(b"HTTP/1.1 400 ") and r.port.closed
    assert r.outcomes() == ["REFUSED"] and "release close" in r.port.events


def test_timeout(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(b"GET /home HTTP/1.1\r\nHo")  # (the shell set the first deadline)
    r.machine.deadline_passed()
    assert r.client().startswith(b"HTTP/1.1 408 ") and r.port.closed
    assert r.outcomes() == ["TIMEOUT"] and r.log.codes() == ["timeout"]


def test_an_idle_connection_closes_quietly_at_its_deadline(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.deadline_passed()
    assert r.port.closed and r.client() == b"" and r.outcomes() == [] and r.log.lines == []


def test_bad_path_keeps_the_connection_and_serves_what_follows(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop, paths=("/home",))
    r.machine.client_data(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
    assert r.client().startswith(b"HTTP/1.1 400 ") and b"Connection: close" not in r.client()
    r.machine.replica_data(OK_RESPONSE)
    assert r.client().endswith(OK_RESPONSE) and not r.port.closed
    assert r.outcomes() == ["BAD_PATH", "OK"] and r.log.codes() == ["bad-path", "-"]
    assert r.server.rejected == 1 and r.server.own_responses == {400: 1}
    assert r.log.lines[0][3] == b"-"  # no replica


def test_bad_path_with_a_body_closes(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, paths=("/home",))
    r.machine.client_data(b"POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    assert r.client().startswith(b"HTTP/1.1 400 ") and b"Connection: close" in r.client()
    assert r.port.closed


def test_not_admin(loop: asyncio.AbstractEventLoop) -> None:
    async def handler(request: LocalRequest) -> bytes:
        return b""

    r = rig(loop, local={b"/rep": handler}, forward=False)
    r.machine.client_data(b"GET /home HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.client().startswith(b"HTTP/1.1 404 ") and not r.port.closed
    assert r.outcomes() == ["NOT_ADMIN"] and r.log.codes() == ["not-admin"]
    assert r.server.own_responses == {404: 1}


def test_no_route_answers_every_pipelined_request(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, routed=False)
    r.machine.client_data(GET * 3)
    assert r.client().count(b"HTTP/1.1 503 ") == 3 and not r.port.closed
    assert r.outcomes() == ["NO_ROUTE"] * 3 and r.log.codes() == ["no-route"] * 3
    assert r.server.own_responses == {503: 3}


def test_no_replica_answers_every_pipelined_request(loop: asyncio.AbstractEventLoop) -> None:
    # Every replica down by its heartbeats: the candidates are walked past, none is tried.
    r = rig(loop)
    for upstream in r.upstreams.values():
        upstream.up = False
    r.machine.client_data(GET * 2)
    assert r.client().count(b"HTTP/1.1 503 ") == 2 and not r.port.closed
    assert r.outcomes() == ["NO_REPLICA"] * 2 and r.log.codes() == ["no-replica"] * 2
    assert r.port.replica == [] and r.suspects == []


def test_own_limit(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, pooled=False)
    r.machine.client_data(GET)
    r.machine.connect_failed(r.machine.seq, True)
    assert r.client().startswith(b"HTTP/1.1 503 ") and b"ulimit -n" in r.client()
    assert r.outcomes() == ["OWN_LIMIT"] and r.log.codes() == ["fd-limit"]
    assert r.suspects == [] and r.port.connects == 1 and not r.port.closed


def test_connect_failed_goes_to_the_next_candidate(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, pooled=False)
    r.machine.client_data(GET)
    first = r.on()
    r.machine.connect_failed(r.machine.seq, False)
    second = r.on()
    assert second is not first and r.suspects == [first.name] and first.failures == 1
    assert r.port.connects == 2 and r.port.outcomes == [] and r.server.retries == 1
    r.connected()
    r.machine.replica_data(OK_RESPONSE)
    assert r.client() == OK_RESPONSE and r.outcomes() == ["OK"]
    assert first.active == 0 and second.active == 0


def test_a_connect_reported_late_is_ignored(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, pooled=False)
    r.machine.client_data(GET)
    seq = r.machine.seq
    r.machine.deadline_passed()  # 504: that exchange is over
    assert not r.machine.awaits(seq)
    r.machine.connect_failed(seq, False)
    assert r.outcomes() == ["HEAD_TIMEOUT"] and r.suspects == []


def test_stale_reused_is_sent_again_on_a_fresh_connection(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    first = r.on()
    r.machine.replica_lost()  # the pooled connection had been closed while it idled
    assert r.on() is first and r.port.connects == 1 and first.retries == 1
    assert r.suspects == [] and r.port.outcomes == []
    r.connected()
    assert len(r.port.replica) == 2 and r.port.replica[0] == r.port.replica[1]
    r.machine.replica_data(OK_RESPONSE)
    assert r.client() == OK_RESPONSE and r.outcomes() == ["OK"]


def test_reset_retry_goes_to_the_next_candidate(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, pooled=False)
    r.machine.client_data(GET)
    r.connected()
    first = r.on()
    r.machine.replica_lost()  # a fresh connection died unanswered
    assert r.on() is not first and r.suspects == [first.name] and first.failures == 1
    r.connected()
    r.machine.replica_data(OK_RESPONSE)
    assert r.outcomes() == ["OK"]


def test_reset_of_a_request_that_may_not_be_sent_again(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi" + GET)
    first = r.on()
    r.machine.replica_lost()
    assert r.client().startswith(b"HTTP/1.1 502 ") and b"Connection: close" not in r.client()
    assert r.suspects == [first.name] and first.failures == 1 and first.status_counts[502] == 1
    assert r.outcomes() == ["RESET"] and r.log.codes()[0] == "replica-reset"
    r.machine.replica_data(OK_RESPONSE)  # the pipelined GET is served next
    assert r.outcomes() == ["RESET", "OK"]


def test_bad_head(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    upstream = r.on()
    r.machine.replica_data(b"HTTP/1.1 2x0 OK\r\n\r\n")
    assert r.client().startswith(b"HTTP/1.1 502 ") and not r.port.closed
    assert r.outcomes() == ["BAD_HEAD"] and r.log.codes() == ["bad-response"]
    assert upstream.failures == 1 and "release close" in r.port.events


def test_head_timeout(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    upstream = r.on()
    r.machine.deadline_passed()
    assert r.client().startswith(b"HTTP/1.1 504 ") and not r.port.closed
    assert r.outcomes() == ["HEAD_TIMEOUT"] and upstream.status_counts[504] == 1


def test_bad_chunk(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    upstream = r.on()
    r.machine.replica_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    r.machine.replica_data(b"zz\r\n")
    assert r.client().endswith(b"hello\r\n") and r.port.closed
    assert r.outcomes() == ["BAD_CHUNK"] and r.log.codes() == ["bad-chunk"]
    assert r.log.lines[0][4] == 200 and upstream.failures == 1


def test_cut(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    r.machine.replica_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    r.machine.replica_lost()
    assert r.client().endswith(b"short") and r.port.closed
    assert r.outcomes() == ["CUT"] and r.log.codes() == ["replica-closed"]


def test_response_stalled(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    r.machine.replica_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    r.machine.deadline_passed()
    assert r.port.closed and r.outcomes() == ["RESPONSE_STALLED"]
    assert r.log.codes() == ["response-stalled"]


def test_body_stalled(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop, pooled=False)
    r.machine.client_data(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    assert r.machine.pending == [b"abc"]
    r.machine.deadline_passed()
    assert r.port.closed and r.client() == b"" and r.outcomes() == ["BODY_STALLED"]
    assert r.log.codes() == ["body-stalled"]


def test_client_abort(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    upstream = r.on()
    r.machine.client_lost()
    assert r.outcomes() == ["CLIENT_ABORT"] and r.log.codes() == ["client-aborted"]
    assert r.port.events[-1] == "release close" and upstream.active == 0
    assert r.machine.state_name() == "CLOSED/RESP_NONE"


def local_rig(loop: asyncio.AbstractEventLoop) -> Rig:
    async def handler(request: LocalRequest) -> bytes:
        return b""

    return rig(loop, local={b"/add": handler})


def test_local_ok_then_the_pipelined_request(loop: asyncio.AbstractEventLoop) -> None:
    r = local_rig(loop)
    r.machine.client_data(b"POST /add HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}" + GET)
    assert r.port.events == ["local b'{}'"]
    r.machine.local_done(r.machine.seq, OK_RESPONSE)
    assert r.client() == OK_RESPONSE
    r.machine.replica_data(OK_RESPONSE)
    assert r.outcomes() == ["OK", "OK"] and r.client() == OK_RESPONSE * 2


def test_local_answer_reaches_a_client_that_half_closed(loop: asyncio.AbstractEventLoop) -> None:
    r = local_rig(loop)
    r.machine.client_data(b"POST /add HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}")
    assert r.machine.client_eof()  # the connection stays open for the answer
    r.machine.local_done(r.machine.seq, OK_RESPONSE)
    assert r.client() == OK_RESPONSE and r.port.closed


@pytest.mark.parametrize(("cancelled", "name", "status"), [(False, "LOCAL_FAILED", b"500"),
                                                           (True, "LOCAL_CANCELLED", b"503")])
def test_local_failed(
    loop: asyncio.AbstractEventLoop, cancelled: bool, name: str, status: bytes
) -> None:
    r = local_rig(loop)
    r.machine.client_data(b"POST /add HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    r.machine.local_failed(r.machine.seq, cancelled, "boom")
    assert r.client().startswith(b"HTTP/1.1 " + status) and r.port.closed
    assert r.outcomes() == [name]


# ------------------------------------------------------------------ joint rules
def test_a_half_closed_client_gets_every_answer_then_the_close(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(GET * 2)
    assert r.machine.client_eof()
    r.machine.replica_data(OK_RESPONSE)
    assert not r.port.closed
    r.machine.replica_data(OK_RESPONSE)
    # The last answer says it is the last: nothing can follow it.
    assert r.client().startswith(OK_RESPONSE) and r.client().count(b"hello") == 2
    assert r.client()[len(OK_RESPONSE) :].endswith(b"Connection: close\r\n\r\nhello")
    assert r.port.closed and r.outcomes() == ["OK", "OK"]


def test_an_early_response_finishes_both_sides_closed(loop: asyncio.AbstractEventLoop) -> None:
    # h11's rule: the connection is reused only when both sides are done.
    r = rig(loop)
    r.machine.client_data(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
    r.machine.replica_data(OK_RESPONSE)
    assert r.client() == OK_RESPONSE and r.outcomes() == ["OK"]
    assert r.port.events[-2:] == ["release close", "close"]


def test_exchange_pauses_end_with_the_exchange(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.machine.client_data(GET)
    r.port.pause(ex.P_BACKEND | ex.P_PENDING)
    r.machine.replica_data(OK_RESPONSE)
    assert r.port.pauses == 0


def test_the_table_names_every_outcome() -> None:
    names = [row[0] for row in ex.OUTCOMES]
    assert [getattr(ex, name) for name in names] == list(range(len(names)))
    codes = [row[1] for row in ex.OUTCOMES]
    assert len(set(codes)) == len(codes) and all(b" " not in c for c in codes)
    doc = source_path("fastlb.proxy.exchange").read_text()  # compiled, __doc__ is gone
    for name, code in zip(names, codes, strict=True):
        assert f"{name} " in doc and code.decode() in doc, name


# ---------------------------------------------------------------- found by the fuzzer, kept
@pytest.mark.parametrize("routed", [False, True], ids=["no-route", "bad-path"])
def test_own_answers_to_deep_pipelines_loop_not_recurse(
    loop: asyncio.AbstractEventLoop, routed: bool
) -> None:
    # Each own answer used to read the next pipelined request from inside the last one's
    # ending: 20,000 of them raised RecursionError from source and overflowed the C stack
    # compiled. Now they are read in one loop, and the request after them is relayed.
    r = rig(loop, routed=routed, paths=("/home",) if routed else ())
    own = b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
    r.machine.client_data(own * 20_000 + GET)
    status = b"HTTP/1.1 400 " if routed else b"HTTP/1.1 503 "
    assert r.client().count(status) == (20_000 if routed else 20_001)
    assert not r.port.closed
    if routed:
        assert r.replica().startswith(b"GET /home ")
        r.machine.replica_data(OK_RESPONSE)
        assert r.client().endswith(OK_RESPONSE) and r.outcomes()[-1] == "OK"


def test_a_deep_pipeline_behind_a_relayed_request_then_the_half_close(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # The pipelined requests wait behind the relayed one, the client half-closes, and every
    # one is answered in the loop once the response is in, then the connection closes.
    r = rig(loop, paths=("/home",))
    r.machine.client_data(GET + b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n" * 5_000)
    assert r.machine.client_eof() is True and not r.port.closed
    r.machine.replica_data(OK_RESPONSE)
    assert r.client().startswith(OK_RESPONSE)
    assert r.client().count(b"HTTP/1.1 400 ") == 5_000 and r.port.closed


def test_bad_chunk_in_the_read_with_the_head_is_a_502(loop: asyncio.AbstractEventLoop) -> None:
    # Nothing of the response went out: the client is told, not cut.
    r = rig(loop)
    r.machine.client_data(GET)
    upstream = r.on()
    r.machine.replica_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert r.client().startswith(b"HTTP/1.1 502 ") and r.port.closed
    assert r.outcomes() == ["BAD_CHUNK"] and r.log.codes() == ["bad-chunk"]
    assert upstream.failures == 1
    assert upstream.status_counts[200] == 0 and upstream.status_counts[502] == 1


# ---------------------------------------------------------------- WebSocket tunnels
UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
#: SWITCH as the client gets it: hop-by-hop fields dropped, the switch's two written anew.
SWITCH_OUT = (
    b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"
)


def tunnel(loop: asyncio.AbstractEventLoop, **kwargs: object) -> Rig:
    """A rig whose exchange has become a tunnel (the 101 relayed)."""
    r = rig(loop, **kwargs)  # type: ignore[arg-type]
    r.machine.client_data(UPGRADE)
    r.machine.replica_data(SWITCH)
    assert r.machine.state_name() == "REQ_TUNNEL/RESP_TUNNEL"
    return r


def forwarded_head(r: Rig) -> bytes:
    out = r.replica()
    return out[: out.find(b"\r\n\r\n") + 4]


def test_an_upgrade_request_keeps_exactly_connection_upgrade_and_upgrade_websocket(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(UPGRADE)
    head = forwarded_head(r).lower()
    assert head.count(b"\r\nconnection:") == 1 and b"\r\nconnection: upgrade\r\n" in head
    assert head.count(b"\r\nupgrade:") == 1 and b"\r\nupgrade: websocket\r\n" in head
    assert b"sec-websocket-key: dghlihnhbxbszsbub25jzq==" in head  # end-to-end: kept
    assert b"sec-websocket-version: 13" in head and b"keep-alive" not in head


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize(
    ("fields", "upgrade"),
    [
        (b"Connection: Upgrade\r\nUpgrade: websocket\r\n", True),
        (b"connection: UPGRADE\r\nupgrade: WebSocket\r\n", True),  # tokens without case
        (b"Connection: close\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\n", True),
        (b"Upgrade: websocket\r\n", False),  # Connection must name it (RFC 9110 §7.8)
        (b"Connection: Upgrade\r\n", False),
        (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", False),
        (b"Connection: upgraded\r\nUpgrade: websocket\r\n", False),
        (b"Connection: Upgrade\r\nUpgrade: websockets\r\n", False),
    ],
)
def test_only_a_websocket_upgrade_is_forwarded_by_both_parsers(
    loop: asyncio.AbstractEventLoop, http: str, fields: bytes, upgrade: bool
) -> None:
    r = rig(loop, http=http)
    r.machine.client_data(b"GET /ws HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
    head = r.machine.head
    assert head is not None and head.upgrade is upgrade
    out = forwarded_head(r).lower()
    assert (b"\r\nupgrade: websocket\r\n" in out) is upgrade
    assert b"h2c" not in out and b"http2-settings" not in out  # h2c: a smuggling vector
    assert out.count(b"\r\nupgrade:") == int(upgrade)


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize(
    "line", [b"POST /ws HTTP/1.1", b"GET /ws HTTP/1.0"], ids=["POST", "HTTP/1.0"]
)
def test_an_upgrade_on_other_than_a_get_in_http11_is_dropped(
    loop: asyncio.AbstractEventLoop, http: str, line: bytes
) -> None:
    # RFC 6455 §4.1: GET, HTTP/1.1; RFC 9110 §7.8: Upgrade in HTTP/1.0 is ignored.
    r = rig(loop, http=http)
    r.machine.client_data(line + b"\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert r.machine.head is not None and not r.machine.head.upgrade
    assert b"upgrade" not in forwarded_head(r).lower()
    r.machine.replica_data(SWITCH)
    assert r.client().startswith(b"HTTP/1.1 502 ") and r.outcomes() == ["BAD_HEAD"]


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["content-length", "chunked"],
)
def test_an_upgrade_request_with_a_body_is_refused(
    loop: asyncio.AbstractEventLoop, http: str, framing: bytes
) -> None:
    r = rig(loop, http=http)
    r.machine.client_data(UPGRADE[:-2] + framing + b"\r\nhello")
    assert r.client().startswith(b"HTTP/1.1 400 ") and r.port.closed
    assert r.replica() == b"" and r.outcomes() == ["REFUSED"]


def test_an_upgrade_request_with_content_length_0_is_forwarded(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(UPGRADE[:-2] + b"Content-Length: 0\r\n\r\n")
    r.machine.replica_data(SWITCH)
    assert r.machine.state_name() == "REQ_TUNNEL/RESP_TUNNEL"


def test_a_101_becomes_a_tunnel_relaying_raw_bytes_both_ways(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = tunnel(loop)
    upstream = r.on()
    assert r.client() == SWITCH_OUT
    sent = len(r.replica())
    r.machine.client_data(b"\x81\x05hello")
    r.machine.client_data(b"GET / HTTP/1.1\r\n\r\n")  # no longer HTTP: relayed as bytes
    r.machine.replica_data(b"\x81\x05world")
    assert r.replica()[sent:] == b"\x81\x05helloGET / HTTP/1.1\r\n\r\n"
    assert r.client() == SWITCH_OUT + b"\x81\x05world"
    assert r.outcomes() == [] and len(r.port.events) == 1  # the pooled connection's, only
    assert r.server.tunnels == 1 and r.server.tunnels_open == 1
    assert (r.server.tunnel_bytes_up, r.server.tunnel_bytes_down) == (7 + 18, 7)
    assert upstream.status_counts[101] == 1 and upstream.active == 1
    assert sum(upstream.duration_counts) == 1  # counted at the switch


@settings(max_examples=200, deadline=None)
@given(
    client_cuts=st.lists(st.integers(0, 10_000), max_size=10),
    replica_cuts=st.lists(st.integers(0, 10_000), max_size=10),
    early=st.integers(0, 40),
)
def test_a_tunnel_in_any_split_gives_the_same_bytes(
    loop: asyncio.AbstractEventLoop, client_cuts: list[int], replica_cuts: list[int], early: int
) -> None:
    # The client's bytes after its head (`early` of them before the 101: held, then sent
    # first), the 101 with the replica's first frames behind it, then more of each.
    up = bytes(range(40)) * 3
    down = b"\x82\x7e\x01\x00" + b"z" * 256
    results = []
    for ccuts, rcuts in (((), ()), (client_cuts, replica_cuts)):
        r = rig(loop)
        for piece in split(UPGRADE + up[:early], ccuts):
            r.machine.client_data(piece)
        for piece in split(SWITCH + down, rcuts):
            r.machine.replica_data(piece)
        for piece in split(up[early:], ccuts):
            r.machine.client_data(piece)
        results.append((r.client(), r.replica(), r.outcomes(), r.machine.state_name()))
    assert results[0] == results[1]
    client, replica, outcomes, state = results[0]
    assert client == SWITCH_OUT + down and replica.endswith(b"\r\n\r\n" + up)
    assert outcomes == [] and state == "REQ_TUNNEL/RESP_TUNNEL"


def test_bytes_held_behind_the_upgrade_go_first_and_their_pause_ends(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    early = b"e" * (r.server.high_water + 1)
    r.machine.client_data(UPGRADE + early)
    assert r.port.pauses & ex.P_PIPELINE and not r.replica().endswith(b"e")
    r.machine.replica_data(SWITCH)
    assert r.replica().endswith(b"\r\n\r\n" + early) and r.port.pauses == 0


def test_a_tunnel_keeps_the_shells_backpressure_pause(loop: asyncio.AbstractEventLoop) -> None:
    # The replica's socket is full (the shell paused the client): tunnel bytes do not lift it.
    r = tunnel(loop)
    r.port.pause(ex.P_BACKEND)
    r.machine.client_data(b"x" * 1000)
    r.machine.replica_data(b"y" * 1000)
    assert r.port.pauses == ex.P_BACKEND
    r.port.resume(ex.P_BACKEND)  # its drain, as the shell reports it
    assert r.port.pauses == 0


@pytest.mark.parametrize("how", ["eof", "lost"])
def test_a_close_from_the_client_ends_the_tunnel(loop: asyncio.AbstractEventLoop, how: str) -> None:
    r = tunnel(loop)
    upstream = r.on()
    r.machine.replica_data(b"abc")
    if how == "eof":
        r.machine.client_eof()
    else:
        r.machine.client_lost()
    assert r.outcomes() == ["TUNNEL_CLIENT"] and r.log.codes() == ["tunnel-client"]
    assert r.port.events[-2:] == ["release close", "close"]  # never pooled
    _, _, head, replica, status, length, _, _ = r.log.lines[0]
    assert head is not None and (head.method, head.target) == (b"GET", b"/chat")
    assert (replica, status, length) == (upstream.name.encode(), 101, 3), r.log.lines[0]
    assert r.server.tunnels_open == 0 and upstream.active == 0 and upstream.failures == 0
    assert r.machine.state_name() == "CLOSED/RESP_NONE"
    r.machine.client_lost()  # the shell's connection_lost after fastlb's close: nothing more
    assert r.outcomes() == ["TUNNEL_CLIENT"] and r.server.tunnels_open == 0


def test_a_close_from_the_replica_ends_the_tunnel(loop: asyncio.AbstractEventLoop) -> None:
    r = tunnel(loop)
    upstream = r.on()
    r.machine.replica_data(b"\x88\x02\x03\xe8")  # a close frame, then the TCP close
    r.machine.replica_lost()
    assert r.outcomes() == ["TUNNEL_REPLICA"] and r.log.codes() == ["tunnel-replica"]
    assert r.port.closed and r.client().endswith(b"\x88\x02\x03\xe8")
    assert "release keep" not in r.port.events
    assert r.server.tunnels_open == 0 and upstream.active == 0 and upstream.failures == 0
    r.machine.client_lost()
    assert r.outcomes() == ["TUNNEL_REPLICA"]


def test_an_idle_tunnel_closes_at_tunnel_timeout(loop: asyncio.AbstractEventLoop) -> None:
    r = tunnel(loop)
    first = r.port.deadline
    assert first > 0
    r.machine.client_data(b"ping")  # each byte either way moves the deadline on
    assert r.port.deadline >= first
    r.machine.deadline_passed()
    assert r.outcomes() == ["TUNNEL_IDLE"] and r.log.codes() == ["tunnel-idle"]
    assert r.port.closed and r.port.events[-2:] == ["release close", "close"]
    assert r.server.tunnels_open == 0


def test_the_tunnel_deadline_is_tunnel_timeout(loop: asyncio.AbstractEventLoop) -> None:
    r = rig(loop)
    r.server.tunnel_timeout = 1234.0
    r.machine.client_data(UPGRADE)
    r.machine.replica_data(SWITCH)
    from time import monotonic

    assert 1233.0 < r.port.deadline - monotonic() <= 1234.0
    r.server.tunnel_timeout = 77.0
    r.machine.replica_data(b"x")
    assert 76.0 < r.port.deadline - monotonic() <= 77.0


def test_terminate_ends_a_tunnel_at_the_end_of_the_shutdown_grace(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = tunnel(loop)
    r.server.draining = True
    assert r.machine.shutdown() is False  # busy: the grace runs
    assert r.machine.terminate() is True
    assert r.outcomes() == ["TUNNEL_SHUTDOWN"] and r.log.codes() == ["tunnel-shutdown"]
    assert r.port.closed and r.server.tunnels_open == 0
    plain = rig(loop)
    plain.machine.client_data(GET)
    assert plain.machine.terminate() is False  # not a tunnel: the shell closes it


@pytest.mark.parametrize(
    "request_head",
    [GET, b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"],
    ids=["plain", "h2c"],
)
def test_a_101_without_a_websocket_upgrade_request_is_a_502(
    loop: asyncio.AbstractEventLoop, request_head: bytes
) -> None:
    r = rig(loop)
    r.machine.client_data(request_head)
    upstream = r.on()
    r.machine.replica_data(SWITCH + b"\x81\x00")
    assert r.client().startswith(b"HTTP/1.1 502 ") and b"Switching" not in r.client()
    assert r.outcomes() == ["BAD_HEAD"] and "release close" in r.port.events
    assert r.server.tunnels == 0 and upstream.status_counts[502] == 1
    assert not r.port.closed  # the client's connection is fine (keep*)


@pytest.mark.parametrize(
    "switch",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["h2c", "no-connection", "bare", "chunked"],
)
def test_a_101_that_is_no_websocket_switch_is_a_502(
    loop: asyncio.AbstractEventLoop, switch: bytes
) -> None:
    r = rig(loop)
    r.machine.client_data(UPGRADE)
    r.machine.replica_data(switch)
    assert r.client().startswith(b"HTTP/1.1 502 ") and r.outcomes() == ["BAD_HEAD"]
    assert r.server.tunnels == 0


def test_a_non_101_answer_to_an_upgrade_is_an_ordinary_response(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(UPGRADE + GET)  # a request pipelined behind it is a request again
    r.machine.replica_data(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
    assert r.client().startswith(b"HTTP/1.1 426 ") and r.outcomes() == ["OK"]
    assert r.machine.state_name() == "REQ_DONE/RESP_HEAD"  # the GET behind it went out
    r.machine.replica_data(OK_RESPONSE)
    assert r.client().endswith(OK_RESPONSE) and r.outcomes() == ["OK", "OK"]
    assert r.server.tunnels == 0 and not r.port.closed


def test_a_client_that_half_closed_before_the_101_gets_it_then_the_close(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.machine.client_data(UPGRADE + b"last")
    assert r.machine.client_eof() is True  # its answer is awaited
    r.machine.replica_data(SWITCH)
    assert r.client() == SWITCH_OUT and r.replica().endswith(b"last")
    assert r.outcomes() == ["TUNNEL_CLIENT"] and r.port.closed


# ------------------------------------------------------------------- bounded loads
def test_below_cap_is_the_weighted_ceiling_and_some_replica_is_always_below() -> None:
    ups = [Upstream(n, "127.0.0.1", 1) for n in ("a", "b", "c")]
    for up, active in zip(ups, (4, 0, 0), strict=True):
        up.active = active
    # total 4 (+1) x 1.25 / 3 -> cap ceil(2.08) = 3: "a" (4) is over, the others are below.
    assert [ex.below_cap(u, tuple(ups), 1.25) for u in ups] == [False, True, True]
    ups[1].up = False  # a replica that is down neither counts nor takes a share
    ups[2].active = 3
    # total 4 + 3 over "a" and "c" (+1) x 1.25 / 2 -> cap 5: both below now.
    assert ex.below_cap(ups[0], tuple(ups), 1.25) and ex.below_cap(ups[2], tuple(ups), 1.25)
    ups[0].active = 7  # total 10 (+1) x 1.25 / 2 -> cap ceil(6.875) = 7: at it
    assert not ex.below_cap(ups[0], tuple(ups), 1.25)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(1, 8), st.booleans()), min_size=1,
             max_size=12),
    st.floats(1.0, 3.0),
)
def test_some_replica_that_is_up_is_always_below_its_cap(
    loads: list[tuple[int, int, bool]], factor: float
) -> None:
    ups = []
    for i, (active, weight, up) in enumerate(loads):
        upstream = Upstream(f"r{i}", "127.0.0.1", 1, weight=weight)
        upstream.active, upstream.up = active, up
        ups.append(upstream)
    if any(u.up for u in ups):
        assert any(ex.below_cap(u, tuple(ups), factor) for u in ups if u.up)


def test_a_key_whose_replica_is_full_goes_to_its_next_candidate(
    loop: asyncio.AbstractEventLoop,
) -> None:
    r = rig(loop)
    r.server.balance_factor = 1.25
    home = r.server.route
    assert home is not None
    key = b"/home"
    first = home.upstreams[home.table.lookup(key)]
    first.active = 5  # the others idle: cap ceil(1.25 x 6 / 3) = 3
    r.machine.client_data(GET)
    assert r.on() is not first and r.server.over_cap == 1 and r.server.retries == 0
    r.machine.replica_data(OK_RESPONSE)
    assert r.outcomes() == ["OK"]
    # Below its cap again: the key is home.
    first.active = 0
    r.machine.client_data(GET)
    assert r.on() is first


def test_when_every_replica_is_full_the_key_stays_home(loop: asyncio.AbstractEventLoop) -> None:
    # Cannot happen with factor >= 1 and honest counts; if it did, no request is refused for it.
    r = rig(loop)
    r.server.balance_factor = 1.0
    route = r.server.route
    assert route is not None
    first = route.upstreams[route.table.lookup(b"/home")]
    first.active = 100
    for up in r.upstreams.values():
        if up is not first:
            up.active = 100
            up.refused_until = 1e18  # refused moments ago: the last resort
    r.machine.client_data(GET)
    assert r.on() is first and r.server.over_cap == 0
