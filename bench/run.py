"""Benchmark fastlb against HAProxy and nginx: `python -m bench.run` (or `python bench/run.py`).

Why it is built this way:
- Fairness on a 2-core box: every proxy runs alone on CPU 0 (`taskset -c 0`), single-threaded
  or single-worker like fastlb; wrk and the three nginx backends share CPU 1. Each proxy is
  started fresh for each run and stopped by pid after it.
- Drift: proxies are interleaved (each round runs every proxy at every connection count, each
  round starting one proxy further along) and the table reports medians over the rounds, so a
  slow minute of the machine hits all alike and no proxy always runs first. HAProxy runs next
  to fastlb-httptools in every round, and each run is also divided by HAProxy's run of its
  round (`paired_table`): medians of different rounds can differ by the machine's drift.
- Cost, not just speed: proxy CPU µs per request comes from /proc utime+stime of the proxy's
  own processes, which stays meaningful when the client side, not the proxy, is the limit.
- Correctness: a proxy that answers fast but sends everything to one backend is not
  balancing; each backend's access log is counted per run and the spread is checked.

Output: a markdown table on stdout and in bench/results/latest.md, raw data in latest.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import (
    PROXIES,
    REPO_ROOT,
    Backends,
    ProxySpec,
    StartError,
    find_binary,
    proxy_specs,
    raise_fd_limit,
    start_backends,
)
from bench.proc import (
    CLK_TCK,
    ProcessRegistry,
    system_busy_ticks,
    tree_cpu_ticks,
    tree_sys_ticks,
)
from bench.report import (
    RunResult,
    SummaryRow,
    cpu_us_per_request,
    noise_note,
    paired_table,
    reference_of,
    render_markdown,
    spread_ok,
    summarize,
)
from bench.wrk import WrkError, WrkResult, parse_wrk_output, wrk_argv

__all__ = ["Options", "main", "parse_args"]

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Options:
    duration: int
    repeat: int
    connections: tuple[int, ...]
    only: tuple[str, ...]
    warmup: int
    threads: int
    min_share: float
    proxy_cpu: str | None
    client_cpu: str | None
    start_timeout: float
    python: str
    results_dir: Path
    keep_tmp: bool
    strict: bool


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text}")
    return values


def _select(names: Sequence[str]) -> tuple[str, ...]:
    """--only values: exact proxy names or prefixes ('fastlb' selects every fastlb variant,
    '+tls' suffixed ones too)."""
    if not names:
        return PROXIES
    wanted: set[str] = set()
    for item in names:
        for name in (n.strip() for n in item.split(",")):
            if not name:
                continue
            # An exact name is that proxy alone ("haproxy", not haproxy+tls too).
            hits = [name] if name in PROXIES else [p for p in PROXIES if p.startswith(name)]
            if not hits:
                raise SystemExit(f"--only: unknown proxy {name!r}; known: {', '.join(PROXIES)}")
            wanted.update(hits)
    return tuple(p for p in PROXIES if p in wanted)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark fastlb (httptools, h11) against HAProxy and nginx with wrk.",
    )
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians over them (default 3)")
    ap.add_argument(
        "--connections",
        type=_int_list,
        default=(64, 256),
        help="comma-separated wrk connection counts (default 64,256)",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these proxies (repeatable or comma-separated; prefixes ok): "
        f"{', '.join(PROXIES)}",
    )
    ap.add_argument(
        "--warmup", type=int, default=1, help="unmeasured wrk seconds before each run (0: none)"
    )
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument(
        "--min-share",
        type=float,
        default=0.05,
        help="spread check: least share of requests every backend must get (default 0.05)",
    )
    ap.add_argument("--proxy-cpu", default="0", help="CPU list for the proxy (taskset -c)")
    ap.add_argument("--client-cpu", default="1", help="CPU list for wrk and the backends")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument(
        "--start-timeout", type=float, default=10.0, help="seconds for a server to answer 200"
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m fastlb`")
    ap.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS,
        help="where latest.md / latest.json go (default bench/results)",
    )
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs for debugging")
    ap.add_argument(
        "--strict", action="store_true", help="exit non-zero if any proxy had to be skipped"
    )
    ns = ap.parse_args(argv)
    if ns.duration < 1 or ns.repeat < 1 or ns.warmup < 0 or ns.threads < 1:
        ap.error("--duration, --repeat and --threads must be >= 1, --warmup >= 0")
    pin = not ns.no_pin
    if pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("bench: no taskset or fewer than 2 CPUs: not pinning", file=sys.stderr)
        pin = False
    return Options(
        duration=ns.duration,
        repeat=ns.repeat,
        connections=tuple(ns.connections),
        only=_select(ns.only),
        warmup=ns.warmup,
        threads=ns.threads,
        min_share=ns.min_share,
        proxy_cpu=ns.proxy_cpu if pin else None,
        client_cpu=ns.client_cpu if pin else None,
        start_timeout=ns.start_timeout,
        python=ns.python,
        results_dir=ns.results_dir,
        keep_tmp=ns.keep_tmp,
        strict=ns.strict,
    )


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run_wrk(
    reg: ProcessRegistry,
    opts: Options,
    url: str,
    connections: int,
    duration: int,
    log_path: Path,
) -> WrkResult:
    """Run wrk to completion (stopped by pid if it overruns) and parse its result."""
    argv = wrk_argv(
        url,
        connections=connections,
        duration_s=duration,
        threads=opts.threads,
        pin_cpu=opts.client_cpu,
    )
    managed = reg.start("wrk", argv, log_path)
    try:
        code = managed.popen.wait(duration + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish in {duration + 30}s") from exc
    finally:
        reg.stop(managed)
    text = log_path.read_text(errors="replace")
    if code != 0:
        raise WrkError(f"wrk exited with {code}: {managed.log_tail()}")
    return parse_wrk_output(text)


class BackendsDied(RuntimeError):
    """The backends stopped mid-benchmark: stop, and report what was measured before."""


def _backends_gone(backends: Backends) -> str:
    tail = backends.managed.log_tail()
    code = backends.managed.popen.returncode
    return f"the nginx backends exited with {code}" + (f": {tail}" if tail else "")


def _kids() -> float:
    """CPU seconds of our reaped children (wrk runs)."""
    t = os.times()
    return t.children_user + t.children_system


def measure(
    reg: ProcessRegistry,
    opts: Options,
    spec: ProxySpec,
    backends: Backends,
    workdir: Path,
    connections: int,
    round_no: int,
) -> RunResult:
    """Start the proxy fresh, warm it, run wrk once, read CPU and spread, stop the proxy.

    Raises StartError if the proxy does not come up (the caller skips it from then on); any
    later breakage is recorded in the result's `failure`.
    """
    result = RunResult(proxy=spec.name, connections=connections, round=round_no)
    managed, port = spec.start(
        reg, workdir, backends, cpu=opts.proxy_cpu, timeout=opts.start_timeout
    )
    url = f"{spec.scheme}://127.0.0.1:{port}/"  # wrk speaks TLS to an https:// URL
    try:
        if opts.warmup > 0:
            run_wrk(reg, opts, url, connections, opts.warmup, workdir / "wrk-warmup.log")
        before = backends.offsets()
        # What else ran meanwhile: machine busy ticks minus ours (proxy, backends, and wrk,
        # which we reap, so it shows in our children's times).
        sys0, back0, kids0 = system_busy_ticks(), tree_cpu_ticks(backends.managed.pid), _kids()
        ticks0, sys_ticks0 = tree_cpu_ticks(managed.pid), tree_sys_ticks(managed.pid)
        t0 = time.monotonic()
        wrk = run_wrk(reg, opts, url, connections, opts.duration, workdir / "wrk.log")
        wall = time.monotonic() - t0
        if not managed.alive():
            raise WrkError(f"{spec.name} exited during the run: {managed.log_tail()}")
        if not backends.managed.alive():
            raise WrkError(_backends_gone(backends))
        ticks1, sys_ticks1 = tree_cpu_ticks(managed.pid), tree_sys_ticks(managed.pid)
        sys1, back1, kids1 = system_busy_ticks(), tree_cpu_ticks(backends.managed.pid), _kids()
        after = backends.offsets()
    except (WrkError, OSError) as exc:
        result.failure = str(exc)
        return result
    finally:
        reg.stop(managed)
    ticks = ticks1 - ticks0
    result.requests = wrk.requests
    result.duration_s = wrk.duration_s
    result.rps = wrk.rps
    result.p50_ms = wrk.p50_ms
    result.p99_ms = wrk.p99_ms
    result.cpu_ticks = ticks
    result.cpu_us_per_req = cpu_us_per_request(ticks, CLK_TCK, wrk.requests)
    result.sys_us_per_req = cpu_us_per_request(sys_ticks1 - sys_ticks0, CLK_TCK, wrk.requests)
    result.cpu_percent = 100.0 * ticks / CLK_TCK / wall if wall > 0 else math.nan
    ours = ticks + (back1 - back0) + (kids1 - kids0) * CLK_TCK
    other = max(0.0, (sys1 - sys0) - ours)
    result.other_cpu_percent = 100.0 * other / CLK_TCK / wall if wall > 0 else math.nan
    result.errors = wrk.errors
    result.spread = backends.counts_since(before, after)
    result.spread_ok = spread_ok(result.spread, opts.min_share)
    return result


def round_order(proxies: Sequence[str], round_no: int) -> list[str]:
    """The proxies in the order round `round_no` (from 1) runs them.

    Each round starts one further along, so that no proxy always runs first (on this VM the
    machine's speed drifts within a run, and the first run of a round followed a different
    proxy's heaviest load). HAProxy runs next to the first proxy listed (fastlb-httptools, the
    one the issue's target compares with it), before it in odd rounds and after it in even
    ones: the machine's speed drifts by up to 20% within minutes, and the round-by-round ratio
    of those two should carry as little of that as the order allows. The HTTPS round's pair
    (the first NAME+tls proxy and haproxy+tls) is kept together the same way.
    """
    pairs = []  # (the first proxy compared with a reference, that reference)
    for reference in dict.fromkeys(reference_of(p) for p in proxies):
        compared = [p for p in proxies if p != reference and reference_of(p) == reference]
        if reference in proxies and compared:
            pairs.append((compared[0], reference))
    if not pairs or len(proxies) < 3 or proxies[0] == pairs[0][1]:
        shift = (round_no - 1) % len(proxies) if proxies else 0
        return [*proxies[shift:], *proxies[:shift]]
    references = {reference for _, reference in pairs}
    others = [p for p in proxies if p not in references]
    shift = (round_no - 1) % len(others)
    order = [*others[shift:], *others[:shift]]
    for headline, reference in pairs:
        order.insert(order.index(headline) + (round_no % 2 == 0), reference)
    return order


def bench_loop(
    reg: ProcessRegistry,
    opts: Options,
    backends: Backends,
    tmp: Path,
    runs: list[RunResult],
    skipped: dict[str, str],
) -> None:
    """Round r: every proxy at every connection count; a proxy that fails to start is skipped
    for the rest of the benchmark with its reason.

    Appends to runs/skipped as it goes, so an interrupted benchmark still reports what it did.
    """
    specs = proxy_specs(opts.python)
    total = opts.repeat * len(opts.connections) * len(opts.only)
    n = 0
    for round_no in range(1, opts.repeat + 1):
        for conns in opts.connections:
            for name in round_order(opts.only, round_no):
                n += 1
                if name in skipped:
                    continue
                if not backends.managed.alive():
                    # Every later proxy would fail for a reason that is not its own.
                    raise BackendsDied(_backends_gone(backends))
                tag = f"[{n}/{total} round {round_no} c={conns}] {name}"
                workdir = tmp / f"{name}-r{round_no}-c{conns}"
                try:
                    res = measure(reg, opts, specs[name], backends, workdir, conns, round_no)
                except StartError as exc:
                    skipped[name] = f"start failed: {exc}"
                    _log(f"{tag}: SKIPPED ({exc})")
                    continue
                runs.append(res)
                if res.failure:
                    _log(f"{tag}: FAILED ({res.failure})")
                else:
                    _log(
                        f"{tag}: {res.rps:,.0f} req/s, p99 {res.p99_ms:.2f} ms, "
                        f"{res.cpu_us_per_req:.1f} µs CPU/req ({res.cpu_percent:.0f}% core), "
                        f"errors {sum(res.errors.values())}, spread "
                        f"{'ok' if res.spread_ok else 'FAILED'} {res.spread}; "
                        f"other processes {res.other_cpu_percent:.0f}% core"
                    )


def _version(argv: Sequence[str]) -> str:
    """First line a tool prints about its version (some print it on stderr or exit 1)."""
    try:
        out = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=10, cwd=REPO_ROOT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip()
    first = text.splitlines()[0].strip() if text else ""
    if out.returncode != 0 and not first.lower().startswith(("wrk", "haproxy", "nginx")):
        return "not runnable" + (f" ({text.splitlines()[-1].strip()})" if text else "")
    return first or "unknown"


def versions(opts: Options) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, flag in (("haproxy", "-v"), ("nginx", "-v"), ("wrk", "-v")):
        binary = find_binary(name)
        found[name] = _version([binary, flag]) if binary else "not installed"
    found["fastlb"] = _version([opts.python, "-m", "fastlb", "--version"])
    found["python"] = interpreter(opts.python)
    return found


# Run by fastlb's interpreter: its version, the executable a venv was made from, and whether
# CPython runs from a shared libpython mapped into the process.
_INTERPRETER_PROBE = (
    "import platform, sys; "
    "shared = any('libpython' in line for line in open('/proc/self/maps')); "
    "print(platform.python_version(), getattr(sys, '_base_executable', sys.executable), shared)"
)


def interpreter(python: str) -> str:
    """Which CPython fastlb runs on, and how it is built: the same fastlb costs more CPU on a
    CPython run from the shared libpython (README, "Which Python"), so a table made on one is
    not comparable with a table made on the other."""
    probe = _version([python, "-c", _INTERPRETER_PROBE])
    fields = probe.rsplit(" ", 2)
    if len(fields) != 3 or fields[2] not in ("True", "False"):
        return probe  # what went wrong, as _version put it
    version, executable, shared = fields
    linked = "from the shared libpython" if shared == "True" else "linked into the executable"
    return f"{version} ({executable}, {linked})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def preamble(opts: Options, vers: dict[str, str], started: str) -> list[str]:
    pinning = (
        f"proxy on CPU {opts.proxy_cpu}, wrk + nginx backends on CPU {opts.client_cpu}"
        if opts.proxy_cpu is not None
        else "not pinned"
    )
    conns = ",".join(str(c) for c in opts.connections)
    return [
        f"## fastlb benchmark — {started}",
        "",
        f"- machine: {os.cpu_count()} CPUs, {_cpu_model()}; {pinning}",
        f"- load: wrk -t{opts.threads} -c{{{conns}}} -d{opts.duration}s --latency "
        f"-s bench/paths.lua (4096 distinct paths), {opts.warmup}s unmeasured warmup, "
        f"{opts.repeat} interleaved round(s) (each starting one proxy further along, HAProxy "
        "next to the first proxy, before it and after it in turn), "
        "each proxy started fresh per run",
        "- versions: " + "; ".join(f"{k}: {v}" for k, v in vers.items()),
    ]


def write_results(
    opts: Options,
    markdown: str,
    runs: Sequence[RunResult],
    rows: Sequence[SummaryRow],
    skipped: dict[str, str],
    meta: dict[str, Any],
) -> None:
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    (opts.results_dir / "latest.md").write_text(markdown)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    data = {
        "meta": meta,
        "runs": [r.to_json() for r in runs],
        "summary": [clean(asdict(r)) for r in rows],
        "skipped": skipped,
    }
    (opts.results_dir / "latest.json").write_text(json.dumps(data, indent=2) + "\n")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into an exception so every `finally` runs and every process is stopped."""
    raise SystemExit(128 + signum)


def exit_code(rows: Sequence[SummaryRow], skipped: dict[str, str], strict: bool) -> int:
    """2: nothing measured; 1: a spread check failed, a run broke or had errors (or, with
    --strict, a proxy was skipped); 0 otherwise."""
    if not any(r.runs for r in rows):
        return 2
    bad = any(not r.spread_ok or r.failures or r.errors for r in rows)
    return 1 if bad or (strict and skipped) else 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    for tool in ("wrk", "nginx"):
        if find_binary(tool) is None:
            _log(f"{tool} not found: apt-get install wrk nginx-light haproxy")
            return 2
    raise_fd_limit()
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Even if started with SIGINT ignored (e.g. `cmd &` in a script): Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runs: list[RunResult] = []
    skipped: dict[str, str] = {}
    interrupted: str | None = None  # why the benchmark stopped early, if it did
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    vers = versions(opts)
    tmp = Path(tempfile.mkdtemp(prefix="fastlb-bench-"))
    # nginx workers run as an unprivileged user when we are root: let them reach their prefix.
    tmp.chmod(0o755)
    try:
        with ProcessRegistry() as reg:
            backends = start_backends(reg, tmp, cpu=opts.client_cpu, timeout=opts.start_timeout)
            _log(f"backends up: {backends.ports}; work dir {tmp}")
            bench_loop(reg, opts, backends, tmp, runs, skipped)
    except StartError as exc:
        _log(f"cannot start the backends: {exc}")
        return 2
    except KeyboardInterrupt:
        _log("interrupted; all processes stopped; reporting the runs done so far")
        interrupted = "Interrupted"
    except BackendsDied as exc:
        _log(f"{exc}; all processes stopped; reporting the runs done so far")
        interrupted = f"Aborted ({exc})"
    finally:
        if opts.keep_tmp:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(runs, opts.only)
    markdown = render_markdown(
        rows,
        skipped,
        opts.connections,
        proxy_order=opts.only,
        preamble=preamble(opts, vers, started),
        notes=[note for note in (paired_table(runs, opts.only), noise_note(runs)) if note],
    )
    meta: dict[str, Any] = {
        "started": started,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "versions": vers,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "clk_tck": CLK_TCK,
    }
    if interrupted:
        markdown = f"**{interrupted}: partial results.**\n\n" + markdown
        meta["stopped_early"] = interrupted
    write_results(opts, markdown, runs, rows, skipped, meta)
    sys.stdout.write(markdown)
    sys.stdout.flush()
    _log(f"wrote {opts.results_dir / 'latest.md'} and latest.json")
    if interrupted == "Interrupted":
        return 130
    return 1 if interrupted else exit_code(rows, skipped, opts.strict)


if __name__ == "__main__":
    sys.exit(main())
