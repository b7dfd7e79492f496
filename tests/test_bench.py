"""Tests of the benchmark harness (bench/).

Why: the benchmark's numbers are quoted to compare fastlb with HAProxy and nginx, so the parts
that turn raw output into those numbers (wrk output, /proc stat lines, medians, ratios, the
spread rule, the table) are tested without servers; and one short real run against HAProxy
checks that the harness still starts, measures and stops everything.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench.peers import (
    BACKEND_NAMES,
    REPO_ROOT,
    fastlb_toml,
    find_binary,
    haproxy_cfg,
    haproxy_maxconn,
    render_template,
)
from bench.proc import ProcStat, parse_proc_stat, parse_system_busy, tree_pids
from bench.report import (
    RunResult,
    cpu_us_per_request,
    noise_note,
    paired_table,
    reference_of,
    render_markdown,
    spread_ok,
    summarize,
)
from bench.tls import TlsFiles, certificate
from bench.wrk import WrkError, parse_duration_us, parse_wrk_output, wrk_argv

WRK_TEXT = """\
Running 1s test @ http://127.0.0.1:52917/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   191.75us   67.13us   1.90ms   92.95%
    Req/Sec    40.72k   598.89    41.65k    60.00%
  Latency Distribution
     50%  184.00us
     75%  208.00us
     90%  237.00us
     99%    1.35ms
  40436 requests in 1.00s, 5.71MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  40415.23
