"""The replica's routes and complete response bytes.

Pure functions of (method, request target, Host, connection mode), kept apart from the protocol so
that every route and error is unit-tested without sockets, and so that the server's hot path is
one dict lookup returning prebuilt bytes for /home and /heartbeat.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, timedelta
from functools import lru_cache
from typing import Final
from urllib.parse import parse_qsl

import httptools

from replica.data import Dataset

__all__ = [
    "CLOSE",
    "KEEP_ALIVE",
    "KEEP_ALIVE_10",
    "ROUTES",
    "Api",
    "build_response",
    "check_name",
]

# How the connection goes on after a response; indexes the prebuilt variants.
KEEP_ALIVE: Final = 0  # HTTP/1.1 default: no Connection header needed
CLOSE: Final = 1
KEEP_ALIVE_10: Final = 2  # HTTP/1.0 client that asked for keep-alive: must be told it got it

ROUTES: Final = ("/home", "/heartbeat", "/neo", "/apod")
FEED_LIMIT_DAYS: Final = 7

_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}
_CONNECTION: Final = (b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n")
_JSON: Final = b"Content-Type: application/json\r\n"
_ALLOW: Final = b"Allow: GET, HEAD\r\n"
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HOST_RE: Final = re.compile(rb"[A-Za-z0-9._\-:\[\]]{1,255}")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")

# A route answers (query string, "http://host" to build links from, the request target) with a
# status and a JSON body (None: the empty body of /heartbeat).
Handler = Callable[[str, str, str], tuple[int, bytes | None]]


def check_name(name: str) -> str | None:
    """Why `name` cannot name a replica, or None: it goes verbatim into a header and a body."""
    if not name:
        return "the replica name is empty"
    if len(name) > 64:
        return "the replica name is longer than 64 characters"
    if name != name.strip() or any(not (" " <= ch <= "~") for ch in name):
        return "the replica name must be printable ASCII without leading or trailing spaces"
    return None


def build_response(
    status: int,
    body: bytes | None,
    served_by: bytes,
    mode: int,
    *,
    head: bool = False,
    extra: bytes = b"",
) -> bytes:
    """One complete response. `body` None is an empty non-JSON body; HEAD keeps the length."""
    length = 0 if body is None else len(body)
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"" if body is None else _JSON,
            b"Content-Length: %d\r\n" % length,
            served_by,
            extra,
            _CONNECTION[mode],
            b"\r\n",
            b"" if head or body is None else body,
        )
    )


def _classic(message: str, status: str = "failure") -> bytes:
    # The classic spec's bodies are Python's default json.dumps rendering ("key": value).
    return json.dumps({"message": message, "status": status}).encode("ascii")


def _compact(document: object) -> bytes:
    # NASA's bodies are compact.
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _parse_date(text: str) -> date | None:
    if not _DATE_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _long_date(day: date) -> str:
    return f"{_MONTHS[day.month - 1]} {day.day:02d}, {day.year}"


def _first_values(query: str) -> dict[str, str]:
    """Each parameter's first value, as NASA's servers read repeated parameters."""
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
        values.setdefault(key, value)
    return values


class Api:
    """The routes of one named replica, with its fixed answers prebuilt for each connection mode."""

    __slots__ = (
        "_apod_body",
        "_default_base",
        "_neo_body",
        "_routes",
        "_served_by",
        "dataset",
        "name",
        "static_get",
        "static_head",
    )

    def __init__(self, name: str, dataset: Dataset, default_host: str = "127.0.0.1") -> None:
        problem = check_name(name)
        if problem is not None:
            raise ValueError(problem)
        self.name = name
        self.dataset = dataset
        self._served_by = b"X-Served-By: %s\r\n" % name.encode("ascii")
        self._default_base = f"http://{default_host}"
        home = _classic(f"Hello from Server: {name}", "successful")
        fixed: dict[str, bytes | None] = {"/home": home, "/heartbeat": None}
        # Indexed by target bytes, then by mode: the hot path is a dict lookup and a tuple index.
        self.static_get: dict[bytes, tuple[bytes, bytes, bytes]] = {}
        self.static_head: dict[bytes, tuple[bytes, bytes, bytes]] = {}
        for path, body in fixed.items():
            target = path.encode("ascii")
            self.static_get[target] = self._variants(200, body, head=False)
            self.static_head[target] = self._variants(200, body, head=True)
        self._routes: dict[str, Handler] = {
            "/home": lambda _q, _b, _t: (200, home),
            "/heartbeat": lambda _q, _b, _t: (200, None),
            "/neo": self._neo,
            "/apod": self._apod,
        }
        self._neo_body = lru_cache(maxsize=1024)(self._neo_feed)
        self._apod_body = lru_cache(maxsize=4096)(self._apod_entry)

    def _variants(
        self, status: int, body: bytes | None, *, head: bool
    ) -> tuple[bytes, bytes, bytes]:
        return (
            build_response(status, body, self._served_by, KEEP_ALIVE, head=head),
            build_response(status, body, self._served_by, CLOSE, head=head),
            build_response(status, body, self._served_by, KEEP_ALIVE_10, head=head),
        )

    def error(self, status: int, message: str, mode: int = CLOSE) -> bytes:
        """A classic-shaped failure, e.g. for a request the parser rejected."""
        return build_response(status, _classic(f"<Error> {message}"), self._served_by, mode)

    def respond(self, method: bytes, target: bytes, host: bytes | None, mode: int) -> bytes:
        """The complete response to one request."""
        is_get = method == b"GET"
        head = method == b"HEAD"
        if is_get or head:
            fixed = (self.static_get if is_get else self.static_head).get(target)
            if fixed is not None:
                return fixed[mode]
        split = _split_target(target)
        if split is None:
            return self.error(400, "Malformed request target", mode)
        path, query = split
        handler = self._routes.get(path)
        extra = b""
        status: int
        body: bytes | None
        if handler is None:
            status = 404
            body = _classic(f"<Error> '{path}' endpoint does not exist in server replicas")
        elif not (is_get or head):
            status, extra = 405, _ALLOW
            verb = method.decode("latin-1")
            body = _classic(f"<Error> Method {verb} is not allowed on '{path}', only GET and HEAD")
        else:
            base = self._base(host)
            status, body = handler(query, base, target.decode("latin-1"))
        return build_response(status, body, self._served_by, mode, head=head, extra=extra)

    def _base(self, host: bytes | None) -> str:
        """Where links point: the Host the client used (the balancer, behind one), if it is sane."""
        if host is not None and _HOST_RE.fullmatch(host):
            return "http://" + host.decode("ascii")
        return self._default_base

    # -- /neo ----------------------------------------------------------------------------------

    def _neo(self, query: str, base: str, target: str) -> tuple[int, bytes]:
        params = _first_values(query)
        ds = self.dataset

        def bad(message: str) -> tuple[int, bytes]:
            return 400, _compact(
                {
                    "code": 400,
                    "http_error": "BAD_REQUEST",
                    "error_message": message,
                    "request": base + target if target[:1] == "/" else target,
                }
            )

        raw_start = params.get("start_date")
        if raw_start is None:
            return bad("Date Format Exception - Expected format (yyyy-mm-dd) - start_date is "
                       "required")
        start = _parse_date(raw_start)
        if start is None:
            return bad(f"Date Format Exception - Expected format (yyyy-mm-dd) - Text "
                       f"'{raw_start}' could not be parsed")
        raw_end = params.get("end_date", "")
        if raw_end:
            end = _parse_date(raw_end)
            if end is None:
                return bad(f"Date Format Exception - Expected format (yyyy-mm-dd) - Text "
                           f"'{raw_end}' could not be parsed")
        else:
            end = min(start + timedelta(days=FEED_LIMIT_DAYS), max(start, ds.neo_last))
        for day in (start, end):
            if not ds.neo_first <= day <= ds.neo_last:
                return bad(f"Dates must be between {ds.neo_first} and {ds.neo_last}")
        if end < start:
            return bad("The end_date must not be before the start_date")
        if (end - start).days > FEED_LIMIT_DAYS:
            return bad(f"The Feed date limit is only {FEED_LIMIT_DAYS} Days")
        return 200, self._neo_body(start, end, base)

    def _neo_feed(self, start: date, end: date, base: str) -> bytes:
        span = timedelta(days=max((end - start).days, 1))
        days: dict[str, object] = {}
        count = 0
        day = start
        while day <= end:
            objects = self.dataset.neo_day(day)
            days[day.isoformat()] = objects
            count += len(objects)
            day += timedelta(days=1)

        def link(first: date, last: date) -> str:
            return f"{base}/neo?start_date={first}&end_date={last}"

        return _compact(
            {
                "links": {
                    "next": link(start + span, end + span),
                    "previous": link(start - span, end - span),
                    "self": link(start, end),
                },
                "element_count": count,
                "near_earth_objects": days,
            }
        )

    # -- /apod ---------------------------------------------------------------------------------

    def _apod(self, query: str, base: str, target: str) -> tuple[int, bytes]:
        ds = self.dataset
        raw = _first_values(query).get("date", "")
        if not raw:
            # NASA answers today's picture; the dataset's last date is "today", every run.
            return 200, self._apod_body(ds.apod_last)
        day = _parse_date(raw)
        if day is None:
            return 400, _compact(
                {"code": 400, "msg": f"time data '{raw}' does not match format '%Y-%m-%d'"}
            )
        if not ds.apod_first <= day <= ds.apod_last:
            return 400, _compact(
                {
                    "code": 400,
                    "msg": f"Date must be between {_long_date(ds.apod_first)} and "
                    f"{_long_date(ds.apod_last)}.",
                }
            )
        return 200, self._apod_body(day)

    def _apod_entry(self, day: date) -> bytes:
        return _compact(self.dataset.apod(day))


def _split_target(target: bytes) -> tuple[str, str] | None:
    """(path, query) of an origin-form or absolute-form target, or None if it is neither."""
    if target[:1] == b"/":
        rest = target.partition(b"#")[0]
        path, _, query = rest.partition(b"?")
    elif target == b"*":
        path, query = target, b""
    else:
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return None
        path = url.path or b"/"
        query = url.query or b""
    return path.decode("latin-1"), query.decode("latin-1")
