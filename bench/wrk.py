"""wrk: the command line the harness runs and the parsing of what it prints.

Why: the numbers of the benchmark come from here, so parsing is pure and unit-tested. The
primary source is the JSON line printed by bench/paths.lua's done(); wrk's human output
(`Requests/sec:` and the `--latency` distribution) is a fallback so a run whose script output
was lost still yields req/s and p99.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "JSON_MARKER",
    "PATHS_LUA",
    "WrkError",
    "WrkResult",
    "parse_duration_us",
    "parse_wrk_output",
    "wrk_argv",
]

JSON_MARKER = "BENCH_WRK_JSON "
PATHS_LUA = Path(__file__).resolve().parent / "paths.lua"
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


class WrkError(RuntimeError):
    """wrk's output held no result we could read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run, normalised to requests, seconds and milliseconds."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def wrk_argv(
    url: str,
    *,
    connections: int,
    duration_s: int,
    threads: int = 1,
    script: Path = PATHS_LUA,
    timeout_s: float = 5.0,
    pin_cpu: str | None = "1",
) -> list[str]:
    """The wrk command, pinned with taskset unless pin_cpu is None."""
    argv = [] if pin_cpu is None else ["taskset", "-c", pin_cpu]
    argv += [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{_secs(duration_s)}",
        f"--timeout={_secs(timeout_s)}",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    return argv


def _secs(value: float) -> str:
    """wrk parses durations as whole seconds (with an optional unit), so round up to >= 1 s."""
    return f"{max(1, math.ceil(value))}s"


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_duration_us(text: str) -> float:
    """'812.00us', '1.25ms', '2.00s', '1.00m' -> microseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_US[m.group(2)]


def _from_json(line: str) -> WrkResult:
    data = json.loads(line)
    lat = data["latency_us"]
    errors = {k: int(data["errors"].get(k, 0)) for k in ERROR_KINDS}
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_us"]) / 1e6,
        p50_ms=float(lat["p50"]) / 1e3,
        p99_ms=float(lat["p99"]) / 1e3,
        mean_ms=float(lat["mean"]) / 1e3,
        max_ms=float(lat["max"]) / 1e3,
        errors=errors,
    )


def _from_text(text: str) -> WrkResult:
    """Fallback: wrk's human-readable output with --latency."""
    m_req = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", text, re.M)
    if m_req is None:
        raise WrkError("no 'N requests in T' line in wrk output")
    requests = int(m_req.group(1))
    duration_us = parse_duration_us(m_req.group(2))
    pct: dict[str, float] = {}
    for m in re.finditer(r"^\s*(50|75|90|99)%\s+([0-9.]+\w+)\s*$", text, re.M):
        pct[m.group(1)] = parse_duration_us(m.group(2)) / 1e3
    if "99" not in pct:
        raise WrkError("no 99% latency line in wrk output (was --latency given?)")
    m_lat = re.search(r"^\s*Latency\s+([0-9.]+\w+)\s+([0-9.]+\w+)\s+([0-9.]+\w+)", text, re.M)
    mean_ms = parse_duration_us(m_lat.group(1)) / 1e3 if m_lat else float("nan")
    max_ms = parse_duration_us(m_lat.group(3)) / 1e3 if m_lat else float("nan")
    errors = dict.fromkeys(ERROR_KINDS, 0)
    m_sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if m_sock:
        for kind, val in zip(("connect", "read", "write", "timeout"), m_sock.groups(), strict=True):
            errors[kind] = int(val)
    m_status = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m_status:
        errors["status"] = int(m_status.group(1))
    return WrkResult(
        requests=requests,
        duration_s=duration_us / 1e6,
        p50_ms=pct.get("50", float("nan")),
        p99_ms=pct["99"],
        mean_ms=mean_ms,
        max_ms=max_ms,
        errors=errors,
    )


def parse_wrk_output(text: str) -> WrkResult:
    """The result of one wrk run: from the paths.lua JSON line if present, else from the text."""
    lines: Sequence[str] = text.splitlines()
    for line in reversed(lines):
        if line.startswith(JSON_MARKER):
            try:
                return _from_json(line[len(JSON_MARKER) :])
            except (ValueError, KeyError, TypeError) as exc:
                raise WrkError(f"bad JSON line from paths.lua: {exc}") from exc
    return _from_text(text)
