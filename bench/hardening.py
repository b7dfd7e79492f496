"""The hostile-input corpus against fastlb (both parsers), HAProxy and nginx, side by side.

    python -m bench.hardening [--proxies fastlb-httptools,fastlb-h11,haproxy,nginx]
                              [--only SUBSTRING] [--differences] [--json FILE]

Each proxy is started fresh (bench/peers.py's builders and conf/ templates, timeouts shortened
as below) in front of tests/recorder.py, the strict recording replica, and gets every case of
tests/hostile/corpus.py on a fresh connection (tests/hostile/exchange.py plays and records
them, exactly as tests/test_hostile.py does for fastlb).

How a case is judged, for every proxy alike. A case FAILS when the proxy did something that is
a defect whichever policy it follows (`exchange.judge_safety`):
- desync: the replica framed a different number of requests than the client got answers
  from the replica (a request smuggled in, or an answer lost or given to the wrong request);
  an HTTP/0.9 answer (the replica's body without a head, as nginx serves 0.9) counts as an
  answer, and answers dropped after the client half-closed are an abort, not a desync;
- unvalidated bytes: the replica got bytes its strict parser refuses (a lenient replica would
  read them its own way); a body cut off by the client may reach it as such, nothing else;
  more than one Host field reaching the replica also counts (routing is ambiguous);
- hang: neither an answer nor a close within 2 s of the last byte sent (timeouts are set to
  1 s, so a cut-off request must be answered or closed well within that);
- a valid request (one the policy forwards) answered with a 5xx, not answered at all, or its
  body altered on the way;
- the proxy no longer serves: a good request on a new connection after the case fails.
A case PASSES when the outcome is exactly fastlb's policy (/work/coord/policy.md; the
statuses, the requests the replica framed, the close: `exchange.judge_policy`). Anything else
DIFFERS: a normalisation choice where RFC 9112/9110 allow several (a 400 where fastlb
forwards, an invalid field name dropped instead of refused, a request-target passed on as
received, a 408 for a 400, HTTP/2 spoken to an h2 preface...). Differences are counted, not
failures; `--differences` lists them.

The only changes to the peers' bench configs: fastlb `header_timeout = 1.0`,
`backend_timeout = 1.5`; HAProxy `timeout http-request 1s`, `timeout client 1s`,
`timeout server 1500ms`; nginx `client_header_timeout 1s`, `client_body_timeout 1s`,
`proxy_read_timeout 1500ms`, `proxy_set_header Host $http_host` (the client's Host, as
fastlb and HAProxy forward it, instead of the upstream's name) and `max_fails=0` on its
servers (a 502 from the recorder refusing a request would take them all out for 10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.peers import (
    REPO_ROOT,
    Backends,
    Builder,
    ProxySpec,
    StartError,
    find_binary,
    free_ports,
    proxy_specs,
    wait_http_ok,
)
from bench.proc import ProcessRegistry
from tests.hostile.corpus import CASES, CLASSES, Case
from tests.hostile.exchange import Observation, judge_policy, judge_safety, run_corpus

DEFAULT_PROXIES = ("fastlb-httptools", "fastlb-h11", "haproxy", "nginx")
RECORDER = REPO_ROOT / "tests" / "recorder.py"
PASS, DIFFERS, FAIL = "pass", "differs", "FAIL"


def fastlb_timeouts(conf: str) -> str:
    """fastlb's bench config with the short timeouts of the corpus (see the docstring)."""
    return conf.replace("[proxy]\n", "[proxy]\nheader_timeout = 1.0\nbackend_timeout = 1.5\n", 1)


def haproxy_timeouts(conf: str) -> str:
    for old, new in (
        ("timeout http-request 10s", "timeout http-request 1s"),
        ("timeout client 30s", "timeout client 1s"),
        ("timeout server 30s", "timeout server 1500ms"),
    ):
        if old not in conf:
            raise StartError(f"conf/haproxy.cfg.tmpl has no `{old}` to shorten")
        conf = conf.replace(old, new)
    return conf


