"""A WebSocket echo server on the `websockets` library, run as a real replica process behind
fastlb (tests/test_websocket.py), so the tunnel is tested against a third-party server.

    python tests/apps/ws_echo.py --port P [--name NAME]

Every message is sent back as it came (text as text, bytes as bytes). A text message
`close:CODE` makes the server close the connection with that code (a close from the replica's
side); `sleep:SECONDS` stops it reading for that long (a slow replica: with `max_queue`, the
library stops reading its socket too); `name` answers with --name (which replica the tunnel
reached). Plain HTTP requests get
`200 ok` (fastlb's heartbeats and a 426-free health check).
"""

from __future__ import annotations

import argparse
import asyncio
import http
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="ws")
    args = parser.parse_args()

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                await ws.close(int(message[6:]), "asked to close")
                return
            if isinstance(message, str) and message.startswith("sleep:"):
                await asyncio.sleep(float(message[6:]))
                continue
            if message == "name":
                await ws.send(args.name)
                continue
            await ws.send(message)

    def plain_http(ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return ws.respond(http.HTTPStatus.OK, "ok\n")
        return None

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        echo,
        "127.0.0.1",
        args.port,
        process_request=plain_http,
        max_size=64 * 1024 * 1024,
        max_queue=4,
        ping_interval=None,
        compression=None,
    ):
        await stop


if __name__ == "__main__":
    asyncio.run(main())
