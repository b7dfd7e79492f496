"""The relay of one client connection as a sans-IO machine: bytes and events in, Port calls out.

Every decision of the data path lives in this file (h11's Rule 1: everything that affects the
state machine and its transitions lives here): where a request head ends and what is done with
it, where each body ends, which replica is tried and which next, when an exchange finishes and
what the client sees when it does not finish cleanly. `client.py` is the asyncio shell: it
feeds this machine what its transports read and report, and implements `Port` with those
transports and the outbox. Nothing here imports asyncio or touches a socket, so
tests/test_exchange.py drives the machine through `Recorder` with no socket at all.

The machine is fed by the shell (client side: `client_data`, `client_eof`, `client_lost`;
replica side: `replica_data`, `replica_connected`, `connect_failed`, `replica_lost`; and
`deadline_passed`, `local_done`, `local_failed`, `shutdown`, `terminate`) and acts through a
`Port`: send to the client or the replica, open or release a replica connection, pause or
resume reading the client, run an admin handler, close. `Port` is a base class, not a
typing.Protocol, for the reason fastlb/http/parsers.py gives: compiled by mypyc, a call
through it is a direct C call.
No event object is made per request: the machine calls, it does not return events.

Connection level: one machine per client connection, `req` its cursor; the exchange state below
is reset in one place (`_reset`) when an exchange ends, never reallocated:

    IDLE --head whole--> REQ_BODY or REQ_DONE (or REQ_LOCAL: an admin route's body)
      ^                       |
      |  finish, keep         v
      +------------- the exchange (both cursors below) --finish, close--> CLOSED
    IDLE --idle deadline / EOF with nothing buffered / shutdown()--> CLOSED
    REQ_DONE --101 to a WebSocket upgrade request--> REQ_TUNNEL --either side closes, idle
        tunnel_timeout, terminate() at the end of the shutdown grace--> CLOSED

Each exchange has a cursor per direction (HAProxy's `struct h1m`: a state, the bytes left, a
framer), and it finishes cleanly only when both are done (h11's rule for reusing a
connection): a response that ends while the request body is still coming is relayed whole,
then the connection closes.

    request side (req)                     response side (resp)
    REQ_BODY --body ends--> REQ_DONE       RESP_CONNECTING --connected--> RESP_HEAD
    (a bodiless head starts in REQ_DONE;   RESP_HEAD --head--> RESP_LENGTH | RESP_CHUNKED |
     an admin body: REQ_LOCAL -> REQ_DONE)   RESP_CLOSE --body ends--> done
                                           (a 1xx head loops in RESP_HEAD; a bodiless or
                                            whole response is done at its head; an admin
                                            route: RESP_LOCAL --answer--> done)
    REQ_DONE --101--> REQ_TUNNEL           RESP_HEAD --101--> RESP_TUNNEL
    (the client's bytes go to the replica   (the replica's bytes go to the client raw)
     raw, `buf` first)
    exchange pauses of the client's reading: P_BACKEND (the replica's socket is full),
    P_PENDING (body bytes wait for a connection); both end with the exchange.

    done cleanly (OK) only when req is REQ_DONE and the response is done; every other ending
    goes through `_finish(outcome)` and the table below; a tunnel's through `_end_tunnel`.

A tunnel (RFC 9110 §7.8, RFC 6455 §4): a request is one when it is a GET in HTTP/1.1 with
`Connection: upgrade` and `Upgrade: websocket` (`RequestHead.upgrade`, set by the head parser
on its slow path, so an ordinary request pays nothing) and no body (else 400); it goes out
with exactly those two hop-by-hop fields (any other Upgrade, h2c included, is dropped as
before). A 101 to it switches both cursors to *_TUNNEL, and a 101 to any other request is a
bad response (502). A non-101 answer is an ordinary response. In a tunnel bytes are relayed
raw both ways, each read resets the idle deadline (`[proxy] tunnel_timeout`), and the shell's
flow control applies as in any exchange (a full socket pauses reading the other side); when
either side closes, the other is closed once what was sent to it has left. A tunnel's
replica connection is never pooled, and its client connection never takes another request.

The outcome table: one row per way an exchange ends other than cleanly, and the failures
before a response head that are retried instead. "keep*": the connection stays when the
request was read whole (REQ_DONE), the client asked for keep-alive, has not half-closed with
nothing left buffered, and fastlb is not draining; "cut": a response head had gone out, so the
client sees the connection close. The code is the access log's last field (HAProxy's
termination state, in words); an exchange that ended cleanly shows "-".

    outcome          code              client sees        conn   retry          suspect counter
    OK               -                 the response       keep*  -              -       status
    REFUSED          refused           4xx (or cut)       close  -              -       refused
    TIMEOUT          timeout           408                close  -              -       refused
    BAD_PATH         bad-path          400                keep*  -              -       rejected+own
    NOT_ADMIN        not-admin         404                keep*  -              -       own
    NO_ROUTE         no-route          503                keep*  -              -       own
    NO_REPLICA       no-replica        503                keep*  -              -       own
    OWN_LIMIT        fd-limit          503                keep*  -              -       own
    CONNECT_FAILED   connect-failed    (next candidate)   -      next cand.     yes     failures
    STALE_REUSED     stale-conn        (same replica)     -      fresh conn     -       retries
    RESET_RETRY      reset-retried     (next candidate)   -      next cand.     yes     failures
    RESET            replica-reset     502                keep*  -              yes     failures
    BAD_HEAD         bad-response      502                keep*  -              -       failures
    HEAD_TIMEOUT     replica-timeout   504                keep*  -              -       failures
    BAD_CHUNK        bad-chunk         cut (502†)         close  -              -       failures
    CUT              replica-closed    cut                close  -              -       failures
    RESPONSE_STALLED response-stalled  cut                close  -              -       failures
    BODY_STALLED     body-stalled      cut                close  -              -       failures
    CLIENT_ABORT     client-aborted    -                  gone   -              -       -
    LOCAL_FAILED     admin-failed      500                close  -              -       -
    LOCAL_CANCELLED  shutdown          503                close  -              -       -
    TUNNEL_CLIENT    tunnel-client     (its own close)    close  -              -       -
    TUNNEL_REPLICA   tunnel-replica    close              close  -              -       -
    TUNNEL_IDLE      tunnel-idle       close              close  -              -       -
    TUNNEL_SHUTDOWN  tunnel-shutdown   close              close  -              -       -

CONNECT_FAILED, STALE_REUSED and RESET_RETRY end nothing: nothing of a response arrived, so the
request is sent again (RESET_RETRY only for an idempotent bodiless request, RFC 9110 §9.2.2);
when no candidate is left the exchange ends as NO_REPLICA. RESET is a reset before the head of
a request that may not be sent again. "own": fastlb's own responses by status
(`ProxyServer.own_responses`), "failures": the replica's `Upstream.failures` (and its status
count for a 502/504), "refused"/"rejected": the listener's counters. †: a bad chunk in the
same read as the response head, which has not gone out yet, is answered 502 rather than cut.
The TUNNEL_* rows end a tunnel: a close by the client (TUNNEL_CLIENT: EOF or a reset) or by
the replica (TUNNEL_REPLICA) is its normal end, as a WebSocket's close handshake ends in a
TCP close; TUNNEL_IDLE: no byte either way for tunnel_timeout; TUNNEL_SHUTDOWN: still open
when SIGTERM's shutdown_timeout ran out. Each is logged with status 101, the bytes the client
got and the tunnel's whole duration, and counted in the server's tunnel counters
(`tunnels`, `tunnels_open`, `tunnel_bytes_up`/`_down`), not as a failure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from fastlb.http.accept import check_partial
from fastlb.http.errors import HttpError
from fastlb.http.framing import ChunkedFramer, RequestChunks
from fastlb.http.head import CHUNKED, UNTIL_CLOSE, RequestHead
from fastlb.http.messages import error_response, unknown_path_message
from fastlb.http.response import ResponseReader
from fastlb.http.rewrite import request_head_out

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastlb.proxy.server import ProxyServer
    from fastlb.proxy.upstream import Upstream
    from fastlb.routing import Route

log = logging.getLogger("fastlb.proxy")


class LocalRequest:
    """A request fastlb answers itself (an admin route): the head, the body, the peer."""

    __slots__ = ("body", "client_ip", "head")

    def __init__(self, head: RequestHead, body: bytes, client_ip: bytes) -> None:
        self.head = head
        self.body = body
        self.client_ip = client_ip


#: Answers a LocalRequest with a complete HTTP response.
LocalHandler = Callable[[LocalRequest], Coroutine[Any, Any, bytes]]

# The request cursor, which is also the connection's state.
IDLE: Final = 0  # no exchange: waiting for (the rest of) a request head
REQ_BODY: Final = 1  # relaying the request body to the replica
REQ_DONE: Final = 2  # the request is read whole; its response is awaited or relayed
REQ_LOCAL: Final = 3  # reading the body of a request fastlb answers itself (admin routes)
CLOSED: Final = 4
REQ_TUNNEL: Final = 5  # after a 101: the client's bytes go to the replica raw, until a close

# The response cursor.
RESP_NONE: Final = 0  # no exchange
RESP_CONNECTING: Final = 1  # a replica connection is being opened
RESP_HEAD: Final = 2  # the request head went out; waiting for the response head
RESP_LENGTH: Final = 3  # relaying a Content-Length body (`resp_left` bytes to go)
RESP_CHUNKED: Final = 4  # relaying a chunked body (`resp_framer` finds its end)
RESP_CLOSE: Final = 5  # relaying a body that ends when the replica closes
RESP_DONE: Final = 6  # the response is whole (a bodiless one, at its head)
RESP_LOCAL: Final = 7  # an admin handler is making the answer
RESP_TUNNEL: Final = 8  # after a 101: the replica's bytes go to the client raw, until a close

_REQ_NAMES: Final = ("IDLE", "REQ_BODY", "REQ_DONE", "REQ_LOCAL", "CLOSED", "REQ_TUNNEL")
_RESP_NAMES: Final = (
    "RESP_NONE",
    "RESP_CONNECTING",
    "RESP_HEAD",
    "RESP_LENGTH",
    "RESP_CHUNKED",
    "RESP_CLOSE",
    "RESP_DONE",
    "RESP_LOCAL",
    "RESP_TUNNEL",
)

# Reasons to pause reading from the client; reading resumes when none is left.
P_PIPELINE: Final = 1  # too many pipelined bytes waiting
P_BACKEND: Final = 2  # the replica's socket buffer is full (request body upload)
P_PENDING: Final = 4  # body bytes waiting for a replica connection to open

# Outcomes: the rows of the table in the module docstring, in its order.
OK: Final = 0
REFUSED: Final = 1
TIMEOUT: Final = 2
BAD_PATH: Final = 3
NOT_ADMIN: Final = 4
NO_ROUTE: Final = 5
NO_REPLICA: Final = 6
OWN_LIMIT: Final = 7
CONNECT_FAILED: Final = 8
STALE_REUSED: Final = 9
RESET_RETRY: Final = 10
RESET: Final = 11
BAD_HEAD: Final = 12
HEAD_TIMEOUT: Final = 13
BAD_CHUNK: Final = 14
CUT: Final = 15
RESPONSE_STALLED: Final = 16
BODY_STALLED: Final = 17
CLIENT_ABORT: Final = 18
LOCAL_FAILED: Final = 19
LOCAL_CANCELLED: Final = 20
TUNNEL_CLIENT: Final = 21
TUNNEL_REPLICA: Final = 22
TUNNEL_IDLE: Final = 23
TUNNEL_SHUTDOWN: Final = 24

# The table's columns, indexed by outcome.
_NO: Final = 0
_SAME: Final = 1  # retry: the same replica on a fresh connection
_NEXT: Final = 2  # retry: the next candidate

_C_NONE: Final = 0
_C_REFUSED: Final = 1
_C_REJECTED: Final = 2
_C_OWN: Final = 3
_C_FAILURES: Final = 4
_C_RETRIES: Final = 5

#: (name, code, status (0: none, or a cut), keep*, retry, suspect, counter)
OUTCOMES: Final[tuple[tuple[str, bytes, int, bool, int, bool, int], ...]] = (
    ("OK", b"-", 0, True, _NO, False, _C_NONE),
    ("REFUSED", b"refused", 400, False, _NO, False, _C_REFUSED),
    ("TIMEOUT", b"timeout", 408, False, _NO, False, _C_REFUSED),
    ("BAD_PATH", b"bad-path", 400, True, _NO, False, _C_REJECTED),
    ("NOT_ADMIN", b"not-admin", 404, True, _NO, False, _C_OWN),
    ("NO_ROUTE", b"no-route", 503, True, _NO, False, _C_OWN),
    ("NO_REPLICA", b"no-replica", 503, True, _NO, False, _C_OWN),
    ("OWN_LIMIT", b"fd-limit", 503, True, _NO, False, _C_OWN),
    ("CONNECT_FAILED", b"connect-failed", 0, False, _NEXT, True, _C_FAILURES),
    ("STALE_REUSED", b"stale-conn", 0, False, _SAME, False, _C_RETRIES),
    ("RESET_RETRY", b"reset-retried", 0, False, _NEXT, True, _C_FAILURES),
    ("RESET", b"replica-reset", 502, True, _NO, True, _C_FAILURES),
    ("BAD_HEAD", b"bad-response", 502, True, _NO, False, _C_FAILURES),
    ("HEAD_TIMEOUT", b"replica-timeout", 504, True, _NO, False, _C_FAILURES),
    ("BAD_CHUNK", b"bad-chunk", 0, False, _NO, False, _C_FAILURES),
    ("CUT", b"replica-closed", 0, False, _NO, False, _C_FAILURES),
    ("RESPONSE_STALLED", b"response-stalled", 0, False, _NO, False, _C_FAILURES),
    ("BODY_STALLED", b"body-stalled", 0, False, _NO, False, _C_FAILURES),
    ("CLIENT_ABORT", b"client-aborted", 0, False, _NO, False, _C_NONE),
    ("LOCAL_FAILED", b"admin-failed", 500, False, _NO, False, _C_NONE),
    ("LOCAL_CANCELLED", b"shutdown", 503, False, _NO, False, _C_NONE),
    ("TUNNEL_CLIENT", b"tunnel-client", 0, False, _NO, False, _C_NONE),
    ("TUNNEL_REPLICA", b"tunnel-replica", 0, False, _NO, False, _C_NONE),
    ("TUNNEL_IDLE", b"tunnel-idle", 0, False, _NO, False, _C_NONE),
    ("TUNNEL_SHUTDOWN", b"tunnel-shutdown", 0, False, _NO, False, _C_NONE),
)
# The columns as flat tuples: the table read per ending, one index each.
_CODE: Final = tuple(row[1] for row in OUTCOMES)
_STATUS: Final = tuple(row[2] for row in OUTCOMES)
_KEEP: Final = tuple(row[3] for row in OUTCOMES)
_RETRY: Final = tuple(row[4] for row in OUTCOMES)
_SUSPECT: Final = tuple(row[5] for row in OUTCOMES)
_COUNTER: Final = tuple(row[6] for row in OUTCOMES)

#: A replica's response head larger than this is treated as garbage.
MAX_RESPONSE_HEAD: Final = 64 * 1024
#: Admin request bodies are small JSON documents.
MAX_LOCAL_BODY: Final = 64 * 1024
#: Requests that may be sent again after a replica failed before answering (RFC 9110 9.2.2),
#: provided they carry no body.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT", b"TRACE"})


def outcome_name(outcome: int) -> str:
    return OUTCOMES[outcome][0]


def outcome_code(outcome: int) -> bytes:
    """The access log's termination code of `outcome`."""
    return _CODE[outcome]


