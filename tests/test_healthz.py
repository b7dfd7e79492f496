"""GET /healthz (fastlb/observe/healthz.py) through a real fastlb in front of real replicas:
answered by fastlb, never forwarded, 200 while a replica is up and 503 once none is."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from tests.conftest import ROOT, Backend, Fastlb, http_get, static_config, wait_for

StartFastlb = Callable[[str], Fastlb]
StartBackend = Callable[..., Backend]


def healthz(lb: Fastlb, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return http_get(lb.port, "/healthz", method=method)


def test_healthz_follows_the_replicas_and_is_never_forwarded(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    one = start_backend("echo", name="one")
    two = start_backend("echo", name="two")
    cfg = static_config(0, [("one", one.port), ("two", two.port)], paths=["/ok"])
    lb = start_fastlb(cfg.replace(":0", ":{port}"))
    wait_for(lambda: healthz(lb)[0] == 200, 10, "a replica up")
    wait_for(lambda: json.loads(healthz(lb)[2])["up"] == 2, 10, "both replicas up")
    status, headers, body = healthz(lb)
    assert status == 200
    assert json.loads(body) == {"status": "ok", "up": 2, "replicas": 2}
    assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    head = healthz(lb, "HEAD")
    assert head[0] == 200 and head[2] == b"" and head[1]["content-length"] == str(len(body))
    assert healthz(lb, "POST")[0] == 405
    # One replica gone: still routable.
    one.proc.kill()
    one.proc.wait()
    wait_for(lambda: json.loads(healthz(lb)[2])["up"] == 1, 15, "one replica marked down")
    assert healthz(lb)[0] == 200
    # None left: fastlb can route nowhere, and says so.
    two.proc.kill()
    two.proc.wait()
    wait_for(lambda: healthz(lb)[0] == 503, 15, "no replica up: 503")
    assert json.loads(healthz(lb)[2]) == {"status": "no replica up", "up": 0, "replicas": 2}
    # No replica ever saw /healthz (only fastlb's heartbeats and nothing else).
    for backend in (one, two):
        assert not [line for line in backend.requests() if "/healthz" in line], backend.requests()


def dockerfile_check() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (an exec-form JSON array after CMD)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("HEALTHCHECK ")]
    argv = json.loads(line.split(" CMD ", 1)[1])
    assert isinstance(argv, list) and all(isinstance(word, str) for word in argv)
    return argv


def test_the_image_healthcheck_reads_healthz(
    start_fastlb: StartFastlb, start_backend: StartBackend
) -> None:
    # No Docker engine in the suite: the image's check runs here, against a real fastlb on
    # another port, with the interpreter the image has (python3). Compose runs the same one.
    argv = dockerfile_check()
    assert f"      test: {json.dumps(['CMD', *argv])}" in (ROOT / "docker-compose.yml").read_text()
    one = start_backend("echo", name="one")
    lb = start_fastlb(static_config(0, [("one", one.port)]).replace(":0", ":{port}"))
    wait_for(lambda: healthz(lb)[0] == 200, 10, "a replica up")
    argv = [word.replace("5000", str(lb.port)) for word in argv]
    argv[0] = "/usr/bin/python3"

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10)

    result = check()
    assert result.returncode == 0 and result.stdout.startswith("200 "), result
    one.proc.kill()
    one.proc.wait()
    wait_for(lambda: healthz(lb)[0] == 503, 15, "no replica up")
    result = check()
    assert result.returncode == 1 and result.stdout.startswith("503 "), result
