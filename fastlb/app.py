"""Wiring: config -> provider -> cluster (health, healing, tables) -> proxy server(s) and the
admin surfaces.

The one place that knows every part; the parts know nothing of each other beyond their
interfaces (cli -> app -> proxy/control/replicas -> table/config/http).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from fastlb.config import Config, load
from fastlb.control.adminsock import AdminSocket
from fastlb.control.api import ControlError
from fastlb.control.classic import ClassicAdmin
from fastlb.control.cluster import Cluster
from fastlb.control.tables import TableBuilder
from fastlb.errors import FastlbError
from fastlb.observe.access import AccessLog
from fastlb.observe.healthz import Healthz
from fastlb.observe.metrics import Metrics
from fastlb.observe.status import StatusPage
from fastlb.proxy.server import ProxyServer
from fastlb.proxy.upstream import Upstream
from fastlb.replicas import Provider, Replica, make_provider
from fastlb.tls import context_for, quiet_transport_noise
from fastlb.workers import WorkerPool

log = logging.getLogger("fastlb")


class Balancer:
    """One running fastlb: its cluster of replicas, its listeners and its admin socket."""

    def __init__(
        self, config: Config, provider: Provider | None = None, config_path: str | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.provider = provider or make_provider(config.replicas, config.health)
        self.tables = TableBuilder(config.routing)
        self.cluster = Cluster(
            config,
            self.provider,
            self.tables,
            self._upstream,
            reload_config=(lambda: load(config_path)) if config_path else None,
        )
        self.server: ProxyServer | None = None
        self.admin_server: ProxyServer | None = None
        self.admin_socket: AdminSocket | None = None
        self.classic: ClassicAdmin | None = None
        #: [proxy] workers > 1: the processes serving the data port (then `server` listens
        #: nowhere: it holds the route, the suspicion hook and the workers' summed counters).
        self.workers: WorkerPool | None = None
        self._stopping = asyncio.Event()
        self.observers: list[Metrics | StatusPage | Healthz] = []
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False

    def _upstream(self, replica: Replica) -> Upstream:
        # The cluster's config: after a reload, new upstreams take the new pool settings.
        proxy = self.cluster.config.proxy
        return Upstream(
            replica.name,
            replica.host,
            replica.port,
            weight=replica.weight,
            pool_size=proxy.pool_size,
            connect_timeout=proxy.connect_timeout,
            high_water=proxy.high_water,
            low_water=proxy.low_water,
            duration_bounds=self.cluster.config.metrics.buckets,
        )

    async def _listen(self, server: ProxyServer) -> None:
        try:
            await server.start()
        except OSError as exc:
            host, port = server.listen
            raise FastlbError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "is another server using that port? Set [proxy] listen (or [admin] listen)"
            ) from None

    async def start(self) -> None:
        config = self.config
        # Before any replica starts: a bad certificate or key stops fastlb here, with the file
        # and what is wrong with it (fastlb --check reads them the same way).
        tls = context_for(config)
        if tls is not None:
            quiet_transport_noise()
        route = await self.cluster.start()
        # Admin and observability routes, served on the data port or on the admin listener.
        self.classic = ClassicAdmin(self.cluster, config.admin)
        routes = self.classic.routes()
        self.observers = [Metrics(self), StatusPage(self), Healthz(self)]
        for observer in self.observers:
            routes.update(observer.routes())
        # [admin] prefix: all of fastlb's own routes move under it (the app gets the rest).
        prefix = config.admin.prefix.encode()
        routes = {prefix + path: handler for path, handler in routes.items()}
        on_data_port = config.admin.on_data_port
        self.server = ProxyServer(
            config.proxy,
            config.routing.key,
            route,
            local=routes if on_data_port else None,
            tls=tls,
        )
        self.server.balance_factor = config.routing.balance_factor
        self.cluster.attach(self.server)
        # Before the listeners open: a SIGHUP while workers start must reach them too.
        self.cluster.on_reload.append(self._reconfigure)
        if config.proxy.workers > 1:
            # The control plane stays here; the data port is the workers' (fastlb/workers.py).
            self.workers = WorkerPool(config, self.server, routes if on_data_port else None)
            self.cluster.publisher.watchers.append(self.workers)
            await self.workers.start()
        else:
            if config.log.access:
                self.server.access_log = AccessLog(
                    config.log.access_file, config.log.access_format
                )
            await self._listen(self.server)
        if config.admin.listen is not None and not on_data_port:
            self.admin_server = ProxyServer(
                config.proxy,
                config.routing.key,
                None,
                local=routes,
                forward=False,
                listen=config.admin.listen,
            )
            await self._listen(self.admin_server)
        if config.admin.socket:
            self.admin_socket = AdminSocket(self.cluster)
            await self.admin_socket.start(config.admin.socket)
        # Start the table-building worker now, so the first swap after a failure is quick.
        await self.cluster.publish()
        host, port = (
            (config.proxy.host, config.proxy.port) if self.workers else self.server.address
        )
        listing = ", ".join(
            f"{info.name} ({info.address})" for info in self.cluster.replicas()
        )
        log.info(
            "listening on %s:%d (%s), %s table, replicas: %s",
            host,
            port,
            "HTTPS" if tls is not None else "HTTP",
            config.routing.table,
            listing,
        )

    def _reconfigure(self, old: Config, new: Config) -> str | None:
        """A reload's part outside the cluster: the admin routes take the new [admin] (its
        token holds from the next request on), the admin listener the new [proxy] settings,
        the data listener a certificate and key read again. Where the admin surfaces listen
        needs a restart, as [proxy] listen does: said so. Returns what could not be taken."""
        problem = self._reload_tls(new)
        if self.workers is not None:
            self.workers.reconfigure(new)
        if self.classic is not None:
            self.classic.admin = new.admin
        access = self.server.access_log if self.server is not None else None
        if access is not None:
            access.format = new.log.access_format
            if new.log.access_file != access.path:
                access.reopen(new.log.access_file)
        if new.log.access != old.log.access:
            log.warning("reload: [log] access changed; restart fastlb to switch the access log")
        if self.admin_server is not None:
            self.admin_server.reconfigure(new.proxy, new.routing.key)
        for key in ("listen", "on_data_port", "socket", "prefix"):
            if getattr(new.admin, key) != getattr(old.admin, key):
                log.warning(
                    "reload: [admin] %s changed; restart fastlb to move the admin listener "
                    "(it stays as it was)", key,
                )
        return problem

    def _reload_tls(self, new: Config) -> str | None:
        """Read [proxy] tls_cert and tls_key again (a renewed certificate, or new paths): new
        connections are served with the new context, those open keep theirs. A file that
        cannot be used keeps the context in place, and says why. Turning TLS on or off changes
        what the port speaks, as moving it would: that needs a restart."""
        server = self.server
        if server is None:
            return None
        if bool(new.proxy.tls_cert) != (server.tls is not None):
            was = "HTTPS" if server.tls is not None else "plain HTTP"
            problem = f"[proxy] tls_cert changed on or off; restart fastlb for that ({was} kept)"
            log.warning("reload: %s", problem)
            return problem
        if server.tls is None:
            return None
        try:
            server.tls = context_for(new)
        except FastlbError as exc:
            problem = f"kept the TLS certificate in use: {exc}"
            log.error("reload: %s", problem)
            return problem
        log.info("reload: TLS certificate and key read again from %s", new.proxy.tls_cert)
        return None

    def request_stop(self) -> None:
        self._stopping.set()

    def request_reload(self) -> None:
        # logrotate's SIGHUP: the access log file is opened again at once, whether or not the
        # config file then reads well.
        if self.server is not None and self.server.access_log is not None:
            self.server.access_log.reopen()
        if self.workers is not None:
            self.workers.reopen_logs()  # each worker writes its own lines to the file
        # A SIGHUP during a reload is not lost: the file is read again once that one is done.
        self._reload_again = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        while self._reload_again:
            self._reload_again = False
            try:
                log.info("SIGHUP: %s", await self.cluster.reload())
            except ControlError as exc:
                log.error("reload failed: %s", exc)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (shutdown_timeout), stop replicas."""
        grace = self.cluster.config.proxy.shutdown_timeout
        if self.admin_socket is not None:
            await self.admin_socket.close()
        if self.admin_server is not None:
            self.admin_server.stop_accepting()
        if self.workers is not None:
            await self.workers.stop(grace)
        elif self.server is not None:
            await self.server.stop(grace)
        if self.admin_server is not None:
            await self.admin_server.stop(0.5)
        if self.server is not None and self.server.access_log is not None:
            self.server.access_log.close()
        for observer in self.observers:
            await observer.close()
        await self.cluster.close()
        await self.tables.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            # A stop asked while replicas are still starting (Ctrl-C at a slow app's start)
            # is not kept waiting for their start_timeout: the start is cancelled, and stop()
            # ends the children already spawned.
            starting = asyncio.ensure_future(self.start())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                log.info("stopping before fastlb was serving")
                return 0
            if starting.exception() is not None:
                stopping.cancel()
                starting.result()  # a failed start raises its error here
            await stopping
            log.info("stopping: draining requests in flight")
        finally:
            await self.stop()
        return 0
