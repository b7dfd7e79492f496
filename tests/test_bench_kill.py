"""bench.kill end to end at a small size: real fastlb, and real HAProxy in front of replicas the
bench supervises, each while replicas are SIGKILLed. The full size (64 and 256 connections, a
kill every 5 s for 30 s) is `python -m bench.kill --proxy all`; tests/test_faults.py keeps
fastlb's own zero-failure bound in the suite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import kill
from bench.peers import find_binary

_MISSING = [t for t in ("haproxy", "wrk") if find_binary(t) is None]


@pytest.mark.skipif(bool(_MISSING), reason=f"needs {', '.join(_MISSING)} (apt-get install)")
def test_haproxy_accepts_both_of_its_configs(tmp_path: Path) -> None:
    haproxy = find_binary("haproxy")
    assert haproxy is not None
    for retry_on in (False, True):
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(kill.haproxy_config(20000, {"Server1": 20001, "Server2": 20002}, retry_on))
        out = subprocess.run(
            [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=10, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert ("retry-on all-retryable-errors" in cfg.read_text()) is retry_on


@pytest.mark.skipif(bool(_MISSING), reason=f"needs {', '.join(_MISSING)} (apt-get install)")
@pytest.mark.parametrize("name", kill.PROXIES)
def test_a_short_run_kills_and_every_replica_comes_back(name: str) -> None:
    opts = (8, 4, 1.5, 2.0, 1)  # connections, seconds, interval, wrk timeout, wrk threads
    if name == "fastlb":
        result = kill.run(*opts)
        # fastlb's own bound, as in the suite's fault tests: not one failed GET.
        assert result.failed == 0, result
        assert result.metrics['fastlb_replicas{state="healthy"}'] == 3, result.metrics
    else:
        result = kill.run_haproxy(*opts, retry_on=name == "haproxy-retry-on")
    assert result.kills >= 2, result
    assert result.requests > 1000, result
    assert result.replicas_after == 3, result
