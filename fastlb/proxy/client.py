"""One client connection: read a request head, pick a replica, relay both ways, repeat.

The connection handles one exchange at a time; pipelined requests wait in `buf` (reading pauses
when it grows) and are answered in order. Request and response bodies are relayed as the bytes
arrived, never re-serialised: the head parser sees only the head, and `framing` finds where a
body ends. Flow control follows uvicorn's model: a transport whose write buffer passes its high
water mark pauses the reading side that feeds it, both directions, so a slow reader makes a fast
writer wait instead of making fastlb buffer.

Timeouts are not timer objects: each connection keeps one `deadline` float that the server's
single periodic sweep compares with the clock, so a request costs no timer allocation.

The per-request path (`_read_head`, `_response_start`, `_response_done`) is written for the
few dozen steps it takes per request: the common case first and inline, locals over
attributes, the transport's write bound once. `make compile` builds this module with mypyc
(fastlb/_native.py), which is why the protocols are plain classes, not asyncio.Protocol
subclasses: uvloop calls their methods by name, and mypyc can then compile them as native
classes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from time import monotonic
from typing import TYPE_CHECKING, Any, Final, cast

from fastlb.errors import own_resource_error
from fastlb.http.accept import check_partial
from fastlb.http.errors import HttpError
from fastlb.http.framing import ChunkedFramer, RequestChunks
from fastlb.http.head import CHUNKED, UNTIL_CLOSE, RequestHead
from fastlb.http.messages import error_response, unknown_path_message
from fastlb.http.rewrite import forwarded_lines, request_head_out
from fastlb.proxy.upstream import BackendConnection, Upstream, unconnected

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastlb.proxy.server import ProxyServer
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

# Exchange states of the client side.
HEAD: Final = 0  # waiting for (the rest of) a request head
BODY: Final = 1  # relaying the request body to the replica
WAIT: Final = 2  # request fully forwarded; the response is awaited or being relayed
CLOSED: Final = 3
LOCAL: Final = 4  # reading the body of a request fastlb answers itself (admin routes)

# Response states.
R_NONE: Final = 0
R_HEAD: Final = 1
R_LENGTH: Final = 2
R_CHUNKED: Final = 3
R_CLOSE: Final = 4

# Reasons to pause reading from the client; reading resumes when none is left.
P_PIPELINE: Final = 1  # too many pipelined bytes waiting
P_BACKEND: Final = 2  # the replica's socket buffer is full (request body upload)
P_PENDING: Final = 4  # body bytes waiting for a replica connection to open

#: A replica's response head larger than this is treated as garbage.
MAX_RESPONSE_HEAD: Final = 64 * 1024
#: Admin request bodies are small JSON documents.
MAX_LOCAL_BODY: Final = 64 * 1024
#: Requests that may be sent again after a replica failed before answering (RFC 9110 9.2.2),
#: provided they carry no body.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT", b"TRACE"})


class ClientConnection:
    """One client connection: an asyncio protocol (uvloop calls these methods by name; not a
    subclass of asyncio.Protocol, so that mypyc can compile it as a native class)."""

    __slots__ = (
        "backend",
        "buf",
        "cands",
        "client_keep",
        "deadline",
        "eof",
        "head",
        "head_started",
        "ip",
        "key",
        "local_handler",
        "out",
        "out_head",
        "pauses",
        "pending",
        "pending_bytes",
        "req_framer",
        "req_left",
        "resp_buf",
        "resp_framer",
        "resp_keep",
        "resp_left",
        "resp_length",
        "resp_state",
        "resp_status",
        "route",
        "seq",
        "server",
        "state",
        "t0",
        "transport",
        "tried",
        "upstream",
        "wpaused",
        "write",
        "xff",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        #: Every write, to the client and to its replica, is queued here and made when the
        #: event loop's round ends (fastlb/proxy/outbox.py says why).
        self.out = server.outbox
        # Set on connect. `write` is the transport's bound write: the hot path queues it twice
        # per exchange, so the method is looked up once per connection, not once per write.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.write: Callable[[bytes], object] = unconnected
        self.state = HEAD
        self.buf = b""
        self.head: RequestHead | None = None
        self.head_started = False
        self.eof = False
        self.deadline = 0.0
        self.pauses = 0
        self.wpaused = False
        self.seq = 0
        self.local_handler: LocalHandler | None = None
        self.ip = b""
        self.xff = b""
        # the exchange in progress
        self.route: Route[Upstream] | None = None
        self.key = b""
        self.cands: Iterator[int] | None = None
        self.tried: set[Upstream] | None = None
        self.upstream: Upstream | None = None
        self.backend: BackendConnection | None = None
        self.out_head = b""
        self.pending: list[bytes] | None = None
        self.pending_bytes = 0
        self.req_left = 0
        self.req_framer: RequestChunks | None = None
        # When the exchange in progress was dispatched. The monotonic clock, not loop.time():
        # uvloop's loop time ticks in whole milliseconds, too coarse for a fast replica.
        self.t0 = 0.0
        # Status and body length of the response being relayed, kept for the access log.
        self.resp_status = 0
        self.resp_length = 0
        self.resp_state = R_NONE
        self.resp_buf = b""
        self.resp_left = 0
        self.resp_framer: ChunkedFramer | None = None
        self.resp_keep = False
        self.client_keep = False

    # ----------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.write = transport.write
        server = self.server
        transport.set_write_buffer_limits(server.high_water, server.low_water)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        self.ip = ip.encode("latin-1")
        self.xff = forwarded_lines(ip)
        # HAProxy's `timeout http-request`: the first head must come within header_timeout.
        self.deadline = monotonic() + server.header_timeout
        self.head_started = True
        server.client_made(self)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == HEAD:
            if self.buf:
                data = self.buf + data
                self.buf = b""
            self._read_head(data)
        elif state == BODY:
            self._request_body(data)
        elif state == WAIT:
            self.buf += data
            if len(self.buf) > self.server.high_water:
                self._pause(P_PIPELINE)
        elif state == LOCAL:
            # Body bytes of the admin request, or requests pipelined behind it: kept in
            # order, answered after it (see _local_body).
            self.buf += data
            self._local_body()

    def eof_received(self) -> bool:
        # RFC 9112 §9.6: a client may half-close after its requests (nc -N, HTTP/1.0 clients):
        # EOF means "nothing after what is buffered" (h11's rule), so every request it
        # completed is answered in order, then the connection closes (`_client_done`). That
        # holds for an admin request whose answer is being made (LOCAL, its body read whole).
        self.eof = True
        state = self.state
        return state == WAIT or (state == LOCAL and self.local_handler is None)

    def _client_done(self) -> bool:
        """Whether the client can send nothing more: it half-closed and every byte it sent
        before is consumed. Until then an EOF does not end the connection."""
        return self.eof and not self.buf

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state in (BODY, WAIT, LOCAL) and self.head is not None:
            # The client went away with its exchange unfinished (fastlb had not closed).
            self._log_end(self._sent_status(), b"client-aborted")
        self.state = CLOSED
        self.server.clients.discard(self)
        # A response not read to its end leaves that replica connection out of step.
        self._abandon_exchange()

    def pause_writing(self) -> None:
        # The client reads slower than the replica writes: stop reading the replica.
        self.wpaused = True
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        self.wpaused = False
        if self.backend is not None:
            self.backend.resume_reading()

    # --------------------------------------------------------------- called by the backend
    def backend_full(self) -> None:
        self._pause(P_BACKEND)

    def backend_drained(self) -> None:
        self._resume(P_BACKEND)

    def backend_data(self, data: bytes) -> None:
        rs = self.resp_state
        if rs == R_LENGTH:  # the common case, kept first and flat
            left = self.resp_left
            n = len(data)
            if n < left:
                self.resp_left = left - n
                self.out.send(self.write, data)
                return
            if n > left:
                data = data[:left]  # bytes past the response: the connection is out of step
            self.out.send(self.write, data)
            self._response_done(self.resp_keep and n == left, self.client_keep)
            return
        if rs == R_HEAD:
            if self.resp_buf:
                data = self.resp_buf + data
                self.resp_buf = b""
            self._response_start(data)
            return
        self._response_body(data, 0, None)

    def _response_start(self, data: bytes) -> None:
        """Data that holds the end of a response head (and maybe body bytes after it)."""
        head = self.head
        upstream = self.upstream
        backend = self.backend
        assert head is not None and upstream is not None and backend is not None
        server = self.server
        client_keep = head.keep_alive and not self._client_done() and not server.draining
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                if len(data) - start > MAX_RESPONSE_HEAD:
                    self._backend_failed(502, "replica sent an oversize response head")
                else:
                    self.resp_buf = data[start:]
                return
            end += 4
            if start:  # an interim 1xx went out before: read the next head in place
                data, end = data[start:], end - start
            try:
                status, length, keep, out = backend.reader.read(
                    data, end, head.method == b"HEAD", client_keep, head.http11
                )
            except HttpError as exc:
                self._backend_failed(502, exc.message)
                return
            if status >= 200:
                break
            # An interim 1xx response: relay it, the final response follows.
            self.out.send(self.write, data[:end] if out is None else out)
            start = end
        codes = upstream.status_counts
        codes[status] += 1
        client_keep = client_keep and length != UNTIL_CLOSE
        if length >= 0:
            if end + length == len(data):
                # The whole response in one read, the common case: relay it and finish.
                self.out.send(self.write, data if out is None else out + data[end:])
                if server.access_log is not None:
                    self.resp_status = status
                    self.resp_length = length
                self._response_done(keep, client_keep)
                return
            self.resp_state = R_LENGTH if length else R_NONE
            self.resp_left = length
        elif length == CHUNKED:
            self.resp_state = R_CHUNKED
            self.resp_framer = ChunkedFramer()
        else:
            self.resp_state = R_CLOSE
        self.resp_keep = keep
        self.client_keep = client_keep
        self.deadline = 0.0
        self.resp_status = status
        self.resp_length = length
        self._response_body(data, end, out)

    def _response_body(self, data: bytes, start: int, head_out: bytes | None) -> None:
        """Relay `data[start:]` as body bytes; with `start` > 0, `data[:start]` is the head,
        sent as received when `head_out` is None, or replaced by `head_out`."""
        rs = self.resp_state
        end = len(data)
        done = False
        if rs == R_LENGTH:
            if end - start >= self.resp_left:
                end = start + self.resp_left
                done = True
            self.resp_left -= end - start
        elif rs == R_CHUNKED:
            assert self.resp_framer is not None
            try:
                stop = self.resp_framer.feed(data, start)
            except HttpError as exc:
                self._response_cut(b"bad-chunk", f"replica sent a bad chunked body: {exc.message}")
                return
            if stop >= 0:
                end, done = stop, True
        elif rs == R_NONE:  # a response without a body
            end, done = start, True
        if end < len(data):
            self.resp_keep = False  # bytes past the response: the connection is out of step
        if head_out is None:
            if end == len(data):
                self.out.send(self.write, data)  # head and body as received: no copy
            elif end:
                self.out.send(self.write, data[:end])
        elif end - start < 65536:
            self.out.send(self.write, head_out + data[start:end])  # one syscall, a small copy
        else:
            self.out.send(self.write, head_out)
            self.out.send(self.write, data[start:end])
        if done:
            self._response_done(self.resp_keep, self.client_keep)

    def backend_lost(self, conn: BackendConnection) -> None:
        """The replica closed the connection during this exchange."""
        self.backend = None
        if self.state == CLOSED:
            return
        if self.resp_state == R_CLOSE:  # a close-delimited body ends here
            self._response_done(False, self.client_keep)
        elif self.resp_state == R_HEAD:  # nothing of the response went out yet
            head = self.head
            upstream = self.upstream
            assert head is not None and upstream is not None
            retryable = (
                not self.resp_buf
                and head.length == 0
                and self.state == WAIT
                and head.method in IDEMPOTENT
            )
            if not retryable:
                self.server.suspect(upstream)
                self._backend_failed(502, "replica closed the connection before answering")
            elif conn.reused and upstream.refused_until <= monotonic():
                # A pooled connection the replica had closed while idle: nothing of the
                # response arrived, the request has no body, so it is safe to send again.
                upstream.retries += 1
                self.server.retries += 1
                self._connect(upstream)
            else:
                # A fresh connection died unanswered, or a pooled one of a replica that now
                # refuses connections (it died with requests in flight, and one of them found
                # nothing listening any more): the replica is dying or gone. Nothing of the
                # response arrived, so the request goes to the next candidate.
                self.server.suspect(upstream)
                self._next_candidate()
        else:
            self._response_cut(b"replica-closed", "replica closed the connection mid-response")

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
                self.deadline = monotonic() + server.header_timeout
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
        self.seq += 1
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
                self._answer(404, f"'{path.decode('latin-1')}' is not an admin route", rest)
                return
        paths = server.paths
        if paths is not None and path not in paths:
            server.rejected += 1
            self._answer(400, unknown_path_message(path), rest)
            return
        length = head.length
        relayed: bytes | None = None
        if length == 0:
            self.state = WAIT
        else:
            self.state = BODY
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
            # Answered as _answer does: the pipelined requests after this one are kept.
            self._answer(503, "no replica is available to serve the request", rest)
            return
        self.route = route
        self.key = key = server.key_fn(head, self.ip)
        self.out_head = request_head_out(head, self.ip, server.forwarded, self.xff)
        self.resp_state = R_HEAD
        self.deadline = t0 + server.backend_timeout
        upstream = route.upstreams[route.table.lookup(key)]
        if upstream.up and (upstream.refused_until <= t0 or len(route.upstreams) == 1):
            backend = upstream.acquire()
            if backend is not None:
                # _use(upstream), inlined: this is the path of nearly every request.
                if self.upstream is not None:
                    self.upstream.active -= 1
                self.upstream = upstream
                upstream.active += 1
                upstream.requests += 1
                self._attach(backend)
            else:
                self._connect(upstream)
        else:
            # Down by its heartbeats, or it refused a connection moments ago (it died, and the
            # controller does not know yet): straight to the next candidate, never to a closed
            # port.
            self._next_candidate(False, upstream)
        if rest:
            if self.state == BODY:
                self._request_body(rest, relayed)
            else:
                self.buf = rest
                if len(rest) > server.high_water:
                    self._pause(P_PIPELINE)

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
                    if self.resp_state == R_HEAD:
                        self._refuse(400, exc.message)
                    else:
                        self.server.refused += 1
                        self._log_end(self._sent_status(), b"refused")
                        self._abandon_exchange()
                        self._close()
                    return
            done = framer.done
            if done and framer.end < len(data):
                rest = data[framer.end :]
            data = relayed
        backend = self.backend
        if not data:
            pass  # a chunk line held back until its end arrives
        elif backend is not None:
            self.out.send(backend.write, data)
        else:
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > self.server.high_water:
                self._pause(P_PENDING)
        if done:
            self.req_framer = None
            self.state = WAIT
            if rest:
                self.buf = rest
                if len(rest) > self.server.high_water:
                    self._pause(P_PIPELINE)

    # ------------------------------------------------------------ choosing a replica
    def _use(self, upstream: Upstream | None) -> None:
        """Make `upstream` the one this exchange is on (None: the exchange is over), keeping
        each upstream's in-flight count, which draining waits on."""
        old = self.upstream
        if old is not None:
            old.active -= 1
        self.upstream = upstream
        if upstream is not None:
            upstream.active += 1
            upstream.requests += 1

    def _connect(self, upstream: Upstream) -> None:
        self._use(upstream)
        task = self.server.loop.create_task(upstream.connect())
        seq = self.seq
        task.add_done_callback(lambda t: self._connected(t, seq))

    def _connected(self, task: asyncio.Task[BackendConnection], seq: int) -> None:
        current = seq == self.seq and self.state != CLOSED and self.resp_state == R_HEAD
        if task.cancelled() or task.exception() is not None:
            if current:
                assert self.upstream is not None
                if not task.cancelled() and own_resource_error(task.exception()):
                    # fastlb is out of descriptors (or buffers, ports): any replica would fail
                    # the same way, and this one did nothing wrong.
                    self._backend_failed(
                        503,
                        "fastlb is out of file descriptors (or socket buffers) and cannot "
                        "open a connection to a replica; raise its limit (ulimit -n)",
                    )
                    return
                self.server.suspect(self.upstream)
                self._next_candidate()
            return
        conn = task.result()
        if not current:
            conn.upstream.release(conn)  # that exchange is over; the connection is still good
            return
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            # Opened, then closed by the replica before this callback ran (it is dying):
            # nothing was sent, so it is a failed connect.
            assert self.upstream is not None
            self.server.suspect(self.upstream)
            self._next_candidate()
            return
        conn.reused = False
        self._attach(conn)
        self._resume(P_PENDING)

    def _attach(self, backend: BackendConnection) -> None:
        self.backend = backend
        backend.client = self
        if self.wpaused:
            backend.pause_reading()
        pending = self.pending
        if pending:
            self.pending = None
            self.pending_bytes = 0
            self.out.send(backend.write, b"".join([self.out_head, *pending]))
        else:
            # out_head stays until the response starts: a stale pooled connection resends it.
            self.out.send(backend.write, self.out_head)

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
            self._fail_over(candidate)
            return
        if refused is not None:
            self._fail_over(refused)
            return
        self._backend_failed(503, "no replica is available to serve the request")

    def _fail_over(self, upstream: Upstream) -> None:
        """Send the request to `upstream`: on a pooled connection if one is idle and the
        request may be sent again should that one turn out stale (idempotent, no body: see
        backend_lost); else on a new connection, so that a failover never costs a 502."""
        self.server.retries += 1
        head = self.head
        backend = None
        if head is not None and head.length == 0 and head.method in IDEMPOTENT:
            backend = upstream.acquire()
        if backend is None:
            self._connect(upstream)
        else:
            self._use(upstream)
            self._attach(backend)

    # ------------------------------------------------------------ the response side
    def _response_done(self, replica_keep: bool, client_keep: bool) -> None:
        """The response is relayed whole: the replica connection goes back to its pool if
        `replica_keep` (and the request went out whole), the client connection takes the next
        request if `client_keep`."""
        backend = self.backend
        self.backend = None
        request_done = self.state != BODY
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
                self._log_access(upstream.name, self.resp_status, self.resp_length, elapsed)
            # _use(None), inlined: the exchange leaves the in-flight count.
            upstream.active -= 1
            self.upstream = None
        if backend is not None:
            if replica_keep and request_done:
                backend.upstream.release(backend)
            else:
                backend.client = None
                backend.close()
        self.resp_state = R_NONE
        self.resp_framer = None
        if not (client_keep and request_done) or self._client_done() or self.server.draining:
            self._close()
            return
        self._next_request(self.buf, now)

    def _next_request(self, rest: bytes, now: float) -> None:
        self.state = HEAD
        self.head = None
        if self.cands is not None:
            self.cands = None
            self.tried = None
        self.buf = b""
        self.deadline = now + self.server.idle_timeout
        if self.pauses:
            # Every pause reason belongs to the exchange that just ended: the pipelined bytes
            # are being read now, and P_BACKEND / P_PENDING referred to a replica connection
            # it no longer holds (its drain would never reach this client again).
            self._resume(P_PIPELINE | P_BACKEND | P_PENDING)
        if rest:
            self._read_head(rest)
        if self.eof and self.state == HEAD:
            self._close()  # half-closed, and what it sent last is no whole request head

    # -------------------------------------------------------------------- failures
    def _refuse(self, status: int, message: str, reason: bytes = b"refused") -> None:
        """The client sent something fastlb will not forward (or too slowly: `reason`
        b"timeout"): answer, close, forward nothing."""
        self.server.refused += 1
        if self.state != CLOSED:
            self._log_end(status, reason)
        self._abandon_exchange()
        if self.state != CLOSED:
            self.out.send(self.write, error_response(status, message, close=True))
            self._close()

    def _backend_failed(self, status: int, message: str) -> None:
        """No usable response came from a replica; the client gets a spec-shaped error."""
        upstream = self.upstream
        if upstream is not None and status != 503:
            upstream.failures += 1
            upstream.status_counts[status] += 1
        else:
            # A 503 is fastlb's own answer (no replica could take the request, or fastlb
            # could not open a connection), whichever replica was tried last: it is counted
            # with fastlb's own responses, where /metrics finds it even when that replica has
            # been replaced since (its Upstream is then no member's).
            codes = self.server.own_responses
            codes[status] = codes.get(status, 0) + 1
        self._abandon_exchange()
        self.resp_state = R_NONE
        self._answer_bytes(error_response(status, message, close=not self._can_keep()))

    def _can_keep(self) -> bool:
        """Whether the connection can take another request once this answer is out."""
        head = self.head
        return (
            self.state in (WAIT, LOCAL)
            and head is not None
            and head.keep_alive
            and not self._client_done()
            and not self.server.draining
        )

    def _log_access(
        self, replica: str, status: int, length: int, elapsed: float, reason: bytes = b"-"
    ) -> None:
        """One access-log line (the format is in fastlb/observe/access.py); `length` is the
        body's (< 0: chunked, close-delimited or unknown), `status` 0: none was sent,
        `reason`: how an exchange that did not end cleanly ended, b"-" when it did."""
        head = self.head
        log = self.server.access_log
        assert log is not None
        size = b"%d" % length if length >= 0 else b"-"
        code = b"%d" % status if status else b"-"
        method, target = (head.method, head.target) if head is not None else (b"-", b"-")
        log.add(
            b"%s %s %s %s %s %s %.3f %s\n"
            % (self.ip, method, target, replica.encode(), code, size, elapsed * 1e3, reason)
        )

    def _log_end(self, status: int, reason: bytes) -> None:
        """The access-log line of an exchange that did not end cleanly (refused, cut, aborted):
        `status` is what fastlb sent the client (0: nothing yet), `reason` a short code."""
        if self.server.access_log is None:
            return
        upstream = self.upstream
        elapsed = monotonic() - self.t0 if self.head is not None else 0.0
        self._log_access("-" if upstream is None else upstream.name, status, -1, elapsed, reason)

    def _sent_status(self) -> int:
        """The status of the response whose head went out to the client and whose body is
        being relayed, or 0 when nothing of a response went out."""
        rs = self.resp_state
        return self.resp_status if rs in (R_LENGTH, R_CHUNKED, R_CLOSE) else 0

    def _answer_bytes(self, response: bytes) -> None:
        """Send a response fastlb made itself (its head says whether the connection stays)."""
        if self.state == CLOSED:
            return
        if self.server.access_log is not None and self.head is not None:
            body = len(response) - response.find(b"\r\n\r\n") - 4
            self._log_access("-", int(response[9:12]), body, monotonic() - self.t0)
        self.out.send(self.write, response)
        if self._can_keep():
            self._next_request(self.buf, monotonic())
        else:
            self._close()

    def _answer(self, status: int, message: str, rest: bytes) -> None:
        """Answer a request fastlb refuses without a replica (not malformed: keep-alive)."""
        head = self.head
        assert head is not None
        codes = self.server.own_responses
        codes[status] = codes.get(status, 0) + 1
        if head.length != 0:
            self.state = BODY  # a body fastlb will not read: the connection must close
        else:
            self.state = WAIT
            self.buf = rest
        self._answer_bytes(error_response(status, message, close=not self._can_keep()))

    # ------------------------------------------------------------ local (admin) routes
    def _local(self, handler: LocalHandler, head: RequestHead, rest: bytes) -> None:
        if head.length == CHUNKED:
            self._refuse(411, "admin requests need a Content-Length body")
            return
        if head.length > MAX_LOCAL_BODY:
            self._refuse(413, f"admin request body over {MAX_LOCAL_BODY} bytes")
            return
        self.state = LOCAL
        self.resp_state = R_NONE
        self.local_handler = handler
        self.buf = rest
        self.deadline = monotonic() + self.server.header_timeout
        self._local_body()

    def _local_body(self) -> None:
        """The admin request's body, once whole, goes to its handler. Bytes arriving while
        its answer is being made are the next requests: kept in `buf` (reading paused when
        they grow), read after the answer (`_answer_bytes`). Called from data_received, so
        it must not raise."""
        head = self.head
        handler = self.local_handler
        if head is None:
            return
        if handler is None:  # the answer is pending: hold what follows
            if len(self.buf) > self.server.high_water:
                self._pause(P_PIPELINE)
            return
        if len(self.buf) < head.length:
            return
        body, self.buf = self.buf[: head.length], self.buf[head.length :]
        self.local_handler = None
        self.deadline = 0.0
        request = LocalRequest(head, body, self.ip)
        task = self.server.loop.create_task(handler(request))
        seq = self.seq
        task.add_done_callback(lambda t: self._local_done(t, seq))

    def _local_done(self, task: asyncio.Task[bytes], seq: int) -> None:
        if seq != self.seq or self.state != LOCAL:
            return
        if task.cancelled():
            response = error_response(503, "fastlb is shutting down", close=True)
        elif task.exception() is not None:
            exc = task.exception()
            log.error("admin handler failed", exc_info=exc)
            response = error_response(500, f"internal error: {exc}", close=True)
        else:
            response = task.result()
        head = self.head
        if head is not None and head.method == b"HEAD":
            # The head alone, Content-Length kept: a body would be read as the next response.
            response = response[: response.find(b"\r\n\r\n") + 4]
        self._answer_bytes(response)

    def _response_cut(self, reason: bytes, why: str) -> None:
        """A response broke after its head went out (or the request body stopped coming with
        nothing to answer yet): the client can only see a cut. `reason`: the access log's
        short code; `why`: the sentence, for the debug log."""
        log.debug("cut the exchange with %s: %s", self.ip.decode("latin-1"), why)
        self._log_end(self._sent_status(), reason)
        if self.upstream is not None:
            self.upstream.failures += 1
        self._abandon_exchange()
        self._close()

    def on_deadline(self) -> None:
        """Called by the server's sweep when `deadline` has passed."""
        state = self.state
        if state == HEAD:
            if self.buf:
                self._refuse(408, "request headers not received in time", b"timeout")
            else:
                self._close()  # an idle keep-alive connection: close quietly
        elif state == LOCAL:
            self._refuse(408, "request body not received in time", b"timeout")
        elif self.resp_state == R_HEAD:  # nothing of the response yet
            if self.backend is None and state == BODY:
                self._response_cut(b"body-stalled", "request body stalled")
            else:
                timeout = self.server.backend_timeout
                self._backend_failed(504, f"replica did not answer within {timeout:g} s")
        else:
            self._response_cut(b"response-stalled", "response stalled")

    def _abandon_exchange(self) -> None:
        """End the exchange without a clean response: its replica connection cannot be reused
        (part of a request or response is still in it), and it leaves the in-flight count."""
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.client = None
            backend.close()
        self.pending = None
        self.pending_bytes = 0
        self._use(None)

    def _close(self) -> None:
        if self.state != CLOSED:
            self.state = CLOSED
            self.deadline = 0.0
            self.server.clients.discard(self)
            self.out.flush()  # what is queued for this connection leaves before it closes
            self.transport.close()

    # ---------------------------------------------------------------- flow control
    def _pause(self, reason: int) -> None:
        if not self.pauses and self.state != CLOSED:
            self.transport.pause_reading()
        self.pauses |= reason

    def _resume(self, reason: int) -> None:
        if self.pauses & reason:
            self.pauses &= ~reason
            if not self.pauses and self.state != CLOSED:
                self.transport.resume_reading()
