"""The listener, the current routing snapshot, and the sweep that enforces every timeout.

fastlb accepts its clients itself (a reader on each listening socket, `accept()`, then
uvloop's `connect_accepted_socket`) rather than through `loop.create_server`, for three
things create_server cannot do:

- listen with `[proxy] backlog`: given a socket, uvloop listens on it again with its default
  backlog of 100, so a burst of connects past 100 was dropped while the loop was busy (the
  clients' SYNs retried after 1 s, 3 s, ...: 1,000 connects took 3-8 s; issue 11);
- stop accepting at `max_connections` (HAProxy's maxconn): the reader is removed and the
  clients past the limit wait in the kernel's backlog until others leave, with nothing
  spinning;
- survive running out of descriptors: libuv answers EMFILE by accepting and closing every
  waiting connection (its "EMFILE trick": clients reset, nothing logged), and uvloop then
  closes the listening server for good. Here accepting pauses for ACCEPT_RETRY, the condition
  is logged at most once a second with a count, and accepting resumes by itself.

With [proxy] tls_cert and tls_key, the accepted socket is handed to connect_accepted_socket
with the listener's `ssl.SSLContext` (fastlb/tls.py) in a branch of its own, the plain path
untouched: uvloop's TLS protocol does the handshake (bounded by header_timeout) and only then
makes the ClientConnection, which reads plaintext as on a plain listener. A connection whose
handshake did not end is counted (`tls_handshake_failures`), never logged above debug.

`max_connections` defaults to what the descriptor limit allows, as HAProxy derives maxconn:
each client may need one replica connection too, and a reserve stays for what is not a client
(heartbeats, listeners, the admin socket, logs, the table worker's pipes, each replica's
process handles), so that at the limit fastlb refuses nothing it needs to see its replicas
and never reads its own EMFILE as a replica's death.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any, Final, cast

from fastlb.config import ProxyConfig
from fastlb.http.parsers import HeadParser, make_head_parser
from fastlb.observe.access import AccessLog
from fastlb.proxy.client import ClientConnection, LocalHandler
from fastlb.proxy.outbox import Outbox
from fastlb.proxy.upstream import Upstream
from fastlb.routing import KeyFunction, Route, make_key

log = logging.getLogger("fastlb.proxy")

#: Connections accepted per readable event of a listening socket (HAProxy's tune.maxaccept is
#: 64): a burst is taken in batches, with the established connections served in between.
ACCEPT_BATCH: Final = 64
#: After accept() failed for want of descriptors or memory, accepting waits this long before
#: it tries again (HAProxy waits 100 ms too); the client waits in the backlog meanwhile.
ACCEPT_RETRY: Final = 0.1
#: While accepting is paused at max_connections, how often the count is looked at again.
RESUME_CHECK: Final = 0.01
#: A condition that stops accepting is logged at most this often (seconds).
LOG_EVERY: Final = 1.0
#: Descriptors fastlb needs whatever its client count: stdio, the epoll and signal descriptors,
#: the listening sockets, the admin listener and socket with a few admin clients, log files,
#: the table worker's process and pipes, a reload reading the config, the Docker engine's
#: connections.
FD_RESERVE_BASE: Final = 64
#: And per replica: its heartbeat connection, a data-path connect in flight past the pool's,
#: and for a local child its pidfd and the pipes of its output.
FD_RESERVE_PER_REPLICA: Final = 4
#: accept() errors that mean "no descriptor or buffer for it now": the connection stays in the
#: backlog and accepting is retried later. Anything else failed that one connection only.
#: After a TLS connection is closed, how long its close_notify exchange may take before the
#: socket is closed anyway (uvloop's default is 30 s: a peer that never answers would hold a
#: descriptor that long, past max_connections, since a closed client no longer counts).
TLS_SHUTDOWN_TIMEOUT: Final = 1.0
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_SOMAXCONN: Final = Path("/proc/sys/net/core/somaxconn")


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit, where allowed (HAProxy does the same
    at start); returns (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):  # a hard limit the kernel will not grant (nr_open)
            pass
    return soft, hard


def default_max_connections(descriptors: int, replicas: int) -> int:
    """The client connections `descriptors` (RLIMIT_NOFILE) can carry, HAProxy-style: two per
    client (its own, and the replica connection its request may need), after the reserve."""
    reserve = FD_RESERVE_BASE + FD_RESERVE_PER_REPLICA * replicas
    return max(1, (descriptors - reserve) // 2)


def listen_queue(sock: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue (Linux's TCP_INFO reports it as
    tcpi_unacked for a socket in LISTEN), or 0 where that is not available."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    if len(info) < 28:
        return 0
    # struct tcp_info: 8 one-byte fields, then __u32 rto, ato, snd_mss, rcv_mss, unacked.
    unacked: int = struct.unpack_from("I", info, 24)[0]
    return unacked


class ProxyServer:
    """Accepts clients and relays their requests by `route`, which is swapped, never edited."""

    def __init__(
        self,
        config: ProxyConfig,
        key_spec: str,
        route: Route[Upstream] | None,
        *,
        local: dict[bytes, LocalHandler] | None = None,
        forward: bool = True,
        listen: tuple[str, int] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        # `loop`: for a server made outside a running loop (tests/test_exchange.py drives the
        # relay machine with no loop running; nothing there schedules on it).
        self.loop = asyncio.get_running_loop() if loop is None else loop
        self.config = config
        #: None while no replica can take requests: clients get a 503 at once.
        self.route = route
        #: Routes fastlb answers itself (the admin API), by path.
        self.local = local
        #: False for an admin-only listener: anything but `local` is a 404.
        self.forward = forward
        self.listen = listen or (config.host, config.port)
        #: HTTPS on this listener (fastlb/tls.py): the context new connections are served
        #: with; a reload may swap it for one with a renewed certificate. Whether the listener
        #: speaks TLS at all is fixed for its life, like its address: `scheme` says which,
        #: for X-Forwarded-Proto.
        self.tls = tls
        self.scheme = "http" if tls is None else "https"
        self.tls_handshake_failures = 0  # TLS clients that left before the handshake ended
        #: Set while shutting down: each connection closes after its current response.
        self.draining = False
        #: Set when [log] access is on; the data path adds a line per request to it.
        self.access_log: AccessLog | None = None
        #: Called with a replica's name when the data path saw it refuse or reset.
        self.on_suspect: Callable[[str], None] | None = None
        # The listener's counters (plain ints, for /metrics).
        self.accepted = 0  # client connections accepted
        self.accept_pauses = 0  # times accepting stopped at max_connections (clients waited)
        self.accept_errors = 0  # accepts that failed for want of descriptors/memory (deferred)
        #: The client connections fastlb holds at most: [proxy] max_connections, or (0 there)
        #: what the descriptor limit allows (`default_max_connections`), set by `start`.
        self.max_connections = config.max_connections or 1
        self._warned_max = 0  # the max_connections last warned about
        self._sockets: list[socket.socket] = []
        self._accepting = False  # readers on the listening sockets
        self._retry: asyncio.TimerHandle | None = None  # accepting resumes when it fires
        self._opening = 0  # accepted, connection_made not yet run (not in `clients` yet)
        self._full_since = 0.0  # when accepting paused at max_connections (0.0: it is not)
        self._logged_at = -LOG_EVERY  # when a pause was last logged
        self._unlogged_errors = 0  # accept errors since then
        self._exhausted = False  # accept failed for want of descriptors; backlog not drained since
        self._exhausted_logged = False  # and that was logged ("cannot accept clients")
        self.reconfigure(config, key_spec)
        #: The writes of the connections, sent when the event loop's round ends.
        self.outbox = Outbox(self.loop)
        self.clients: set[ClientConnection] = set()
        # Plain-int counters, read at scrape time.
        self.requests = 0  # request heads parsed and dispatched (or answered by fastlb)
        self.refused = 0  # malformed or refused requests (4xx from fastlb, connection closed)
        self.rejected = 0  # paths the replicas do not serve (the spec's 400)
        self.retries = 0  # requests sent again: to the next candidate or on a fresh connection
        #: [routing] balance_factor (0: off): consistent hashing with bounded loads, see
        #: fastlb.proxy.exchange.below_cap. Set by the balancer, and again on reload.
        self.balance_factor = 0.0
        self.over_cap = 0  # picks that passed a replica over for being at its bounded load
        self.own_responses: dict[int, int] = {}  # status -> errors fastlb sent with no replica
        self.tunnels = 0  # WebSocket tunnels opened (a 101 relayed)
        self.tunnels_open = 0  # tunnels open now
        self.tunnel_bytes_up = 0  # tunnel bytes relayed from clients to replicas
        self.tunnel_bytes_down = 0  # and from replicas to clients
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._sockets
        sockname = self._sockets[0].getsockname()
        return sockname[0], sockname[1]

    @property
    def connections(self) -> int:
        """Client connections held, counting those accepted and not yet set up."""
        return len(self.clients) + self._opening

    def waiting(self) -> int:
        """Clients waiting in the listening sockets' backlog (read at scrape time)."""
        return sum(listen_queue(sock) for sock in self._sockets)

    async def start(self) -> None:
        """Listen on every address the listen host resolves to (as create_server would)."""
        host, port = self.listen
        raise_descriptor_limit()
        self._set_max_connections()
        backlog = self.config.backlog
        with contextlib.suppress(OSError, ValueError):
            somaxconn = int(_SOMAXCONN.read_text())
            if backlog > somaxconn:
                log.warning(
                    "[proxy] backlog = %d is above the kernel's net.core.somaxconn (%d), which "
                    "caps it: raise somaxconn (sysctl) for the larger backlog",
                    backlog,
                    somaxconn,
                )
        self._sockets = listening_sockets(host, port, backlog)
        self._resume_accepting()
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    def _set_max_connections(self) -> None:
        """[proxy] max_connections, or what the descriptor limit leaves for clients once the
        reserve for the current replicas is kept (again on each route swap: replicas added
        at run time need their reserve too)."""
        configured = self.config.max_connections
        route = self.route
        replicas = len(route.upstreams) if route is not None else 0
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        derived = default_max_connections(descriptors, max(replicas, 3))
        self.max_connections = configured or derived
        if configured > derived and configured != self._warned_max:
            self._warned_max = configured
            log.warning(
                "[proxy] max_connections = %d is more than the descriptor limit leaves for "
                "clients (%d at ulimit -n %d): past that, accepts fail with EMFILE and "
                "heartbeats may too; raise ulimit -n or lower max_connections",
                configured,
                derived,
                descriptors,
            )

    # ------------------------------------------------------------------ accepting clients
    def _on_acceptable(self, sock: socket.socket) -> None:
        """A listening socket is readable: accept a batch of clients, up to max_connections."""
        for taken in range(ACCEPT_BATCH):
            if self.connections >= self.max_connections:
                # Readable with no room: a client waits, so accepting pauses. Full after
                # taking some, it is not known that one waits: if one does, the socket is
                # still readable and the next event pauses (and says so, with who waits).
                if not taken:
                    self._pause_full()
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                if self._exhausted:
                    self._recovered()  # every client that waited has been taken
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._pause_exhausted(exc)
                    return
                # ECONNABORTED, EPROTO, ...: that one connection failed before it was taken.
                continue
            self.accepted += 1
            self._open(conn)

    def _open(self, conn: socket.socket) -> None:
        """Set up an accepted socket's client connection (a task: uvloop's set-up awaits)."""
        loop = self.loop
        self._opening += 1
        client = ClientConnection(self)
        tls = self.tls
        try:
            if tls is None:
                task = loop.create_task(
                    loop.connect_accepted_socket(lambda: cast(asyncio.Protocol, client), conn)
                )
            else:
                # connection_made runs once the handshake is done; a handshake that has not
                # ended within header_timeout is aborted by uvloop (the slowloris bound).
                task = loop.create_task(
                    loop.connect_accepted_socket(
                        lambda: cast(asyncio.Protocol, client),
                        conn,
                        ssl=tls,
                        ssl_handshake_timeout=self.header_timeout,
                        ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
                    )
                )
        except BaseException:
            self._opening -= 1
            conn.close()
            raise
        task.add_done_callback(lambda t: self._opened(t, client))

    def client_made(self, client: ClientConnection) -> None:
        """`client`'s connection_made ran: it moves from the accepted-not-set-up count to
        `clients` in one step, so `connections` never counts it twice (the set-up task's done
        callback runs a loop round or two later)."""
        self._opening -= 1
        self.clients.add(client)

    def _opened(self, task: asyncio.Task[Any], client: ClientConnection) -> None:
        # The set-up task ended: `client` is in `clients` (client_made ran) unless it failed
        # before connection_made, when it is still counted as opening.
        if client.transport is None:
            self._opening -= 1
            if self.tls is not None:
                # The TLS handshake failed, timed out, or the client left during it: a scan,
                # plain HTTP sent to the HTTPS port, an untrusted certificate. Counted, not
                # logged (a client can cause any number of them).
                self.tls_handshake_failures += 1
        if not task.cancelled() and task.exception() is not None:
            # uvloop closed the transport; nothing of this connection is left to clean up.
            exc = task.exception()
            log.debug("a client connection failed to set up: %s", str(exc) or type(exc).__name__)

    def _pause_full(self) -> None:
        """At max_connections: stop accepting; clients wait in the backlog until some leave."""
        self._stop_readers()
        if self._exhausted:
            self._recovered()  # descriptors were found up to the limit: that condition is over
        if not self._full_since:
            self._full_since = monotonic()
            self.accept_pauses += 1
            now = self._full_since
            if now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                log.warning(
                    "max_connections reached (%d clients): new clients wait in the backlog "
                    "(%d waiting) until some leave; raise [proxy] max_connections (and "
                    "ulimit -n) to serve more at once",
                    self.connections,
                    self.waiting(),
                )
        self._schedule_resume(RESUME_CHECK)

    def _pause_exhausted(self, exc: OSError) -> None:
        """accept() found no descriptor (or memory): wait ACCEPT_RETRY, never spin on it."""
        self._stop_readers()
        self._exhausted = True
        self.accept_errors += 1
        self._unlogged_errors += 1
        now = monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            self._exhausted_logged = True
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.error(
                "cannot accept clients: %s (ulimit -n %d, %d clients connected, "
                "max_connections %d); %d accepts deferred in the last %g s, retrying every "
                "%g s; raise ulimit -n or lower [proxy] max_connections",
                exc.strerror or exc,
                soft,
                self.connections,
                self.max_connections,
                self._unlogged_errors,
                LOG_EVERY,
                ACCEPT_RETRY,
            )
            self._unlogged_errors = 0
        self._schedule_resume(ACCEPT_RETRY)

    def _recovered(self) -> None:
        """Accepting took every waiting client (or stopped at max_connections) since
        descriptors ran out. Said when the "cannot accept" that began it was (so at most
        once per such line, a second apart), and always then: a recovery kept back by the
        rate limit would leave that line as the log's last word on a listener that works.
        A short lapse whose start was not logged ends unlogged too."""
        self._exhausted = False
        if self._exhausted_logged:
            self._exhausted_logged = False
            log.warning(
                "accepting clients again (%d clients connected); %d more accepts had been deferred",
                self.connections,
                self._unlogged_errors,
            )
            self._unlogged_errors = 0

    def _schedule_resume(self, delay: float) -> None:
        if self._retry is None and not self.draining:
            self._retry = self.loop.call_later(delay, self._try_resume)

    def _try_resume(self) -> None:
        self._retry = None
        if self.draining or not self._sockets:
            return
        if self.connections >= self.max_connections:
            self._schedule_resume(RESUME_CHECK)
            return
        self._full_since = 0.0
        self._resume_accepting()

    def _resume_accepting(self) -> None:
        if not self._accepting:
            self._accepting = True
            for sock in self._sockets:
                self.loop.add_reader(sock, self._on_acceptable, sock)

    def _stop_readers(self) -> None:
        if self._accepting:
            self._accepting = False
            for sock in self._sockets:
                self.loop.remove_reader(sock)

    def reconfigure(self, config: ProxyConfig, key_spec: str) -> None:
        """Take new settings (on reload) for the requests that start from now on. The listen
        address is the one setting that needs a restart."""
        self.config = config
        key_header, key_fn = make_key(key_spec)
        self.key_fn: KeyFunction = key_fn
        self.parser: HeadParser = make_head_parser(
            config.http, key_header, config.max_header_fields, config.max_header_bytes
        )
        # Copied to plain attributes: the hot path reads them on every request.
        self.paths: frozenset[bytes] | None = (
            frozenset(p.encode("latin-1") for p in config.replica_paths)
            if config.replica_paths
            else None
        )
        self.forwarded = config.forwarded_headers
        self.max_header_bytes = config.max_header_bytes
        self.header_timeout = config.header_timeout
        self.backend_timeout = config.backend_timeout
        self.idle_timeout = config.idle_timeout
        self.tunnel_timeout = config.tunnel_timeout
        self.high_water = config.high_water
        self.low_water = config.low_water
        if self._sockets:
            self._set_max_connections()  # at once; a paused listener sees it on its next check
        timeouts = (
            config.header_timeout,
            config.backend_timeout,
            config.idle_timeout,
            config.tunnel_timeout,
        )
        #: Timeouts are enforced to within this much; a quarter of the shortest keeps them honest.
        self.tick = min(1.0, max(0.05, min(timeouts) / 4))

    def set_route(self, route: Route[Upstream] | None) -> None:
        self.route = route
        if route is not None and self._sockets:
            self._set_max_connections()

    def suspect(self, upstream: Upstream) -> None:
        """The data path saw `upstream` refuse or reset a connection (the control side probes)."""
        if self.on_suspect is not None:
            self.on_suspect(upstream.name)

    def _sweep(self) -> None:
        now = monotonic()  # the clock of every connection's `deadline`
        for client in [c for c in self.clients if 0.0 < c.deadline < now]:
            client.on_deadline()
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    def stop_accepting(self) -> None:
        """Close the listening sockets: clients still in the backlog are refused (reset)."""
        self._stop_readers()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let exchanges in flight finish (up to `grace` s), close the rest.

        Idle keep-alive connections close at once; busy ones close after their current
        response (`draining`), so a client that keeps sending cannot hold the shutdown open.
        A tunnel has no response to end after: it is closed when `grace` is over
        (TUNNEL_SHUTDOWN), as HAProxy's hard-stop-after closes its tunnels.
        """
        self.stop_accepting()
        self.draining = True
        self.outbox.flush()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline:
            for client in list(self.clients):
                client.shutdown()  # an idle one closes (and leaves `clients`) now
            if not self.clients:
                break
            await asyncio.sleep(0.01)
        for client in list(self.clients):
            client.terminate()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.route is not None:
            for upstream in self.route.upstreams:
                upstream.close_idle()


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Sockets bound and listening on each address `host` resolves to.

    Bound here, not by create_server(host, port): uvloop resolves the host there in libuv's
    thread pool, which starts four threads that then idle for fastlb's whole life, and a
    process with threads pays for them on every socket call of the data path (the kernel counts
    file references atomically, glibc takes its malloc and cancellation locks). The blocking
    resolution here runs once, before anything is served.
    """
    infos = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    bound: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in bound:
                continue
            bound.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family gets its own socket, as asyncio does: "::" must not also claim
                # the IPv4 port the next socket binds.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