Transfer/sec:      5.70MB
"""

WRK_JSON_LINE = (
    'BENCH_WRK_JSON {"duration_us":2000000,"requests":50000,"bytes":5984528,'
    '"errors":{"connect":0,"read":1,"write":0,"status":0,"timeout":0},'
    '"latency_us":{"min":62,"mean":191.7,"stdev":67.1,"max":1902,'
    '"p50":184,"p90":237,"p99":1352,"p999":1805}}'
)


# --- wrk -------------------------------------------------------------------------------------


def test_wrk_json_line_wins_over_text() -> None:
    res = parse_wrk_output(WRK_TEXT + WRK_JSON_LINE + "\n")
    assert res.requests == 50000
    assert res.duration_s == pytest.approx(2.0)
    assert res.rps == pytest.approx(25000.0)
    assert res.p99_ms == pytest.approx(1.352)
    assert res.p50_ms == pytest.approx(0.184)
    assert res.errors == {"connect": 0, "read": 1, "write": 0, "status": 0, "timeout": 0}
    assert res.error_count == 1


def test_wrk_text_fallback() -> None:
    res = parse_wrk_output(WRK_TEXT)
    assert res.requests == 40436
    assert res.duration_s == pytest.approx(1.0)
    assert res.p99_ms == pytest.approx(1.35)
    assert res.p50_ms == pytest.approx(0.184)
    assert res.mean_ms == pytest.approx(0.19175)
    assert res.max_ms == pytest.approx(1.90)
    assert res.errors == {"connect": 0, "read": 2, "write": 0, "status": 7, "timeout": 3}


def test_wrk_garbage_is_an_error() -> None:
    with pytest.raises(WrkError):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(WrkError):
        parse_wrk_output("BENCH_WRK_JSON {not json}\n")
    # Text without --latency has no p99.
    no_latency = "\n".join(ln for ln in WRK_TEXT.splitlines() if "%  " not in ln)
    with pytest.raises(WrkError):
        parse_wrk_output(no_latency)


@pytest.mark.parametrize(
    ("text", "us"),
    [("812.00us", 812.0), ("1.25ms", 1250.0), ("2.00s", 2e6), ("1.00m", 60e6)],
)
def test_parse_duration_us(text: str, us: float) -> None:
    assert parse_duration_us(text) == pytest.approx(us)


def test_wrk_argv_pins_and_rounds_durations() -> None:
    argv = wrk_argv("http://127.0.0.1:1/", connections=64, duration_s=10, pin_cpu="1")
    assert argv[:3] == ["taskset", "-c", "1"]
    assert "-c64" in argv and "-d10s" in argv and "--latency" in argv and "-t1" in argv
    assert argv[-1] == "http://127.0.0.1:1/"
    assert argv[argv.index("-s") + 1].endswith("paths.lua")
    assert wrk_argv("u", connections=1, duration_s=0, pin_cpu=None)[0] == "wrk"
    assert "-d1s" in wrk_argv("u", connections=1, duration_s=0, pin_cpu=None)


# --- /proc -----------------------------------------------------------------------------------


def _stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int) -> str:
    # Fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
    rest = f"S {ppid} 1 1 0 -1 4194560 10 0 0 0 {utime} {stime} 3 4 20 0 1 0 12345 0 0"
    return f"{pid} ({comm}) {rest}\n"


def test_parse_proc_stat_fields() -> None:
    st = parse_proc_stat(_stat_line(42, "nginx", 7, 150, 50))
    assert (st.pid, st.comm, st.state, st.ppid) == (42, "nginx", "S", 7)
    assert (st.utime, st.stime, st.cutime, st.cstime, st.starttime) == (150, 50, 3, 4, 12345)
    assert st.own_ticks == 200
    assert st.tree_ticks == 207
    assert st.tree_sys_ticks == 54  # stime + cstime


def test_parse_proc_stat_comm_with_spaces_and_parens() -> None:
    st = parse_proc_stat(_stat_line(9, "we (ird) name", 1, 5, 6))
    assert st.comm == "we (ird) name"
    assert (st.ppid, st.utime, st.stime) == (1, 5, 6)


def test_parse_proc_stat_rejects_truncated() -> None:
    with pytest.raises(ValueError):
        parse_proc_stat("1 (x) S 0 1")


def test_parse_proc_stat_real_self() -> None:
    st = parse_proc_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert st.pid == os.getpid()
    assert st.ppid == os.getppid()


def test_tree_pids_follows_parent_links() -> None:
    def mk(pid: int, ppid: int) -> ProcStat:
        return ProcStat(pid, "p", "S", ppid, 0, 0, 0, 0, 0)

    stats = {p.pid: p for p in [mk(10, 1), mk(11, 10), mk(12, 10), mk(13, 11), mk(20, 1)]}
    pids = tree_pids(10, stats)
    assert pids[0] == 10
    assert sorted(pids) == [10, 11, 12, 13]
    assert tree_pids(99, stats) == []


def test_parse_system_busy() -> None:
    text = "cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 50 2 25 500 3 0 1 1 0 0\n"
    assert parse_system_busy(text) == 100 + 5 + 50 + 1 + 2 + 3
    with pytest.raises(ValueError):
        parse_system_busy("intr 1 2 3\n")


# --- numbers and table -----------------------------------------------------------------------


def test_cpu_us_per_request() -> None:
    assert cpu_us_per_request(100, 100, 50_000) == pytest.approx(20.0)  # 1 s / 50k requests
    assert math.isnan(cpu_us_per_request(5, 100, 0))


def test_spread_rule() -> None:
    assert spread_ok({"b1": 30, "b2": 33, "b3": 37}, 0.05)
    assert not spread_ok({"b1": 100, "b2": 0, "b3": 0}, 0.05)
    assert not spread_ok({"b1": 98, "b2": 1, "b3": 1}, 0.05)
    assert not spread_ok({"b1": 0, "b2": 0, "b3": 0}, 0.05)
    assert not spread_ok({}, 0.05)


def _run(proxy: str, conns: int, rnd: int, rps: float, p99: float, cpu: float) -> RunResult:
    return RunResult(
        proxy=proxy,
        connections=conns,
        round=rnd,
        requests=int(rps * 10),
        duration_s=10.0,
        rps=rps,
        p99_ms=p99,
        cpu_us_per_req=cpu,
        cpu_percent=95.0,
        other_cpu_percent=1.0,
        errors={"read": 0},
        spread={"b1": 10, "b2": 11, "b3": 12},
        spread_ok=True,
    )


def test_summarize_medians_and_ratios() -> None:
    runs = [
        _run("haproxy", 64, 1, 40_000, 2.0, 20.0),
        _run("haproxy", 64, 2, 50_000, 3.0, 22.0),
        _run("haproxy", 64, 3, 60_000, 9.0, 24.0),
        _run("fastlb-httptools", 64, 1, 10_000, 4.0, 80.0),
        _run("fastlb-httptools", 64, 2, 25_000, 6.0, 88.0),
        _run("fastlb-httptools", 64, 3, 12_500, 5.0, 77.0),
    ]
    rows = summarize(runs, ["fastlb-httptools", "haproxy"])
    assert [r.proxy for r in rows] == ["fastlb-httptools", "haproxy"]
    fast, ha = rows
    assert (ha.rps, ha.p99_ms, ha.cpu_us_per_req) == (50_000, 3.0, 22.0)
    assert (fast.rps, fast.p99_ms, fast.cpu_us_per_req) == (12_500, 5.0, 80.0)
    assert fast.rps_ratio == pytest.approx(0.25)
    assert fast.p99_ratio == pytest.approx(5.0 / 3.0)
    assert fast.cpu_ratio == pytest.approx(80.0 / 22.0)
    assert ha.rps_ratio == pytest.approx(1.0)
    assert fast.spread == {"b1": 30, "b2": 33, "b3": 36}
    assert fast.spread_ok and fast.runs == 3


def test_the_https_round_is_divided_by_haproxy_over_tls() -> None:
    """NAME+tls rows divide by haproxy+tls, in the table and round by round; the plain rows
    still by plain HAProxy."""
    assert (reference_of("fastlb-httptools+tls"), reference_of("fastlb-httptools")) == (
        "haproxy+tls",
        "haproxy",
    )
    runs = [
        _run("haproxy", 64, 1, 50_000, 2.0, 20.0),
        _run("fastlb-httptools", 64, 1, 40_000, 3.0, 25.0),
        _run("haproxy+tls", 64, 1, 30_000, 3.0, 30.0),
        _run("fastlb-httptools+tls", 64, 1, 15_000, 6.0, 60.0),
    ]
    order = ["fastlb-httptools", "haproxy", "fastlb-httptools+tls", "haproxy+tls"]
    rows = {r.proxy: r for r in summarize(runs, order)}
    assert rows["fastlb-httptools"].rps_ratio == pytest.approx(0.8)
    assert rows["fastlb-httptools+tls"].rps_ratio == pytest.approx(0.5)
    assert rows["fastlb-httptools+tls"].cpu_ratio == pytest.approx(2.0)
    assert rows["haproxy+tls"].rps_ratio == pytest.approx(1.0)
    lines = paired_table(runs, order).splitlines()
    assert lines[4:] == [
        "| fastlb-httptools | 64 | 0.80x (0.80) | 1.25x (1.25) |",
        "| fastlb-httptools+tls | 64 | 0.50x (0.50) | 2.00x (2.00) |",
    ]
    # The HTTPS round alone (--only fastlb-httptools+tls,haproxy+tls) has its ratios too.
    alone = summarize(runs[2:], order[2:])
    assert alone[0].rps_ratio == pytest.approx(0.5)


def test_summarize_without_haproxy_has_no_ratio_and_failed_runs_are_kept_out() -> None:
    bad = RunResult(proxy="nginx", connections=64, round=2, failure="nginx exited")
    rows = summarize([_run("nginx", 64, 1, 30_000, 2.0, 20.0), bad], ["nginx"])
    (row,) = rows
    assert row.runs == 1 and row.rps == 30_000
    assert math.isnan(row.rps_ratio)
    assert row.failures == ("nginx exited",)


def test_summarize_spread_fails_if_any_run_failed_it() -> None:
    one = _run("nginx", 64, 1, 1.0, 1.0, 1.0)
    two = _run("nginx", 64, 2, 1.0, 1.0, 1.0)
    two.spread, two.spread_ok = {"b1": 33, "b2": 0, "b3": 0}, False
    (row,) = summarize([one, two], ["nginx"])
    assert not row.spread_ok


def test_render_markdown_rows_ratios_and_skips() -> None:
    runs = [
        _run("haproxy", 64, 1, 50_000, 2.0, 20.0),
        _run("nginx", 64, 1, 45_000, 2.5, 25.0),
        _run("haproxy", 256, 1, 40_000, 8.0, 22.0),
        _run("nginx", 256, 1, 44_000, 7.0, 21.0),
    ]
    order = ["fastlb-httptools", "haproxy", "nginx"]
    rows = summarize(runs, order)
    md = render_markdown(
        rows,
        {"fastlb-httptools": "start failed: boom | with a pipe\nand a newline"},
        [64, 256],
        proxy_order=order,
        preamble=["## title"],
        notes=[noise_note(runs)],
    )
    lines = md.splitlines()
    assert lines[0] == "## title"
    table = [ln for ln in lines if ln.startswith("|")]
    assert table[0].startswith("| proxy | conns | req/s |")
    body = table[2:]
    assert len(body) == 5
    # Skipped proxy first (run order), on one line, pipe escaped.
    assert body[0].startswith("| fastlb-httptools | 64,256 |")
    assert "SKIPPED: start failed: boom \\| with a pipe and a newline" in body[0]
    assert body[1].startswith("| haproxy | 64 | 50,000 | 1.00x | 2.00 | 1.00x | 20.0 | 1.00x |")
    assert body[3].startswith("| nginx | 64 | 45,000 | 0.90x | 2.50 | 1.25x | 25.0 | 1.25x |")
    assert body[4].startswith("| nginx | 256 | 44,000 | 1.10x | 7.00 | 0.88x | 21.0 | 0.95x |")
    assert all(ln.count(" | ") == table[0].count(" | ") for ln in body[1:])
    assert "ok 30/33/36% (b1 10, b2 11, b3 12)" in body[1]
    assert "median 1% (max 1%)" in md and "WARNING" not in md


def test_paired_table_divides_within_each_round() -> None:
    runs = [
        _run("haproxy", 64, 1, 40_000, 2.0, 20.0),
        _run("haproxy", 64, 2, 80_000, 3.0, 10.0),
        _run("haproxy", 64, 3, 50_000, 9.0, 16.0),
        _run("fastlb-httptools", 64, 1, 36_000, 4.0, 22.0),
        _run("fastlb-httptools", 64, 2, 76_000, 6.0, 11.0),
        # HAProxy's run of round 3 pairs with nothing: this one failed.
        RunResult(proxy="fastlb-httptools", connections=64, round=3, failure="it died"),
        _run("nginx", 256, 1, 1.0, 1.0, 1.0),  # no HAProxy run at 256 to divide by
    ]
    lines = paired_table(runs, ["fastlb-httptools", "haproxy", "nginx"]).splitlines()
    assert lines[2] == "| proxy | conns | req/s ÷ HAProxy | CPU µs/req ÷ HAProxy |"
    # Rounds 1 and 2: 0.90 and 0.95 (median 0.925); CPU 1.10 and 1.10. The ratio of medians
    # would say 56,000 / 50,000 = 1.12x: HAProxy's median is round 3's, fastlb has none there.
    assert lines[4:] == ["| fastlb-httptools | 64 | 0.93x (0.90, 0.95) | 1.10x (1.10, 1.10) |"]
    assert paired_table([_run("nginx", 64, 1, 1.0, 1.0, 1.0)], ["nginx"]) == ""


def test_noise_note_warns_when_machine_was_busy() -> None:
    busy = _run("haproxy", 64, 1, 1.0, 1.0, 1.0)
    busy.other_cpu_percent = 60.0
    assert "WARNING: 1 of 1 run(s)" in noise_note([busy])


def test_failed_spread_renders_failed() -> None:
    run = _run("haproxy", 64, 1, 1.0, 1.0, 1.0)
    run.spread, run.spread_ok = {"b1": 99, "b2": 1, "b3": 0}, False
    md = render_markdown(summarize([run], ["haproxy"]), {}, [64])
    assert "FAILED 99/1/0% (b1 99, b2 1, b3 0)" in md


# --- configs ---------------------------------------------------------------------------------


def test_fastlb_toml_follows_the_contract() -> None:
    text = fastlb_toml(5000, "h11", {"b1": 8001, "b2": 8002, "b3": 8003})
    data = tomllib.loads(text)
    assert data["proxy"] == {
        "listen": "127.0.0.1:5000",
        "http": "h11",
        "replica_paths": [],
        "pool_size": 1024,  # nginx's keepalive 1024 in conf/nginx-proxy.conf.tmpl
    }
    assert data["routing"] == {"key": "path"}
    assert data["replicas"]["provider"] == "static"
    assert data["replicas"]["static"] == [
        {"name": "b1", "address": "127.0.0.1:8001"},
        {"name": "b2", "address": "127.0.0.1:8002"},
        {"name": "b3", "address": "127.0.0.1:8003"},
    ]


def _ports() -> dict[str, int]:
    return {f"{name}_port": 20001 + i for i, name in enumerate(BACKEND_NAMES)}


def _haproxy_cfg(prefix: Path, tls: TlsFiles | None = None) -> str:
    """conf/haproxy.cfg.tmpl filled as bench/peers.py fills it (over TLS with `tls`)."""
    ports = {f"{name}": 20001 + i for i, name in enumerate(BACKEND_NAMES)}
    return haproxy_cfg(prefix, 20000, ports, haproxy_maxconn(), tls)


def test_templates_fill_completely(tmp_path: Path) -> None:
    ha = _haproxy_cfg(tmp_path)
    ngp = render_template("nginx-proxy.conf.tmpl", prefix=tmp_path, port=20000, **_ports())
    ngb = render_template("nginx-backends.conf.tmpl", prefix=tmp_path, flush_ms=100, **_ports())
    for text in (ha, ngp, ngb):
        assert "${" not in text
    for needle in ("nbthread 1", "balance uri", "hash-type consistent", "http-reuse always"):
        assert needle in ha
    assert "hash $request_uri consistent;" in ngp and "keepalive 1024;" in ngp
    assert 'proxy_set_header Connection "";' in ngp and "proxy_http_version 1.1;" in ngp
    assert ngb.count("add_header X-Served-By") == 3 and "worker_processes 1;" in ngb


@pytest.mark.skipif(find_binary("haproxy") is None, reason="haproxy not installed")
def test_haproxy_accepts_its_config(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(_haproxy_cfg(tmp_path))
    haproxy = find_binary("haproxy")
    assert haproxy is not None
    out = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=10, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(
    find_binary("haproxy") is None or find_binary("openssl") is None,
    reason="haproxy and openssl needed",
)
def test_haproxy_accepts_its_https_config_with_the_bench_certificate(tmp_path: Path) -> None:
    files = certificate(tmp_path / "tls")
    assert certificate(tmp_path / "tls") == files  # made once, found after
    text = _haproxy_cfg(tmp_path, files)
    assert f"bind 127.0.0.1:20000 ssl crt {files.combined} alpn http/1.1 ssl-min-ver TLSv1.2 " in text
    assert "set-header X-Forwarded-Proto https" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    haproxy = find_binary("haproxy")
    assert haproxy is not None
    out = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=10, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # fastlb reads the same certificate and key from its bench config.
    from fastlb.config import parse
    from fastlb.tls import context_for

    toml = fastlb_toml(5000, "httptools", {"b1": 8001}, tls=files)
    config = parse(toml)
    assert (config.proxy.tls_cert, config.proxy.tls_key) == (str(files.cert), str(files.key))
    assert context_for(config) is not None


@pytest.mark.skipif(find_binary("nginx") is None, reason="nginx not installed")
@pytest.mark.parametrize("name", ["nginx-proxy.conf.tmpl", "nginx-backends.conf.tmpl"])
def test_nginx_accepts_its_configs(tmp_path: Path, name: str) -> None:
    tmp_path.chmod(0o755)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render_template(name, prefix=tmp_path, port=20000, flush_ms=100, **_ports())
        if "backends" in name
        else render_template(name, prefix=tmp_path, port=20000, **_ports())
    )
    nginx = find_binary("nginx")
    assert nginx is not None
    out = subprocess.run(
        [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- a real, short run -----------------------------------------------------------------------

_MISSING = [t for t in ("haproxy", "nginx", "wrk") if find_binary(t) is None]


@pytest.mark.skipif(bool(_MISSING), reason=f"needs {', '.join(_MISSING)} (apt-get install)")
def test_smoke_run_haproxy(tmp_path: Path) -> None:
    """The whole harness for one short run: backends up, HAProxy measured, all stopped."""
    results = tmp_path / "results"
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--duration",
        "1",
        "--repeat",
        "1",
        "--connections",
        "8",
        "--only",
        "haproxy",
        "--warmup",
        "0",
        "--results-dir",
        str(results),
    ]
    if shutil.which("taskset") is None:
        argv.append("--no-pin")
    out = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| haproxy | 8 |")]
    assert len(rows) == 1, out.stdout
    assert "| ok " in rows[0]
    assert (results / "latest.md").read_text() == out.stdout
    data = json.loads((results / "latest.json").read_text())
    (run,) = data["runs"]
    assert run["proxy"] == "haproxy" and run["spread_ok"] and run["failure"] is None
    assert run["requests"] > 0 and run["cpu_us_per_req"] > 0
    assert set(run["spread"]) == set(BACKEND_NAMES)
    # Backends counted about what wrk counted (a few may be in flight at the end).
    assert sum(run["spread"].values()) >= run["requests"]
    assert sum(run["spread"].values()) <= run["requests"] + 8


def test_fastlb_toml_can_turn_the_access_log_on(tmp_path: Path) -> None:
    from fastlb.config import parse

    text = fastlb_toml(5000, "httptools", {"b1": 8001}, tmp_path / "access.log")
    log = parse(text).log
    assert log.access and log.access_file == str(tmp_path / "access.log")


def test_exchange_benchmark_runs_the_real_data_path(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.exchange import main as exchange_main

    assert exchange_main(["--exchanges", "500", "--passes", "2"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"\d+\.\d\d us per exchange \((compiled|pure), httptools; best of 2 x 500\)\n", out)


def test_rounds_rotate_which_proxy_runs_first() -> None:
    from bench.run import round_order

    proxies = ["a", "b", "c"]
    orders = [round_order(proxies, r) for r in (1, 2, 3, 4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert round_order([], 2) == []


def test_haproxy_runs_next_to_the_first_proxy_on_either_side_in_turn() -> None:
    from bench.run import round_order

    proxies = ["fast", "pure", "haproxy", "nginx"]
    orders = [round_order(proxies, r) for r in (1, 2, 3, 4)]
    assert orders == [
        ["haproxy", "fast", "pure", "nginx"],
        ["pure", "nginx", "fast", "haproxy"],
        ["nginx", "haproxy", "fast", "pure"],
        ["fast", "haproxy", "pure", "nginx"],
    ]
    # Every proxy but HAProxy still opens a round in turn, and each round runs each once.
    assert [o[0] for o in orders if o[0] != "haproxy"] == ["pure", "nginx", "fast"]
    assert all(sorted(o) == sorted(proxies) for o in orders)
    # Only two proxies: plain rotation, which alternates them anyway.
    assert round_order(["fast", "haproxy"], 2) == ["haproxy", "fast"]


def test_the_https_pair_runs_together_and_is_selected_by_name() -> None:
    from bench.peers import PROXIES
    from bench.run import parse_args, round_order

    assert PROXIES[-2:] == ("fastlb-httptools+tls", "haproxy+tls")
    # An exact name selects that proxy alone, a prefix every proxy it starts.
    assert parse_args(["--only", "haproxy"]).only == ("haproxy",)
    assert parse_args(["--only", "haproxy+"]).only == ("haproxy+2w", "haproxy+tls")
    assert parse_args(["--only", "fastlb-httptools+tls,haproxy+tls"]).only == PROXIES[-2:]
    assert "fastlb-httptools+tls" in parse_args(["--only", "fastlb"]).only
    proxies = ["fast", "haproxy", "nginx", "fast+tls", "haproxy+tls"]
    orders = [round_order(proxies, r) for r in (1, 2, 3)]
    assert orders == [
        ["haproxy", "fast", "nginx", "haproxy+tls", "fast+tls"],
        ["nginx", "fast+tls", "haproxy+tls", "fast", "haproxy"],
        ["haproxy+tls", "fast+tls", "haproxy", "fast", "nginx"],
    ]
    assert all(sorted(o) == sorted(proxies) for o in orders)
    # The HTTPS round alone: two proxies, alternating.
    assert round_order(["fast+tls", "haproxy+tls"], 2) == ["haproxy+tls", "fast+tls"]


def test_the_two_worker_round_is_divided_by_haproxy_with_two_threads() -> None:
    from bench.peers import PROXIES, proxy_specs
    from bench.report import reference_of
    from bench.run import parse_args

    two = ("fastlb-httptools+2w", "haproxy+2w", "nginx+2w")
    assert parse_args(["--only", ",".join(two)]).only == two
    assert [reference_of(p) for p in two] == ["haproxy+2w"] * 3
    specs = proxy_specs()
    assert not any(specs[p].pinned for p in two)
    assert all(specs[p].pinned for p in PROXIES if p not in two)


def test_two_workers_and_two_threads_are_in_the_configs(tmp_path: Path) -> None:
    from bench.peers import proxy_specs

    specs = proxy_specs()
    ports = {"b1": 1, "b2": 2, "b3": 3}
    _, fastlb, _ = specs["fastlb-httptools+2w"].build(tmp_path, 5000, ports)
    assert "\nworkers = 2\n" in fastlb
    _, one, _ = specs["fastlb-httptools"].build(tmp_path, 5000, ports)
    assert "workers" not in one
    _, haproxy, _ = specs["haproxy+2w"].build(tmp_path, 5000, ports)
    assert "\n    nbthread 2\n" in haproxy and "nbthread 1" not in haproxy
    _, nginx, _ = specs["nginx+2w"].build(tmp_path, 5000, ports)
    assert "\nworker_processes 2;\n" in nginx and "worker_processes 1;" not in nginx


def test_interpreter_says_how_cpython_is_linked() -> None:
    from bench.run import interpreter

    # This process is the interpreter fastlb runs on in the suite: ask it the same directly.
    maps = Path("/proc/self/maps").read_text()
    shared = "libpython" in maps
    linked = "from the shared libpython" if shared else "linked into the executable"
    base = getattr(sys, "_base_executable", sys.executable)
    assert interpreter(sys.executable) == f"{platform.python_version()} ({base}, {linked})"


def test_interpreter_reports_a_python_that_does_not_run(tmp_path: Path) -> None:
    from bench.run import interpreter

    assert interpreter(str(tmp_path / "missing")).startswith("unavailable (")
    assert interpreter(shutil.which("false") or "/bin/false") == "not runnable"
