"""A Starlette app, run by uvicorn as a fastlb replica (tests/test_any_replica.py).

What any app fastlb balances might be: it knows nothing of fastlb but its name, from the
environment ([replicas] env = { REPLICA_NAME = "{name}" }), which it puts in X-Served-By so
the tests can see which replica answered. Its health route, /healthz, sends no X-Served-By, as
most apps' do not. Its WebSocket route, /ws, echoes each message and closes when sent `close`
(tests/test_websocket.py). With FAIL_IF_EXISTS naming a file that exists, it fails at import, like an
app deployed with a broken setting.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

NAME = os.environ.get("REPLICA_NAME", "anonymous")
_FAIL = os.environ.get("FAIL_IF_EXISTS", "")
if _FAIL and os.path.exists(_FAIL):
    raise RuntimeError(f"starlette_app: refusing to start, {_FAIL} exists")


async def home(request: Request) -> Response:
    return PlainTextResponse(f"Hello from {NAME}\n", headers={"X-Served-By": NAME})


async def healthz(request: Request) -> Response:
    return Response(status_code=204)


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_text()
            if message == "close":
                await websocket.close(code=4001)
                return
            await websocket.send_text(f"{NAME}: {message}")
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        Route("/home", home),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        WebSocketRoute("/ws", ws_echo),
    ]
)