def nginx_config(conf: str) -> str:
    for old, new in (
        (
            "server_tokens off;",
            "server_tokens off;\n    client_header_timeout 1s;\n    client_body_timeout 1s;",
        ),
        ("proxy_read_timeout 30s;", "proxy_read_timeout 1500ms;"),
        # The client's Host, as fastlb and HAProxy pass it (nginx's default is the upstream's
        # name), so that what the replica sees can be compared.
        (
            'proxy_set_header Connection "";',
            'proxy_set_header Connection "";\n            proxy_set_header Host $http_host;',
        ),
    ):
        if old not in conf:
            raise StartError(f"conf/nginx-proxy.conf.tmpl has no `{old}` to change")
        conf = conf.replace(old, new, 1)
    # One 502 (the recorder refusing what nginx sent) would otherwise mark every server down
    # for 10 s (max_fails=1) and fail the cases after it.
    return re.sub(r"(server 127\.0\.0\.1:\d+);", r"\1 max_fails=0;", conf)


def with_short_timeouts(spec: ProxySpec) -> ProxySpec:
    """The same proxy, its generated config passed through the matching *_timeouts."""
    edit = (
        fastlb_timeouts
        if spec.name.startswith("fastlb")
        else haproxy_timeouts
        if spec.name == "haproxy"
        else nginx_config
    )
    inner: Builder = spec.build

    def build(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
        argv, conf, name = inner(prefix, port, backends)
        return argv, edit(conf), name

    return ProxySpec(spec.name, build, spec.env)


def classify(case: Case, obs: Observation) -> tuple[str, list[str]]:
    """(FAIL, why) for a defect; (pass, []) for fastlb's policy exactly; else (differs, how)."""
    failures = judge_safety(case, obs)
    if failures:
        return FAIL, failures
    differences = judge_policy(case, obs)
    return (DIFFERS, differences) if differences else (PASS, [])


@dataclass(slots=True)
class ProxyRun:
    name: str
    verdicts: dict[str, tuple[str, list[str]]]  # case name -> (verdict, reasons)
    summaries: dict[str, str]  # case name -> Observation.summary()
    error: str | None = None  # why it could not run at all
    seconds: float = 0.0


def format_table(runs: Sequence[ProxyRun], cases: Sequence[Case]) -> str:
    """Per class, per proxy: pass / differs / FAIL counts (FAIL: see the module docstring)."""
    classes = [c for c in CLASSES if any(case.cls == c for case in cases)]
    width = max(len(r.name) for r in runs) if runs else 10
    width = max(width, len("pass/diff/FAIL"))
    head = f"{'class':<20} {'cases':>5}  " + "  ".join(f"{r.name:>{width}}" for r in runs)
    sub = f"{'':<20} {'':>5}  " + "  ".join(f"{'pass/diff/FAIL':>{width}}" for _ in runs)
    lines = [head, sub, "-" * len(head)]
    for cls in [*classes, "total"]:
        names = [c.name for c in cases if cls in ("total", c.cls)]
        cells = []
        for run in runs:
            if run.error is not None:
                cells.append(f"{'not run':>{width}}")
                continue
            got = [run.verdicts[n][0] for n in names if n in run.verdicts]
            cell = f"{got.count(PASS)}/{got.count(DIFFERS)}/{got.count(FAIL)}"
            cells.append(f"{cell:>{width}}")
        if cls == "total":
            lines.append("-" * len(head))
        lines.append(f"{cls:<20} {len(names):>5}  " + "  ".join(cells))
    return "\n".join(lines)


def format_cases(runs: Sequence[ProxyRun], cases: Sequence[Case], verdict: str = FAIL) -> str:
    """Every case where some proxy has `verdict`, with what each proxy did."""
    out: list[str] = []
    for case in cases:
        if not any(r.verdicts.get(case.name, ("",))[0] == verdict for r in runs):
            continue
        out.append(f"{case.name} [{case.cls}] ({case.source})")
        for run in runs:
            if case.name not in run.verdicts:
                continue
            got, reasons = run.verdicts[case.name]
            detail = "; ".join(reasons) if reasons else run.summaries.get(case.name, "")
            out.append(f"    {run.name:<18} {got:<7} {detail[:300]}")
    return "\n".join(out) if out else "(none)"


def start_recorder(reg: ProcessRegistry, workdir: Path) -> tuple[Backends, Path]:
    """The recorder as all three bench backends (it answers X-Served-By: b1, as peers.py's
    start check wants a backend's name)."""
    (port,) = free_ports(1)
    log = workdir / "recorder.jsonl"
    argv = [sys.executable, str(RECORDER), "--port", str(port), "--log", str(log), "--name", "b1"]
    managed = reg.start("recorder", argv, workdir / "recorder.out", cwd=REPO_ROOT)
    wait_http_ok(port, managed, 10.0)
    backends = Backends(managed=managed, ports={"b1": port, "b2": port, "b3": port}, logs={})
    return backends, log


def run_proxy(
    reg: ProcessRegistry,
    spec: ProxySpec,
    backends: Backends,
    log: Path,
    workdir: Path,
    cases: Sequence[Case],
) -> ProxyRun:
    start = time.monotonic()
    try:
        managed, port = with_short_timeouts(spec).start(
            reg, workdir / spec.name, backends, cpu=None, timeout=30.0
        )
    except StartError as exc:
        return ProxyRun(spec.name, {}, {}, error=str(exc))
    try:
        observed = run_corpus(port, log, cases)
    finally:
        reg.stop(managed)
    verdicts = {c.name: classify(c, observed[c.name]) for c in cases}
    summaries = {name: obs.summary() for name, obs in observed.items()}
    return ProxyRun(spec.name, verdicts, summaries, seconds=time.monotonic() - start)


def select(cases: Iterable[Case], only: str | None) -> list[Case]:
    return [c for c in cases if only is None or only in c.name or only == c.cls]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--proxies", default=",".join(DEFAULT_PROXIES))
    parser.add_argument("--only", help="cases whose name contains this, or a class name")
    parser.add_argument("--differences", action="store_true", help="also list differences")
    parser.add_argument("--json", type=Path, help="write every verdict to this file")
    args = parser.parse_args(argv)
    specs = proxy_specs()
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown proxies {unknown}; known: {', '.join(specs)}")
    cases = select(CASES, args.only)
    runs: list[ProxyRun] = []
    with tempfile.TemporaryDirectory(prefix="hardening-") as tmp, ProcessRegistry() as reg:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)  # nginx's workers (nobody) write request bodies under it
        backends, log = start_recorder(reg, workdir)
        for name in names:
            if name in ("haproxy", "nginx") and find_binary(name) is None:
                runs.append(ProxyRun(name, {}, {}, error=f"{name} not installed"))
                continue
            print(f"{name}: {len(cases)} cases ...", file=sys.stderr, flush=True)
            run = run_proxy(reg, specs[name], backends, log, workdir, cases)
            runs.append(run)
            if run.error:
                print(f"{name}: not run: {run.error}", file=sys.stderr)
            else:
                print(f"{name}: done in {run.seconds:.1f} s", file=sys.stderr)
    print(
        f"Hostile-input corpus: {len(cases)} cases, pass = fastlb's policy exactly, "
        "diff = another normalisation, FAIL = a defect for any proxy (see bench/hardening.py)\n"
    )
    print(format_table(runs, cases))
    print("\nCases where a proxy FAILS:")
    print(format_cases(runs, cases, FAIL))
    if args.differences:
        print("\nCases where a proxy differs from fastlb's policy:")
        print(format_cases(runs, cases, DIFFERS))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    r.name: {
                        n: {"verdict": v, "why": w, "observed": r.summaries[n]}
                        for n, (v, w) in r.verdicts.items()
                    }
                    for r in runs
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