class Port:
    """What the machine does to the world; `ClientConnection` implements it with transports.

    `deadline` (monotonic seconds, 0.0: none) is read by the server's sweep, which calls
    `Exchange.deadline_passed` once it is past; `pauses` is the bitmask of reasons the client's
    reading is paused (the implementation keeps it in `pause`/`resume`); `traced`: whether
    `ended` is called (only a port that wants it pays for the call, run from source)."""

    __slots__ = ("deadline", "pauses", "traced")

    def __init__(self) -> None:
        self.deadline = 0.0
        self.pauses = 0
        self.traced = False

    def to_client(self, data: bytes) -> None:
        """Send `data` to the client (in order, after what was sent before)."""
        raise NotImplementedError

    def to_replica(self, data: bytes) -> None:
        """Send `data` on the replica connection the exchange holds."""
        raise NotImplementedError

    def open_replica(self, upstream: Upstream, pooled: bool) -> ResponseReader | None:
        """Get a connection to `upstream` for the exchange: with `pooled`, an idle one if there
        is one, attached at once (its response reader is returned); else start opening one and
        return None: `replica_connected` or `connect_failed` follows, with the exchange's
        `seq` of now."""
        raise NotImplementedError

    def release_replica(self, keep: bool) -> None:
        """The exchange is done with its replica connection (if it has one): back to the pool
        with `keep`, else closed (part of a request or response is still in it)."""
        raise NotImplementedError

    def pause(self, reason: int) -> None:
        """Stop reading the client for `reason` (P_*)."""
        raise NotImplementedError

    def resume(self, reason: int) -> None:
        """`reason`s no longer hold; reading resumes when no reason is left."""
        raise NotImplementedError

    def run_local(self, handler: LocalHandler, request: LocalRequest) -> None:
        """Run an admin handler; `local_done` or `local_failed` follows with today's `seq`."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the client connection once what was sent has left."""
        raise NotImplementedError

    def ended(self, outcome: int) -> None:
        """An exchange ended with `outcome` (a hook for tests; the shell needs nothing)."""


