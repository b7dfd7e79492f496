"""Reload (SIGHUP) end to end: a real fastlb process, its config file edited, real replicas."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from fastlb.app import Balancer
from fastlb.config import load
from fastlb.control.classic import BadRequest
from fastlb.http.parsers import make_head_parser
from fastlb.proxy.client import LocalRequest
from tests.conftest import (
    Backend,
    Fastlb,
    free_port,
    http_get,
    raw_exchange,
    static_config,
    wait_for,
)

StartFastlb = Callable[[str], Fastlb]
StartBackend = Callable[..., Backend]


def served_by(lb: Fastlb, count: int = 40) -> set[str]:
    """Who answered `count` requests to different paths (key = path spreads them)."""
    names = set()
    for i in range(count):
        status, headers, _ = lb.get(f"/r{i}")
        assert status == 200, status
        names.add(headers["x-served-by"])
    return names


#: A reload is applied asynchronously after the signal: how long a test waits for it.
RELOADED = 20.0


def config(entries: list[tuple[str, int]]) -> str:
    """A static-replica config whose listen port is filled in by `reload_with`/start."""
    return static_config(0, entries).replace(":0", ":{port}")


def reload_with(lb: Fastlb, text: str) -> None:
    lb.config.write_text(text.replace("{port}", str(lb.port)))
    lb.proc.send_signal(signal.SIGHUP)


def test_a_static_replica_added_to_the_file_serves_after_sighup(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    a1 = start_backend("echo", name="A1")
    a2 = start_backend("echo", name="A2")
    lb = start_fastlb(config([("A1", a1.port)]))
    assert served_by(lb) == {"A1"}
    # Added: the provider takes the new [[replicas.static]] entry.
    reload_with(lb, config([("A1", a1.port), ("A2", a2.port)]))
    wait_for(lambda: served_by(lb) == {"A1", "A2"}, RELOADED, "A2 serves its share")
    # Removed: A1's entry goes, every request reaches A2.
    reload_with(lb, config([("A2", a2.port)]))
    wait_for(lambda: served_by(lb) == {"A2"}, RELOADED, "only A2 serves")
    assert http_get(lb.port, "/r0")[0] == 200


def _admin_file(port: int, admin_port: int, token: str, extra: str = "") -> str:
    return (
        f'[proxy]\nlisten = "127.0.0.1:{port}"\n{extra}'
        '[replicas]\nprovider = "static"\n'
        f'[[replicas.static]]\nname = "A1"\naddress = "127.0.0.1:{free_port()}"\n'
        f'[admin]\non_data_port = false\nlisten = "127.0.0.1:{admin_port}"\ntoken = "{token}"\n'
    )


def test_a_reload_reaches_the_admin_listener(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # [admin] token and the [proxy] settings the admin listener serves by take effect on a
    # reload; a changed [admin] listen is logged as needing a restart, as [proxy] listen is.
    import asyncio

    import uvloop

    port, admin_port = free_port(), free_port()
    path = tmp_path / "lb.toml"
    path.write_text(_admin_file(port, admin_port, "old"))

    def from_far(token: str) -> int | None:
        raw = (b"POST /add HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               b"Content-Length: 8\r\n\r\n" % token.encode())
        head = make_head_parser("h11", None, 100, 16384).parse(raw)
        assert balancer.classic is not None
        try:
            balancer.classic._check(LocalRequest(head, b"", b"10.9.8.7"), (b"POST",))
        except BadRequest as exc:
            return exc.status
        return None

    async def scenario() -> tuple[list[int | None], list[int | None], bytes, bytes]:
        loop = asyncio.get_running_loop()
        await balancer.start()
        try:
            before = [from_far("old"), from_far("new")]
            big = b"GET /rep HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
            answer_before = await loop.run_in_executor(None, raw_exchange, admin_port, big)
            path.write_text(
                _admin_file(port, free_port(), "new", "max_header_bytes = 2048\n")
            )
            await balancer.cluster.reload()
            after = [from_far("old"), from_far("new")]
            answer_after = await loop.run_in_executor(None, raw_exchange, admin_port, big)
            return before, after, answer_before, answer_after
        finally:
            await balancer.stop()

    balancer = Balancer(load(str(path)), config_path=str(path))
    caplog.set_level(logging.WARNING)
    before, after, answer_before, answer_after = uvloop.run(scenario())
    assert before == [None, 403]
    assert after == [403, None]
    assert answer_before.startswith(b"HTTP/1.1 200 ")
    assert answer_after.startswith(b"HTTP/1.1 431 ")
    assert "[admin] listen changed" in caplog.text


def test_a_static_replica_whose_address_changes_moves_on_sighup(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    old = start_backend("echo", name="old")
    new = start_backend("echo", name="new")
    lb = start_fastlb(config([("A1", old.port)]))
    assert served_by(lb) == {"old"}
    reload_with(lb, config([("A1", new.port)]))
    wait_for(lambda: served_by(lb) == {"new"}, RELOADED, "A1 is served from its new address")
