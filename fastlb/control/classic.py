"""The classic spec's admin routes, byte-compatible with it: GET /rep, POST /add, DELETE /rm.

Bodies and messages follow ../shared/spec/classic-api.md exactly where the spec speaks; where
it is silent the choices are marked there as ours. A state-changing request from a peer that
is not on loopback must carry `Authorization: Bearer <[admin] token>`; with no token
configured such requests are refused, so a balancer listening on a public address cannot be
reconfigured by whoever reaches it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable

from fastlb.config import AdminConfig
from fastlb.control.api import ControlError
from fastlb.control.cluster import Cluster
from fastlb.http.messages import error_response, json_response, method_not_allowed
from fastlb.proxy.client import LocalHandler, LocalRequest

_AUTHORIZATION = re.compile(rb"\r\nauthorization:[ \t]*([^\r\n]*?)[ \t]*\r\n", re.I)

#: Makes the change a request asks for (None: a read), raising BadRequest or ControlError.
ChangeFn = Callable[[LocalRequest], Awaitable[None]] | None

ADD_TOO_MANY = "Length of hostname list is more than newly added instances"
RM_TOO_MANY = "Length of hostname list is more than removable instances"


class BadRequest(Exception):
    """A request refused before anything changed: (status, message without `<Error> `)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotAllowed(BadRequest):
    """A method the route does not take: a 405 that names, and sends in Allow, the ones it does."""

    def __init__(self, allowed: tuple[bytes, ...]) -> None:
        super().__init__(405, "method not allowed")
        self.allowed = allowed


def parse_body(body: bytes) -> tuple[int, list[str]]:
    """`{"n": int > 0, "hostnames": [str, ...]}` (hostnames optional), or BadRequest."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(
            400, 'request body must be JSON like {"n": 1, "hostnames": ["S1"]}'
        ) from None
    if not isinstance(document, dict):
        raise BadRequest(400, 'request body must be a JSON object like {"n": 1, "hostnames": []}')
    unknown = sorted(set(document) - {"n", "hostnames"})
    if unknown:
        raise BadRequest(400, f"unknown field {unknown[0]!r}: expected n and hostnames")
    n = document.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise BadRequest(400, f"n must be a positive integer, got {json.dumps(n)}")
    hostnames = document.get("hostnames", [])
    if hostnames is None:
        hostnames = []
    if not isinstance(hostnames, list) or not all(isinstance(h, str) for h in hostnames):
        raise BadRequest(400, f"hostnames must be a list of names, got {json.dumps(hostnames)}")
    return n, hostnames


def is_loopback(ip: bytes) -> bool:
    try:
        return ipaddress.ip_address(ip.decode("latin-1")).is_loopback
    except ValueError:
        return False  # a unix socket peer has no IP; it is not this check's business


class ClassicAdmin:
    def __init__(self, cluster: Cluster, admin: AdminConfig) -> None:
        self.cluster = cluster
        self.admin = admin

    def routes(self) -> dict[bytes, LocalHandler]:
        return {b"/rep": self.rep, b"/add": self.add, b"/rm": self.rm}

    def _listing(self) -> bytes:
        names = self.cluster.names()
        payload = {"message": {"N": len(names), "replicas": names}, "status": "successful"}
        return json_response(200, payload)

    def _check(self, request: LocalRequest, methods: tuple[bytes, ...]) -> None:
        if request.head.method not in methods:
            raise NotAllowed(methods)
        if request.head.method in (b"GET", b"HEAD") or is_loopback(request.client_ip):
            return
        token = self.admin.token
        if not token:
            raise BadRequest(
                403,
                "admin changes from other hosts are disabled: set [admin] token and send "
                "Authorization: Bearer <token>",
            )
        match = _AUTHORIZATION.search(request.head.raw)
        given = match.group(1) if match else b""
        if not hmac.compare_digest(given, b"Bearer " + token.encode()):
            raise BadRequest(403, "a valid Authorization: Bearer <token> header is required")

    async def _respond(
        self, request: LocalRequest, methods: tuple[bytes, ...], change: ChangeFn
    ) -> bytes:
        """Check the method and the caller, make the change, answer with the new listing; any
        refusal is the spec's `<Error>` shape and leaves the replicas as they were."""
        try:
            self._check(request, methods)
            if change is not None:
                await change(request)
        except NotAllowed as exc:
            return method_not_allowed(request.head.method, request.head.target, exc.allowed)
        except BadRequest as exc:
            return error_response(exc.status, exc.message)
        except ControlError as exc:
            return error_response(400, str(exc))
        return self._listing()

    async def rep(self, request: LocalRequest) -> bytes:
        return await self._respond(request, (b"GET", b"HEAD"), None)

    async def add(self, request: LocalRequest) -> bytes:
        return await self._respond(request, (b"POST",), self._add)

    async def rm(self, request: LocalRequest) -> bytes:
        return await self._respond(request, (b"DELETE", b"POST"), self._rm)

    async def _add(self, request: LocalRequest) -> None:
        n, hostnames = parse_body(request.body)
        if len(hostnames) > n:
            raise BadRequest(400, ADD_TOO_MANY)
        names = hostnames + self.cluster.generated_names(n - len(hostnames), hostnames)
        await self.cluster.add(names)

    async def _rm(self, request: LocalRequest) -> None:
        n, hostnames = parse_body(request.body)
        if len(hostnames) > n:
            raise BadRequest(400, RM_TOO_MANY)
        current = self.cluster.names()
        if n > len(current):
            raise BadRequest(400, f"cannot remove {n} replicas: there are only {len(current)}")
        for name in hostnames:
            if name not in current:
                raise BadRequest(400, f"hostname {name!r} is not a replica")
        await self.cluster.remove(self.cluster.removal_names(n, hostnames))