class Recorder(Port):
    """A Port that keeps what the machine did, with no socket: the test suite's port
    (tests/test_exchange.py), defined here so that it is compiled with the machine (an
    interpreted subclass of a compiled class would need mypyc to allow it, which slows every
    call through Port). `pooled`: whether `open_replica` finds an idle connection."""

    __slots__ = ("client", "closed", "connects", "events", "outcomes", "pooled", "replica")

    def __init__(self, pooled: bool = True) -> None:
        super().__init__()
        self.traced = True
        self.pooled = pooled
        self.client: list[bytes] = []
        self.replica: list[bytes] = []
        self.events: list[str] = []
        self.outcomes: list[int] = []
        self.connects = 0
        self.closed = False

    def to_client(self, data: bytes) -> None:
        self.client.append(data)

    def to_replica(self, data: bytes) -> None:
        self.replica.append(data)

    def open_replica(self, upstream: Upstream, pooled: bool) -> ResponseReader | None:
        if pooled and self.pooled:
            self.events.append(f"pooled {upstream.name}")
            return ResponseReader()
        self.connects += 1
        self.events.append(f"connect {upstream.name}")
        return None

    def release_replica(self, keep: bool) -> None:
        self.events.append("release keep" if keep else "release close")

    def pause(self, reason: int) -> None:
        self.pauses |= reason

    def resume(self, reason: int) -> None:
        self.pauses &= ~reason

    def run_local(self, handler: LocalHandler, request: LocalRequest) -> None:
        self.events.append(f"local {request.body!r}")

    def close(self) -> None:
        self.closed = True
        self.events.append("close")

    def ended(self, outcome: int) -> None:
        self.outcomes.append(outcome)


def below_cap(upstream: Upstream, upstreams: tuple[Upstream, ...], factor: float) -> bool:
    """Whether `upstream` may take one more exchange under consistent hashing with bounded
    loads (Mirrokni, Thorup and Zadimoghaddam, 2018), as HAProxy's hash-balance-factor
    applies it: a replica's in-flight count stays below its weight's part of `factor` times
    the total in flight (this one included), rounded up. Over the replicas that are up, the
    caps add up to at least the total plus one, so some replica is always below its cap; a
    key whose replica is full goes to the next of its candidates, and comes back once it is
    not. O(replicas), paid only with balance_factor set; each process counts its own
    exchanges, as HAProxy's threads and Envoy's workers do."""
    total = 0
    weights = 0
    for other in upstreams:
        if other.up:
            total += other.active
            weights += other.weight
    if weights == 0:
        return True
    cap = math.ceil(factor * (total + 1) * upstream.weight / weights)
    return upstream.active < cap


