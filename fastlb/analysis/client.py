"""A small asyncio HTTP/1.1 client: keep-alive connections, bounded concurrency, one record per
request.

Why our own rather than aiohttp or httpx: the analysis runs in the same process (and on the same
event loop) as the balancer it measures, so the client's cost per request is taken from the
balancer's core; a client that only speaks what fastlb and the replicas send (Content-Length or
chunked bodies, keep-alive, `Connection: close`) costs a fraction of a general one, and it adds no
dependency. bench/dates.py uses it too, so the seed's client and the analysis count replicas the
same way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "Connection",
    "HttpError",
    "Reply",
    "Sample",
    "percentile",
    "replica_of",
    "run_load",
]

# The spec's clients read the replica from the /home body, `Hello from Server: <ID>`.
_HELLO = re.compile(rb"Hello from Server:\s*([^\"\s]+)")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class HttpError(Exception):
    """A request that got no complete response: refused, reset, timed out or malformed."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete response."""

    status: int
    headers: dict[str, str]  # lower-cased names; a repeated field keeps its last value
    body: bytes
    elapsed: float  # seconds from writing the request to reading the last body byte


@dataclass(frozen=True, slots=True)
class Sample:
    """What a load run keeps of one request: when it ended, who served it, or why it failed."""

    done: float  # time.time() when the reply (or the failure) came
    replica: str | None  # None: the request failed
    status: int  # 0: no response at all
    elapsed: float  # seconds
    error: str = ""  # why it failed ("status 502", "reset: ...")


def replica_of(reply: Reply) -> str | None:
    """The replica that answered: from the /home body as the spec's clients read it, else from
    the X-Served-By header the replicas add (other paths have no name in their body)."""
    match = _HELLO.search(reply.body)
    if match is not None:
        return match.group(1).decode("ascii", "replace")
    return reply.headers.get("x-served-by")


def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of `values`; NaN when there are none.

    Nearest rank rather than interpolation: every reported figure is a latency that a request
    really had, and it is well defined for a handful of samples.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[min(int(rank), len(ordered)) - 1]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed mid-response"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError):
        return f"socket error: {exc.strerror or exc}"
    return f"malformed response: {exc}"


class Connection:
    """One keep-alive connection to host:port, opened on first use and again after a close.

    Requests on one Connection are sequential (HTTP/1.1 without pipelining); concurrency comes
    from using several.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._authority = f"{host}:{port}"

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        """Send one request and read its whole response, or raise HttpError (the connection is
        then closed, so the next request starts clean)."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._authority}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in _BODY_METHODS:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is None:
                    self._reader, self._writer = await asyncio.open_connection(
                        self.host, self.port
                    )
                assert self._reader is not None
                self._writer.write(data)
                status, fields, payload, keep = await _read_response(self._reader, method)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError) as exc:
            self.close()
            raise HttpError(_describe(exc)) from exc
        if not keep:
            self.close()
        return Reply(status, fields, payload, time.perf_counter() - started)


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, whether the connection stays open) of the next response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    status = int(rest[:3])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"header line without a colon: {line[:60]!r}")
        fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    connection = fields.get("connection", "").lower()
    keep = "close" not in connection and (version == b"HTTP/1.1" or "keep-alive" in connection)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, fields, b"", keep
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, fields, await _read_chunked(reader), keep
    length = fields.get("content-length")
    if length is not None:
        return status, fields, await reader.readexactly(int(length)), keep
    return status, fields, await reader.read(), False  # delimited by the close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


Request = tuple[str, Mapping[str, str]]  # (target, headers) of a GET


async def run_load(
    host: str,
    port: int,
    requests: Iterable[Request],
    *,
    concurrency: int,
    timeout: float = 10.0,
    stop: asyncio.Event | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """GET every request of `requests` over `concurrency` keep-alive connections.

    Ends when `requests` is exhausted or `stop` is set (a request in flight then finishes). A
    request succeeds with a 200 whose replica is known (`replica_of`); anything else is a
    failed Sample with its reason. `requests` may be endless when `stop` is given.
    """
    samples: list[Sample] = []
    source: Iterator[Request] = iter(requests)

    async def worker() -> None:
        conn = Connection(host, port, timeout)
        try:
            while stop is None or not stop.is_set():
                try:
                    target, headers = next(source)
                except StopIteration:
                    return
                started = time.perf_counter()
                try:
                    reply = await conn.request("GET", target, headers)
                except HttpError as exc:
                    elapsed = time.perf_counter() - started
                    sample = Sample(time.time(), None, 0, elapsed, str(exc))
                else:
                    replica = replica_of(reply) if reply.status == 200 else None
                    error = "" if replica else f"status {reply.status}"
                    if reply.status == 200 and not replica:
                        error = "200 without a replica name"
                    sample = Sample(time.time(), replica, reply.status, reply.elapsed, error)
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return samples
