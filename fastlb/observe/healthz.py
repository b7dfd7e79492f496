"""GET /healthz: fastlb's own health, answered by fastlb (never forwarded), for what watches the
balancer itself: Docker's HEALTHCHECK, the compose file, a load balancer or orchestrator in front.

200 while fastlb can route to at least one replica (an upstream of the current route is up, the
flag the data path reads at each pick), 503 otherwise: then every request it forwards would be
answered 503 anyway, and the watcher should know. The body says how many replicas are up. It is
computed on the loop from the route the data path uses, so it cannot disagree with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastlb.http.messages import json_response, method_not_allowed
from fastlb.proxy.client import LocalHandler, LocalRequest

if TYPE_CHECKING:
    from fastlb.app import Balancer

_READ = (b"GET", b"HEAD")
_FIELDS = b"Cache-Control: no-store\r\n"


class Healthz:
    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def routes(self) -> dict[bytes, LocalHandler]:
        return {b"/healthz": self.handle}

    def counts(self) -> tuple[int, int]:
        """(replicas up, replicas in the route) of the data port's current route."""
        server = self.balancer.server
        route = server.route if server is not None else None
        if route is None:
            return 0, 0
        return sum(1 for upstream in route.upstreams if upstream.up), len(route.upstreams)

    async def handle(self, request: LocalRequest) -> bytes:
        method = request.head.method
        if method not in _READ:
            return method_not_allowed(method, request.head.target, _READ)
        up, total = self.counts()
        status = 200 if up else 503
        response = json_response(
            status,
            {"status": "ok" if up else "no replica up", "up": up, "replicas": total},
            fields=_FIELDS,
        )
        return response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else response

    async def close(self) -> None:
        """Nothing runs in the background."""