class Exchange:
    """The relay machine of one client connection (see the module docstring)."""

    __slots__ = (
        "buf",
        "cands",
        "client_keep",
        "eof",
        "head",
        "head_started",
        "ip",
        "key",
        "local_handler",
        "out_head",
        "pending",
        "pending_bytes",
        "pipelining",
        "port",
        "reader",
        "req",
        "req_framer",
        "req_left",
        "resp",
        "resp_buf",
        "resp_framer",
        "resp_keep",
        "resp_left",
        "resp_length",
        "resp_status",
        "reused",
        "route",
        "seq",
        "server",
        "t0",
        "tried",
        "tunnel_down",
        "tunnel_up",
        "upstream",
        "xff",
    )

    def __init__(self, server: ProxyServer, port: Port, ip: bytes, xff: bytes) -> None:
        # The connection's part: set once, or kept across exchanges.
        self.server = server
        self.port = port
        self.ip = ip
        self.xff = xff
        self.req = IDLE
        #: Bytes read ahead of the exchange in progress: a partial head, pipelined requests.
        self.buf = b""
        #: The client half-closed: nothing comes after `buf` (h11's EOF rule).
        self.eof = False
        #: A head has begun arriving since the last exchange (its header timeout runs).
        self.head_started = True
        #: Counts exchanges: a connect or an admin handler reports with the seq it began at,
        #: and is ignored if its exchange is over.
        self.seq = 0
        #: `_next_request` is reading pipelined requests further up the stack (see there).
        self.pipelining = False
        # The exchange's part (reset by `_reset`).
        self.head: RequestHead | None = None
        self.route: Route[Upstream] | None = None
        self.key = b""
        self.cands: Iterator[int] | None = None
        self.tried: set[Upstream] | None = None
        self.upstream: Upstream | None = None
        self.reader: ResponseReader | None = None  # the replica connection's, when attached
        self.reused = False  # that connection came from the pool
        self.out_head = b""
        self.pending: list[bytes] | None = None
        self.pending_bytes = 0
        self.req_left = 0
        self.req_framer: RequestChunks | None = None
        self.local_handler: LocalHandler | None = None
        # When the exchange was dispatched. The monotonic clock, not loop.time(): uvloop's
        # loop time ticks in whole milliseconds, too coarse for a fast replica.
        self.t0 = 0.0
        self.resp = RESP_NONE
        self.resp_status = 0
        self.resp_length = 0
        self.resp_buf = b""
        self.resp_left = 0
        self.resp_framer: ChunkedFramer | None = None
        self.resp_keep = False
        self.client_keep = False
        # A tunnel's bytes so far: client to replica, replica to client (for its log line).
        self.tunnel_up = 0
        self.tunnel_down = 0

    def state_name(self) -> str:
        """Both cursors, for logs and test messages."""
        return f"{_REQ_NAMES[self.req]}/{_RESP_NAMES[self.resp]}"

    # ------------------------------------------------------------------ client events
    def client_data(self, data: bytes) -> None:
        req = self.req
        if req == IDLE:
            if self.buf:
                data = self.buf + data
                self.buf = b""
            self._read_head(data)
        elif req == REQ_BODY:
            self._request_body(data)
        elif req == REQ_DONE:
            self.buf += data
            if len(self.buf) > self.server.high_water:
                self.port.pause(P_PIPELINE)
        elif req == REQ_LOCAL:
            # Body bytes of the admin request, or requests pipelined behind it: kept in
            # order, answered after it (see _local_body).
            self.buf += data
            self._local_body()
        elif req == REQ_TUNNEL:
            n = len(data)
            self.tunnel_up += n
            self.server.tunnel_bytes_up += n
            self.port.to_replica(data)
            self.port.deadline = monotonic() + self.server.tunnel_timeout

    def client_eof(self) -> bool:
        """The client half-closed. RFC 9112 §9.6: a client may half-close after its requests
        (nc -N, HTTP/1.0 clients), so EOF means "nothing after what is buffered" (h11's
        rule): every request it completed is answered in order, then the connection closes.
        Returns whether the connection stays open for that (asyncio's eof_received).
        A tunnel ends: its replica connection is closed once what was sent to it has left."""
        self.eof = True
        if self.req == REQ_TUNNEL:
            self._end_tunnel(TUNNEL_CLIENT)
        return self.req == REQ_DONE

    def client_lost(self) -> None:
        """The client connection is gone (fastlb closed it, or the client did)."""
        if self.req == REQ_TUNNEL:
            self._end_tunnel(TUNNEL_CLIENT)
        if self.req != CLOSED and self.req != IDLE and self.head is not None:
            # The client went away with its exchange unfinished (fastlb had not closed).
            self.req = CLOSED
            self._finish(CLIENT_ABORT, "")
        self.req = CLOSED
        self._drop_replica()

    def shutdown(self) -> bool:
        """fastlb is stopping (`server.draining` is set): an idle connection with nothing
        buffered closes now (True); a busy one closes after its current response."""
        if self.req == IDLE and not self.buf:
            self._close()
            return True
        return self.req == CLOSED

    def terminate(self) -> bool:
        """The shutdown grace is over and this connection is still open: a tunnel ends here
        (True: closed); for anything else the shell closes the transport (False)."""
        if self.req == REQ_TUNNEL:
            self._end_tunnel(TUNNEL_SHUTDOWN)
            return True
        return False

    def deadline_passed(self) -> None:
        """The sweep found `port.deadline` past."""
        req = self.req
        if req == REQ_TUNNEL:
            self._end_tunnel(TUNNEL_IDLE)  # no byte either way for tunnel_timeout
        elif req == IDLE:
            if self.buf:
                self._finish(TIMEOUT, "request headers not received in time")
            else:
                self._close()  # an idle keep-alive connection: close quietly
        elif req == REQ_LOCAL:
            self._finish(TIMEOUT, "request body not received in time")
        elif self.resp == RESP_CONNECTING and req == REQ_BODY:
            self._finish(BODY_STALLED, "request body stalled")
        elif self.resp == RESP_CONNECTING or self.resp == RESP_HEAD:  # nothing of it yet
            timeout = self.server.backend_timeout
            self._finish(HEAD_TIMEOUT, f"replica did not answer within {timeout:g} s")
        elif req != CLOSED:
            self._finish(RESPONSE_STALLED, "response stalled")

    # ------------------------------------------------------------------ replica events
    def replica_data(self, data: bytes) -> None:
        resp = self.resp
        if resp == RESP_LENGTH:  # the common case, kept first and flat
            left = self.resp_left
            n = len(data)
            if n < left:
                self.resp_left = left - n
                self.port.to_client(data)
                return
            if n > left:
                data = data[:left]  # bytes past the response: the connection is out of step
            self.port.to_client(data)
            self._done(self.resp_keep and n == left, self.client_keep)
            return
        if resp == RESP_HEAD:
            if self.resp_buf:
                data = self.resp_buf + data
                self.resp_buf = b""
            self._response_start(data)
            return
        if resp == RESP_TUNNEL:
            n = len(data)
            self.tunnel_down += n
            self.server.tunnel_bytes_down += n
            self.port.to_client(data)
            self.port.deadline = monotonic() + self.server.tunnel_timeout
            return
        self._response_body(data, 0, None)

    def awaits(self, seq: int) -> bool:
        """Whether the exchange begun at `seq` still waits for the connection being opened
        for it; if not, the shell returns that connection to its pool."""
        return seq == self.seq and self.resp == RESP_CONNECTING and self.req != CLOSED

    def replica_connected(self, reader: ResponseReader) -> None:
        """The connection the exchange waited for is open (`awaits` said so) and attached:
        the request goes out."""
        self._attached(reader, False)
        if self.port.pauses:
            self.port.resume(P_PENDING)

    def connect_failed(self, seq: int, own_limit: bool) -> None:
        """Opening a connection for the exchange begun at `seq` failed (refused, timed out,
        or closed by the replica before it could be used); `own_limit`: for want of fastlb's
        own descriptors or buffers, where any replica would fail alike and this one did
        nothing wrong."""
        if not self.awaits(seq):
            return
        if own_limit:
            self._replica_failed(
                OWN_LIMIT,
                "fastlb is out of file descriptors (or socket buffers) and cannot open a "
                "connection to a replica; raise its limit (ulimit -n)",
            )
        else:
            self._replica_failed(CONNECT_FAILED, "")

    def replica_lost(self) -> None:
        """The replica closed the connection the exchange holds."""
        self.reader = None
        if self.req == CLOSED:
            return
        resp = self.resp
        if resp == RESP_CLOSE:  # a close-delimited body ends here
            self._done(False, self.client_keep)
        elif resp == RESP_HEAD:  # nothing of the response went out yet
            head = self.head
            upstream = self.upstream
            assert head is not None and upstream is not None
            retryable = (
                not self.resp_buf
                and head.length == 0
                and self.req == REQ_DONE
                and head.method in IDEMPOTENT
            )
            if not retryable:
                self._replica_failed(RESET, "replica closed the connection before answering")
            elif self.reused and upstream.refused_until <= monotonic():
                # A pooled connection the replica had closed while idle: nothing of the
                # response arrived, the request has no body, so it is safe to send again.
                self._replica_failed(STALE_REUSED, "")
            else:
                # A fresh connection died unanswered, or a pooled one of a replica that now
                # refuses connections (it died with requests in flight, and one of them found
                # nothing listening any more): the replica is dying or gone. Nothing of the
                # response arrived, so the request goes to the next candidate.
                self._replica_failed(RESET_RETRY, "")
        elif resp == RESP_TUNNEL:
            self._end_tunnel(TUNNEL_REPLICA)
        elif resp != RESP_NONE:
            self._finish(CUT, "replica closed the connection mid-response")

    def local_done(self, seq: int, response: bytes) -> None:
        """The admin handler of the exchange begun at `seq` answered `response`."""
        if seq != self.seq or self.resp != RESP_LOCAL or self.req == CLOSED:
            return
        head = self.head
        if head is not None and head.method == b"HEAD":
            # The head alone, Content-Length kept: a body would be read as the next response.
            response = response[: response.find(b"\r\n\r\n") + 4]
        if self.server.access_log is not None:
            body = len(response) - response.find(b"\r\n\r\n") - 4
            self._log_access(b"-", int(response[9:12]), body, OK)
        self.port.to_client(response)
        if self.port.traced:
            self.port.ended(OK)
        if self._can_keep():
            self._reset()
            self._next_request(monotonic())
        else:
            self._close()

    def local_failed(self, seq: int, cancelled: bool, message: str) -> None:
        """The admin handler of the exchange begun at `seq` raised (or was cancelled)."""
        if seq != self.seq or self.resp != RESP_LOCAL or self.req == CLOSED:
            return
        self._finish(LOCAL_CANCELLED if cancelled else LOCAL_FAILED, message)

    # -------------------------------------------------------------- the request side
    def _read_head(self, data: bytes) -> None:
        """Data that starts a request head; dispatch the request once the head is whole.

        This and `_response_start` are the per-request path: locals over attributes, the
        common case first, no call that the common case does not need."""
        server = self.server
        end = data.find(b"\r\n\r\n")
        if end <= 0:
            if data.startswith(b"\r\n"):  # RFC 9112 §2.2: ignore empty lines before a request
                while data.startswith(b"\r\n"):  # CRLFs only: a bare LF is refused below
                    data = data[2:]
                if data:
                    self._read_head(data)
                return
            if len(data) > server.max_header_bytes:
                self._refuse(431, f"request headers over {server.max_header_bytes} bytes")
                return
            try:
                # Refused at once what can never become a valid head (a bare LF or CR, a bad
                # request line, HTTP/0.9), not after the header timeout. Only a head that
                # spans reads pays for this.
                check_partial(data)
            except HttpError as exc:
                self._refuse(exc.status, exc.message)
                return
            self.buf = data
            if not self.head_started:
                self.head_started = True
                self.port.deadline = monotonic() + server.header_timeout
            return
        end += 4
        if end > server.max_header_bytes:
            self._refuse(431, f"request headers over {server.max_header_bytes} bytes")
            return
        try:
            head = server.parser.parse(data[:end] if end < len(data) else data)
        except HttpError as exc:
            if data.startswith(b"\r\n"):
                # Empty lines before the request line (RFC 9112 §2.2: ignored): the parsers
                # and the policy see the head from its request line.
                while data.startswith(b"\r\n"):
                    data = data[2:]
                self._read_head(data)
                return
            self._refuse(exc.status, exc.message)
            return
        rest = data[end:] if end < len(data) else b""
        server.requests += 1
        self.head = head
        self.head_started = False
        self.seq = seq = self.seq + 1
        self.t0 = t0 = monotonic()
        path = head.target
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
        local = server.local
        if local is not None:
            handler = local.get(path)
            if handler is not None:
                self._local(handler, head, rest)
                return
            if not server.forward:
                self._answer(NOT_ADMIN, f"'{path.decode('latin-1')}' is not an admin route", rest)
                return
        paths = server.paths
        if paths is not None and path not in paths:
            self._answer(BAD_PATH, unknown_path_message(path), rest)
            return
        length = head.length
        relayed: bytes | None = None
        if length == 0:
            self.req = REQ_DONE
            # Kept before the dispatch: an exchange answered at once (no replica could take
            # it) goes on to the requests pipelined after it.
            self.buf = rest
        else:
            self.req = REQ_BODY
            if length == CHUNKED:
                self.req_framer = framer = RequestChunks()
                # Read the body that came with the head before a byte of the request leaves:
                # bad framing there is refused with nothing forwarded.
                try:
                    relayed = framer.relay(rest)
                except HttpError as exc:
                    self._refuse(400, exc.message)
                    return
            else:
                self.req_left = length
        route = server.route
        if route is None:
            self._finish(NO_ROUTE, "no replica is available to serve the request")
            return
        self.route = route
        self.key = key = server.key_fn(head, self.ip)
        self.out_head = request_head_out(head, self.ip, server.forwarded, self.xff)
        self.port.deadline = t0 + server.backend_timeout
        upstream = route.upstreams[route.table.lookup(key)]
        factor = server.balance_factor
        if (
            upstream.up
            and (upstream.refused_until <= t0 or len(route.upstreams) == 1)
            and (factor == 0.0 or below_cap(upstream, route.upstreams, factor))
        ):
            # _open(upstream, True), inlined: this is the path of nearly every request.
            upstream.active += 1
            upstream.requests += 1
            self.upstream = upstream
            port = self.port
            reader = port.open_replica(upstream, True)
            if reader is None:
                self.resp = RESP_CONNECTING
            else:  # _attached, inlined: no body is pending yet
                self.reader = reader
                self.reused = True
                self.resp = RESP_HEAD
                port.to_replica(self.out_head)
        else:
            # Down by its heartbeats, or it refused a connection moments ago (it died, and the
            # controller does not know yet), or at its bounded load: straight to the next
            # candidate, never to a closed port.
            self._next_candidate(False, upstream)
        if rest and self.seq == seq:  # (not if it ended already: no replica could take it)
            if self.req == REQ_BODY:
                self._request_body(rest, relayed)
            elif self.req == REQ_DONE and len(rest) > server.high_water:
                self.port.pause(P_PIPELINE)

    def _request_body(self, data: bytes, relayed: bytes | None = None) -> None:
        """Forward body bytes of the request. A chunked body goes re-encoded, each line
        validated first (RequestChunks); `relayed` is what `_read_head` already made of
        `data` that way."""
        framer = self.req_framer
        rest = b""
        if framer is None:
            left = self.req_left
            if len(data) > left:
                data, rest = data[:left], data[left:]
            self.req_left = left - len(data)
            done = self.req_left == 0
        else:
            if relayed is None:
                try:
                    relayed = framer.relay(data)
                except HttpError as exc:
                    # RFC 9112 §7.1 framing error: 400 if nothing of the response went out,
                    # else only the close; the replica connection that got part of the
                    # body is closed either way (never reused).
                    self._refuse(400, exc.message)
                    return
            done = framer.done
            if done and framer.end < len(data):
                rest = data[framer.end :]
            data = relayed
        if not data:
            pass  # a chunk line held back until its end arrives
        elif self.reader is not None:
            self.port.to_replica(data)
        else:  # a connection is being opened: the bytes wait for it
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > self.server.high_water:
                self.port.pause(P_PENDING)
        if done:
            self.req_framer = None
            self.req = REQ_DONE
            if rest:
                self.buf = rest
                if len(rest) > self.server.high_water:
                    self.port.pause(P_PIPELINE)

    # ------------------------------------------------------------ choosing a replica
    def _open(self, upstream: Upstream, pooled: bool) -> None:
        """Put the exchange on `upstream` (each upstream counts its exchanges in flight, which
        draining waits on) and get it a connection there."""
        old = self.upstream
        if old is not None:
            old.active -= 1
        self.upstream = upstream
        upstream.active += 1
        upstream.requests += 1
        reader = self.port.open_replica(upstream, pooled)
        if reader is None:
            self.resp = RESP_CONNECTING
            self.reader = None
        else:
            self._attached(reader, True)

    def _attached(self, reader: ResponseReader, reused: bool) -> None:
        self.reader = reader
        self.reused = reused
        self.resp = RESP_HEAD
        pending = self.pending
        if pending:
            self.pending = None
            self.pending_bytes = 0
            self.port.to_replica(b"".join([self.out_head, *pending]))
        else:
            # out_head stays until the response starts: a stale pooled connection resends it.
            self.port.to_replica(self.out_head)

    def _next_candidate(self, failed: bool = True, passed: Upstream | None = None) -> None:
        """The chosen replica refused, reset or timed out before a byte of its answer came
        (`failed`), or is passed over because it refused a connection moments ago (not
        `failed`): send the request to the next candidate in the table's failover order.

        A candidate that refused a connection within REFUSED_HOLD is passed over while others
        remain: between a replica's death and the table swap, each request keyed to it would
        otherwise find the same closed port. The next candidate's pooled connections are used
        before a new one is opened: failover sends a replica's whole share elsewhere at once,
        and opening a connection per request would multiply the connects by the load.
        `passed`: the replica passed over at dispatch (the exchange is on none yet).

        Candidates come from the table in place now, not the one the request was dispatched
        by: a request can outlive its table (it waited on a replica that then died), and by
        then that table may list only replicas that are gone, replaced by new ones under the
        same names. What was tried is remembered across tables (by upstream: a replacement is
        a new one)."""
        upstream = self.upstream if passed is None else passed
        assert upstream is not None
        route = self.route
        current = self.server.route
        if current is not None and current is not route:
            self.route = route = current
            self.cands = None
        assert route is not None
        if failed:
            upstream.failures += 1
        if self.cands is None:
            self.cands = route.table.candidates(self.key)
        tried = self.tried
        if tried is None:
            self.tried = tried = set()
        tried.add(upstream)
        now = monotonic()
        refused: Upstream | None = None
        factor = self.server.balance_factor
        full: Upstream | None = None
        if factor != 0.0 and not failed and upstream.up and upstream.refused_until <= now:
            full = upstream  # passed over at dispatch for its load: the fallback if all are
        for index in self.cands:
            candidate = route.upstreams[index]
            if candidate in tried:
                continue
            if not candidate.up:  # down by its heartbeats: never tried, not even last
                tried.add(candidate)
                continue
            if candidate.refused_until > now:
                tried.add(candidate)
                if refused is None:
                    refused = candidate  # the last resort, if every other one fails too
                continue
            if factor != 0.0 and not below_cap(candidate, route.upstreams, factor):
                tried.add(candidate)
                if full is None:
                    full = candidate
                continue
            if full is not None:
                self.server.over_cap += 1  # the key's replica (or a better one) was full
            self._fail_over(candidate, full is None)
            return
        if full is not None:
            self._fail_over(full, False)
            return
        if refused is not None:
            self._fail_over(refused)
            return
        self._finish(NO_REPLICA, "no replica is available to serve the request")

    def _fail_over(self, upstream: Upstream, retry: bool = True) -> None:
        """Send the request to `upstream`: on a pooled connection if one is idle and the
        request may be sent again should that one turn out stale (idempotent, no body: see
        replica_lost); else on a new connection, so that a failover never costs a 502.
        `retry`: counted as a retry (not when the first choice was only at its bounded load)."""
        if retry:
            self.server.retries += 1
        head = self.head
        pooled = head is not None and head.length == 0 and head.method in IDEMPOTENT
        self._open(upstream, pooled)

    def _replica_failed(self, outcome: int, message: str) -> None:
        """A failure before any byte of the response: the table says whether the request is
        sent again (and where), whether the replica is suspected, or how the exchange ends."""
        upstream = self.upstream
        assert upstream is not None
        if _SUSPECT[outcome]:
            self.server.suspect(upstream)
        retry = _RETRY[outcome]
        if retry == _SAME:
            upstream.retries += 1
            self.server.retries += 1
            self._open(upstream, False)
        elif retry == _NEXT:
            self._next_candidate()
        else:
            self._finish(outcome, message)

    # ------------------------------------------------------------ the response side
    def _response_start(self, data: bytes) -> None:
        """Data that holds the end of a response head (and maybe body bytes after it)."""
        head = self.head
        upstream = self.upstream
        reader = self.reader
        assert head is not None and upstream is not None and reader is not None
        server = self.server
        client_keep = head.keep_alive and not (self.eof and not self.buf) and not server.draining
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                if len(data) - start > MAX_RESPONSE_HEAD:
                    self._finish(BAD_HEAD, "replica sent an oversize response head")
                else:
                    self.resp_buf = data[start:]
                return
            end += 4
            if start:  # an interim 1xx went out before: read the next head in place
                data, end = data[start:], end - start
            try:
                status, length, keep, out = reader.read(
                    data, end, head.method == b"HEAD", client_keep, head.http11
                )
            except HttpError as exc:
                self._finish(BAD_HEAD, exc.message)
                return
            if status >= 200:
                break
            if status == 101:
                self._switch(data, end, out)
                return
            # An interim 1xx response: relay it, the final response follows.
            self.port.to_client(data[:end] if out is None else out)
            start = end
        upstream.status_counts[status] += 1
        client_keep = client_keep and length != UNTIL_CLOSE
        if length >= 0:
            if end + length == len(data):
                # The whole response in one read, the common case: relay it and finish.
                self.port.to_client(data if out is None else out + data[end:])
                if server.access_log is not None:
                    self.resp_status = status
                    self.resp_length = length
                self._done(keep, client_keep)
                return
            self.resp = RESP_LENGTH if length else RESP_DONE
            self.resp_left = length
        elif length == CHUNKED:
            self.resp = RESP_CHUNKED
            self.resp_framer = ChunkedFramer()
        else:
            self.resp = RESP_CLOSE
        self.resp_keep = keep
        self.client_keep = client_keep
        self.port.deadline = 0.0
        self.resp_status = status
        self.resp_length = length
        self._response_body(data, end, out)

    def _response_body(self, data: bytes, start: int, head_out: bytes | None) -> None:
        """Relay `data[start:]` as body bytes; with `start` > 0, `data[:start]` is the head,
        sent as received when `head_out` is None, or replaced by `head_out`."""
        resp = self.resp
        end = len(data)
        done = False
        if resp == RESP_LENGTH:
            if end - start >= self.resp_left:
                end = start + self.resp_left
                done = True
            self.resp_left -= end - start
        elif resp == RESP_CHUNKED:
            assert self.resp_framer is not None
            try:
                stop = self.resp_framer.feed(data, start)
            except HttpError as exc:
                message = f"replica sent a bad chunked body: {exc.message}"
                if start:
                    # The head came in this same read and has not gone out: the client can
                    # still be told (502) rather than cut, and the replica's status it will
                    # never see is not counted as served.
                    upstream = self.upstream
                    if upstream is not None:
                        upstream.status_counts[self.resp_status] -= 1
                    self.resp = RESP_HEAD
                    self._finish(BAD_CHUNK, message, 502)
                else:
                    self._finish(BAD_CHUNK, message)
                return
            if stop >= 0:
                end, done = stop, True
        elif resp == RESP_DONE:  # a response without a body
            end, done = start, True
        elif resp != RESP_CLOSE:
            return  # no response is being relayed (bytes after one ended: dropped)
        if end < len(data):
            self.resp_keep = False  # bytes past the response: the connection is out of step
        port = self.port
        if head_out is None:
            if end == len(data):
                port.to_client(data)  # head and body as received: no copy
            elif end:
                port.to_client(data[:end])
        elif end - start < 65536:
            port.to_client(head_out + data[start:end])  # one write, a small copy
        else:
            port.to_client(head_out)
            port.to_client(data[start:end])
        if done:
            self._done(self.resp_keep, self.client_keep)

    def _done(self, replica_keep: bool, client_keep: bool) -> None:
        """The response is relayed whole. The exchange is over (OK) when the request went out
        whole too: the replica connection goes back to its pool if `replica_keep`, the client
        connection takes the next request if `client_keep`. A response that ended while the
        request body was still coming (an early answer) closes both (h11's rule)."""
        request_done = self.req == REQ_DONE
        upstream = self.upstream
        now = monotonic()
        if upstream is not None:
            # The duration histogram: a short scan (see Upstream.duration_scan), two adds.
            elapsed = now - self.t0
            upstream.duration_sum += elapsed
            scan = upstream.duration_scan
            bucket = 0
            while elapsed > scan[bucket]:
                bucket += 1
            upstream.duration_counts[bucket] += 1
            if self.server.access_log is not None:
                self._log_access(upstream.name.encode(), self.resp_status, self.resp_length, OK)
            upstream.active -= 1  # the exchange leaves the in-flight count
            self.upstream = None
        self.reader = None
        port = self.port
        port.release_replica(replica_keep and request_done)
        if port.traced:
            port.ended(OK)
        if not (client_keep and request_done) or (self.eof and not self.buf) or (
            self.server.draining
        ):
            self._close()
            return
        # _reset, inlined for the path of nearly every request: what a relayed exchange can
        # have set (no admin handler, no body framer left, no response bytes held).
        self.req = IDLE
        self.resp = RESP_NONE
        self.head = None
        self.route = None
        if self.cands is not None:
            self.cands = None
            self.tried = None
        self.resp_framer = None
        self._next_request(now)

    # ------------------------------------------------------------------ tunnels
    def _switch(self, data: bytes, end: int, out: bytes | None) -> None:
        """The replica answered 101 (`data[:end]`, relayed as `out`): if the request asked for
        the WebSocket upgrade, the connection becomes a tunnel (REQ_TUNNEL/RESP_TUNNEL) that
        relays bytes raw both ways until either side closes or it idles for tunnel_timeout;
        any other 101 is a replica out of step (502, BAD_HEAD). What came after the head in
        this read is the replica's first tunnel bytes; what the client sent after its request
        head (held in `buf`) its first ones.

        Backpressure needs nothing new: the shell already pauses reading the replica while the
        client's socket is full (ClientConnection.pause_writing) and reading the client while
        the replica's is (P_BACKEND), in a tunnel as in any exchange. The exchange stays in
        its upstream's in-flight count until the tunnel ends (a drain waits for it, up to
        drain_timeout); its duration is counted at the switch, so hour-long tunnels do not
        fill the latency histogram's last bucket."""
        head = self.head
        upstream = self.upstream
        assert head is not None and upstream is not None
        if not head.upgrade:
            self._finish(BAD_HEAD, "replica switched protocols (101) unasked")
            return
        server = self.server
        upstream.status_counts[101] += 1
        elapsed = monotonic() - self.t0
        upstream.duration_sum += elapsed
        scan = upstream.duration_scan
        bucket = 0
        while elapsed > scan[bucket]:
            bucket += 1
        upstream.duration_counts[bucket] += 1
        server.tunnels += 1
        server.tunnels_open += 1
        self.req = REQ_TUNNEL
        self.resp = RESP_TUNNEL
        self.resp_status = 101
        self.tunnel_up = self.tunnel_down = 0
        port = self.port
        port.deadline = monotonic() + server.tunnel_timeout
        port.to_client(data[:end] if out is None else out)
        if end < len(data):
            self.tunnel_down = n = len(data) - end
            server.tunnel_bytes_down += n
            port.to_client(data[end:])
        buf = self.buf
        if buf:
            self.buf = b""
            self.tunnel_up = n = len(buf)
            server.tunnel_bytes_up += n
            port.to_replica(buf)
        if port.pauses & P_PIPELINE:
            port.resume(P_PIPELINE)  # those bytes are the tunnel's now, and have gone on
        if self.eof:
            self._end_tunnel(TUNNEL_CLIENT)  # it half-closed while the switch was coming

    def _end_tunnel(self, outcome: int) -> None:
        """A tunnel ends (a TUNNEL_* row of the table): counted, logged (status 101, the bytes
        the client got, the whole duration), its replica connection closed and never pooled,
        the client connection closed, never reused; each after what was sent to it has left
        (the outbox is flushed first, and a transport's close sends its buffer)."""
        server = self.server
        server.tunnels_open -= 1
        upstream = self.upstream
        if server.access_log is not None:
            replica = upstream.name.encode() if upstream is not None else b"-"
            self._log_access(replica, 101, self.tunnel_down, outcome)
        self._drop_replica()
        if self.port.traced:
            self.port.ended(outcome)
        self._close()

    def _next_request(self, now: float) -> None:
        """The exchange is over and the connection stays: read what the client sent since."""
        port = self.port
        port.deadline = now + self.server.idle_timeout
        if port.pauses:
            # Every pause reason belongs to the exchange that just ended: the pipelined bytes
            # are being read now, and P_BACKEND / P_PENDING referred to a replica connection
            # it no longer holds (its drain would never reach this client again).
            port.resume(P_PIPELINE | P_BACKEND | P_PENDING)
        rest = self.buf
        if rest:  # (nothing pipelined, the common case: no loop, no try)
            if self.pipelining:
                # An own answer to a pipelined request, given while the loop below reads it:
                # that loop reads the next one. Calling `_read_head` from here would recurse
                # once per pipelined request, and 20,000 of them behind own answers (404s,
                # 503s) overflow the stack (RecursionError from source, a segfault compiled).
                return
            self.pipelining = True
            try:
                while rest:
                    self.buf = b""
                    seq = self.seq
                    self._read_head(rest)
                    if self.seq == seq or self.req != IDLE:
                        # A partial head (kept in buf), a refusal (closed), or an exchange
                        # that goes on: nothing more to read now.
                        break
                    rest = self.buf
            finally:
                self.pipelining = False
        if self.eof and self.req == IDLE:
            self._close()  # half-closed, and what it sent last is no whole request head

    def _reset(self) -> None:
        """The exchange's state back to none, in one place (the connection's stays)."""
        self.req = IDLE
        self.resp = RESP_NONE
        self.head = None
        self.route = None
        if self.cands is not None:
            self.cands = None
            self.tried = None
        self.upstream = None
        self.reader = None
        self.req_framer = None
        self.resp_framer = None
        self.local_handler = None
        if self.resp_buf:
            self.resp_buf = b""

    # -------------------------------------------------------------------- endings
    def _refuse(self, status: int, message: str) -> None:
        """The client sent something fastlb will not forward: `status`, close, nothing
        forwarded (or only the close, if a response head already went out)."""
        self._finish(REFUSED, message, status)

    def _answer(self, outcome: int, message: str, rest: bytes) -> None:
        """Answer a request fastlb will not forward although it is not malformed (an own
        answer: keep-alive when the request has no body left unread)."""
        head = self.head
        assert head is not None
        if head.length != 0:
            self.req = REQ_BODY  # a body fastlb will not read: the connection must close
        else:
            self.req = REQ_DONE
            self.buf = rest
        self._finish(outcome, message)

    def _finish(self, outcome: int, message: str, status: int = 0) -> None:
        """End the exchange other than cleanly, as the outcome table says: count it, log it,
        drop its replica connection, answer the client (or cut), then keep or close."""
        server = self.server
        if not status:
            status = _STATUS[outcome]
        resp = self.resp
        if resp in (RESP_LENGTH, RESP_CHUNKED, RESP_CLOSE):
            sent = self.resp_status  # a response head went out: the client can only see a cut
            status = 0
        else:
            sent = status
        counter = _COUNTER[outcome]
        upstream = self.upstream
        if counter == _C_FAILURES:
            if upstream is not None:
                upstream.failures += 1
                if status:
                    upstream.status_counts[status] += 1
        elif counter == _C_REFUSED:
            server.refused += 1
        elif counter != _C_NONE:
            if counter == _C_REJECTED:
                server.rejected += 1
            codes = server.own_responses
            codes[status] = codes.get(status, 0) + 1
        response = b""
        if status:
            keep = _KEEP[outcome] and self._can_keep()
            response = error_response(status, message, close=not keep)
        else:
            keep = False
            if message:
                log.debug("cut the exchange with %s: %s", self.ip.decode("latin-1"), message)
        if server.access_log is not None:
            replica = b"-"
            if upstream is not None and counter != _C_OWN and counter != _C_REJECTED:
                replica = upstream.name.encode()
            body = len(response) - response.find(b"\r\n\r\n") - 4 if response else -1
            self._log_access(replica, sent, body, outcome)
        self._drop_replica()
        if self.port.traced:
            self.port.ended(outcome)
        if self.req == CLOSED:
            return
        if response:
            self.port.to_client(response)
        if keep:
            self._reset()
            self._next_request(monotonic())
        else:
            self._close()

    def _can_keep(self) -> bool:
        """Whether the connection can take another request once this answer is out."""
        head = self.head
        return (
            self.req == REQ_DONE
            and head is not None
            and head.keep_alive
            and not (self.eof and not self.buf)
            and not self.server.draining
        )

    def _drop_replica(self) -> None:
        """The exchange ends without a clean response: its replica connection cannot be
        reused (part of a request or response is still in it), and it leaves the in-flight
        count."""
        if self.reader is not None or self.resp == RESP_CONNECTING:
            self.reader = None
            self.port.release_replica(False)
        self.resp = RESP_NONE
        self.pending = None
        self.pending_bytes = 0
        upstream = self.upstream
        if upstream is not None:
            upstream.active -= 1
            self.upstream = None

    def _close(self) -> None:
        if self.req != CLOSED:
            self.req = CLOSED
            self.port.deadline = 0.0
            self.port.close()

    def _log_access(self, replica: bytes, status: int, length: int, outcome: int) -> None:
        """One access-log entry: a tuple, formatted later by the log's batch writer
        (fastlb/observe/access.py); `length` is the body's (< 0: chunked, close-delimited or
        unknown), `status` 0: none was sent."""
        head = self.head
        access = self.server.access_log
        assert access is not None
        now = monotonic()
        elapsed = now - self.t0 if head is not None else 0.0
        access.add((now, self.ip, head, replica, status, length, elapsed, _CODE[outcome]))

    # ------------------------------------------------------------ local (admin) routes
    def _local(self, handler: LocalHandler, head: RequestHead, rest: bytes) -> None:
        if head.length == CHUNKED:
            self._refuse(411, "admin requests need a Content-Length body")
            return
        if head.length > MAX_LOCAL_BODY:
            self._refuse(413, f"admin request body over {MAX_LOCAL_BODY} bytes")
            return
        self.req = REQ_LOCAL
        self.resp = RESP_LOCAL
        self.local_handler = handler
        self.buf = rest
        self.port.deadline = monotonic() + self.server.header_timeout
        self._local_body()

    def _local_body(self) -> None:
        """The admin request's body, once whole, goes to its handler. Bytes arriving while
        its answer is being made are the next requests: kept in `buf` (reading paused when
        they grow), read after the answer."""
        head = self.head
        handler = self.local_handler
        if head is None or handler is None:
            return
        if len(self.buf) < head.length:
            return
        body, self.buf = self.buf[: head.length], self.buf[head.length :]
        self.local_handler = None
        self.req = REQ_DONE
        self.port.deadline = 0.0
        if len(self.buf) > self.server.high_water:
            self.port.pause(P_PIPELINE)
        self.port.run_local(handler, LocalRequest(head, body, self.ip))
