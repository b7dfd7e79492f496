"""Reload (SIGHUP) end to end: a real fastlb process, its config file edited, real replicas."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.conftest import Backend, Fastlb, http_get, static_config

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


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll `check` until it holds; a reload is applied asynchronously after the signal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not after {timeout} s: {what}")


def reload_with(lb: Fastlb, text: str) -> None:
    lb.config.write_text(text.replace("{port}", str(lb.port)))
    lb.proc.send_signal(signal.SIGHUP)


def test_a_static_replica_added_to_the_file_serves_after_sighup(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    a1 = start_backend("echo", name="A1")
    a2 = start_backend("echo", name="A2")
    lb = start_fastlb(static_config(0, [("A1", a1.port)]).replace(":0", ":{port}"))
    assert served_by(lb) == {"A1"}
    # Added: the provider takes the new [[replicas.static]] entry.
    reload_with(lb, static_config(0, [("A1", a1.port), ("A2", a2.port)]).replace(":0", ":{port}"))
    wait_for(lambda: served_by(lb) == {"A1", "A2"}, "A2 serves its share")
    # Removed: A1's entry goes, every request reaches A2.
    reload_with(lb, static_config(0, [("A2", a2.port)]).replace(":0", ":{port}"))
    wait_for(lambda: served_by(lb) == {"A2"}, "only A2 serves")
    assert http_get(lb.port, "/r0")[0] == 200
