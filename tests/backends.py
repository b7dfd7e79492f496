"""Replica stand-ins with behaviours the demo replica does not have, run as real processes.

Each mode is a real HTTP server on a real socket, used where a test needs a replica to do
something specific: show exactly what reached it (echo), answer with a framing the demo replica
never uses (chunked, close-delimited, 100 MB), or fail in a way a real replica can (garbage,
hang, drop a kept-alive connection). It writes one line per request to --log, so tests can
prove that nothing of a refused request reached a replica.

    python tests/backends.py MODE --port P [--log FILE] [--size N] [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys

import h11


class Backend:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mode: str = args.mode
        self.size: int = args.size
        self.name: str = args.name
        self.log = open(args.log, "a", buffering=1) if args.log else None  # noqa: SIM115
        self.connections = 0

    def record(self, line: str) -> None:
        if self.log is not None:
            self.log.write(line + "\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_id = self.connections
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                self.record(f"{request.method.decode()} {request.target.decode()} conn={conn_id}")
                if self.mode == "hang":
                    await asyncio.sleep(3600)
                if self.mode == "garbage":
                    writer.write(b"THIS IS NOT HTTP\r\n\r\n")
                    await writer.drain()
                    return
                if self.mode == "one-per-conn" and served >= 1:
                    return  # drop a kept-alive connection without answering
                served += 1
                await self._respond(writer, request, body, conn_id, served)
                if self.mode == "close":
                    return
                # The response went out raw, past h11's state machine: carry the bytes
                # already read (a pipelined request) into a fresh one.
                leftover, closed = conn.trailing_data
                conn = h11.Connection(h11.SERVER)
                if leftover:  # h11 reads an empty feed as end of stream
                    conn.receive_data(leftover)
                if closed:
                    conn.receive_data(b"")
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
        conn_id: int,
        served: int,
    ) -> None:
        head = b"HTTP/1.1 200 OK\r\nX-Served-By: " + self.name.encode() + b"\r\n"
        if self.mode == "interim":  # informational responses first, then the final one
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            await writer.drain()
        if self.mode in ("echo", "one-per-conn", "interim"):
            payload = json.dumps(
                {
                    "method": request.method.decode(),
                    "target": request.target.decode(),
                    "version": request.http_version.decode(),
                    "headers": [[k.decode(), v.decode()] for k, v in request.headers],
                    "body_len": len(body),
                    "body_sha256": hashlib.sha256(body).hexdigest(),
                    "conn": conn_id,
                    "served_on_conn": served,
                }
            ).encode()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        elif self.mode == "chunked":
            writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
            left = self.size
            while left:
                n = min(left, 7000)
                writer.write(b"%x\r\n" % n + b"c" * n + b"\r\n")
                left -= n
            writer.write(b"0\r\nX-Trailer: done\r\n\r\n")
        elif self.mode == "close":
            writer.write(head + b"\r\n" + b"d" * self.size)
        elif self.mode == "big":
            writer.write(head + b"Content-Length: %d\r\n\r\n" % self.size)
            block = b"b" * 65536
            left = self.size
            while left:
                n = min(left, len(block))
                writer.write(block[:n])
                left -= n
                await writer.drain()
        await writer.drain()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode",
        choices=["echo", "chunked", "close", "big", "garbage", "hang", "one-per-conn", "interim"],
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    backend = Backend(args)
    server = await asyncio.start_server(backend.handle, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"backend {args.mode} on {args.port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
