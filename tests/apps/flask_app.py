"""A Flask app, run by gunicorn as a fastlb replica (tests/test_any_replica.py).

Like starlette_app: its name from REPLICA_NAME goes into X-Served-By of /home; /healthz
answers 200 without it.
"""

from __future__ import annotations

import os

from flask import Flask

NAME = os.environ.get("REPLICA_NAME", "anonymous")

app = Flask(__name__)


@app.get("/home")
def home() -> tuple[str, int, dict[str, str]]:
    return f"Hello from {NAME}\n", 200, {"X-Served-By": NAME}


@app.get("/healthz")
def healthz() -> str:
    return "ok\n"
