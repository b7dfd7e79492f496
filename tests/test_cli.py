"""The `fastlb` command line: version, config checking, exit codes."""

from __future__ import annotations

import configparser
import http.client
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastlb import __version__
from fastlb.cli import main
from tests.conftest import (
    PY,
    ROOT,
    Backend,
    Fastlb,
    Processes,
    children_of,
    free_port,
    http_get,
    static_config,
    wait_for,
    wait_gone,
    wait_port,
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "fastlb", *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )


def test_version_says_how_the_data_path_runs() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() in (
        f"fastlb {__version__} (data path compiled by mypyc)",
        f"fastlb {__version__} (pure Python)",
    )
    pure = subprocess.run(
        [PY, "-m", "fastlb", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "FASTLB_PURE": "1"},
    )
    assert pure.stdout.strip() == f"fastlb {__version__} (pure Python)"


def test_check_accepts_the_shipped_config() -> None:
    result = run("--check", "--config", "conf/lb.toml")
    assert result.returncode == 0
    assert result.stdout.strip() == "conf/lb.toml: ok"


@pytest.mark.parametrize("example", ["uvicorn", "gunicorn", "docker-image"])
def test_check_accepts_the_examples(example: str) -> None:
    path = f"conf/examples/{example}.toml"
    result = run("--check", "--config", path)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, f"{path}: ok", "")


def test_check_names_file_table_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "lb.toml"
    bad.write_text('[proxy]\nconnect_timeout = "abc"\n')
    result = run("--check", "--config", str(bad))
    assert result.returncode == 2
    assert f'{bad}: [proxy] connect_timeout: expected a positive number, got "abc"' in result.stderr


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "lb.toml"
    bad.write_text("[proxy]\nconect_timeout = 1\n")
    result = run("--check", "--config", str(bad))
    assert result.returncode == 2
    assert "conect_timeout" in result.stderr and "connect_timeout" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    assert main(["--check", "--config", str(tmp_path / "nope.toml")]) == 2


def test_check_without_config_checks_the_embedded_default(capsys: object) -> None:
    assert main(["--check"]) == 0


def test_ctl_without_a_running_fastlb_says_where_it_looked() -> None:
    result = run("ctl", "--socket", "/nonexistent/x.sock", "help")
    assert result.returncode == 2
    assert "/nonexistent/x.sock" in result.stderr


def test_log_lines_carry_time_and_level(
    start_fastlb: Callable[[str], Fastlb], start_backend: Callable[..., Backend]
) -> None:
    backend = start_backend("echo", name="echo")
    lb = start_fastlb(static_config(0, [("echo", backend.port)]).replace(":0", ":{port}"))
    lb.proc.send_signal(signal.SIGTERM)
    assert lb.proc.wait(timeout=15) == 0
    assert lb.proc.stderr is not None
    lines = lb.proc.stderr.read().decode().splitlines()
    assert any("listening on" in line for line in lines), lines
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) fastlb: ")
    assert lines and all(stamp.match(line) for line in lines), lines



def test_ctrl_c_ends_quietly_and_drains(procs: Processes, tmp_path: Path) -> None:
    # Ctrl-C in a terminal is SIGINT to the foreground process group: fastlb and, unless they
    # have a group of their own, its replicas and table worker. fastlb must drain, stop its
    # replicas itself, and say nothing false: no traceback, no replica "died".
    port = free_port()
    path = tmp_path / "lb.toml"
    path.write_text(f'[proxy]\nlisten = "127.0.0.1:{port}"\n[replicas]\nlatency_ms = 300\n')
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(path)], process_group=0)
    wait_port(port, 30.0, proc)
    wait_for(lambda: http_get(port, "/healthz")[0] == 200, 10, "replicas up")
    # An added replica makes a table build, in the worker process, which then stays up.
    add = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    add.request("POST", "/add", body=b'{"n": 1, "hostnames": ["S4"]}')
    assert add.getresponse().status == 200
    add.close()
    wait_for(lambda: len(children_of(proc.pid)) == 5, 10, "4 replicas and the table worker")
    answers: list[int] = []
    clients = [
        threading.Thread(target=lambda i=i: answers.append(http_get(port, f"/home?{i}")[0]))
        for i in range(4)
    ]
    for client in clients:
        client.start()
    time.sleep(0.1)  # the requests are at the replicas, which take 300 ms to answer
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    for client in clients:
        client.join(10)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "stopping: draining requests in flight" in err, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert " died" not in err and "exited" not in err, err
    assert answers == [200] * 4, (answers, err)  # drained: the replicas were not interrupted


def test_ctrl_c_while_replicas_start_stops_at_once(procs: Processes, tmp_path: Path) -> None:
    # A replica that takes its time to listen (here: never): Ctrl-C does not wait out its
    # start_timeout, and the child fastlb spawned goes with it.
    port = free_port()
    path = tmp_path / "lb.toml"
    path.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{port}"\n[replicas]\ncount = 1\nstart_timeout = 60\n'
        'command = ["sh", "-c", "sleep 60", "{port}"]\n'
    )
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(path)], process_group=0)
    wait_for(lambda: bool(children_of(proc.pid)), 20, "the replica spawned")
    children = children_of(proc.pid)
    time.sleep(0.2)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - started < 5
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "stopping before fastlb was serving" in err and "Traceback" not in err, err
    assert wait_gone(children) == [], "the replica outlived fastlb"


def make_plan(target: str, venv: Path) -> str:
    """What `make TARGET` would run for a fresh venv (make -n: nothing is run)."""
    result = subprocess.run(
        ["make", "-n", f"VENV={venv}", target], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    run_plan = make_plan("run", tmp_path / "venv")
    installs = [line for line in run_plan.splitlines() if "pip install" in line]
    assert any(line.endswith("install -q -e .") for line in installs), installs
    assert "[dev]" not in run_plan and "[native]" in run_plan, installs  # mypyc, to compile
    # The one setuptools warning every editable install prints is silenced, by its text.
    editable = [line for line in installs if " -e " in line]
    assert all(line.startswith("PYTHONWARNINGS='ignore:Editable installation' ") for line in editable)
    # make test still brings the dev tools.
    assert "-e '.[dev]'" in make_plan("test", tmp_path / "venv")


def unit_file() -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=True, comment_prefixes=("#",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys keep case
    unit.read(ROOT / "conf" / "fastlb.service")
    return unit


def test_systemd_unit(tmp_path: Path) -> None:
    service = unit_file()["Service"]
    assert service["Type"] == "exec" and service["Restart"] == "on-failure"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(service["LimitNOFILE"]) >= 65536 and service["KillMode"] == "mixed"
    start = shlex.split(service["ExecStart"])
    check = shlex.split(service["ExecStartPre"])
    assert check == [start[0], "--check", *start[1:]]
    # The commands as the unit runs them, from this checkout, on the shipped config.
    venv_fastlb = str(Path(PY).parent / "fastlb")
    result = subprocess.run(
        [venv_fastlb, "--check", "--config", str(ROOT / "conf" / "lb.toml")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not verified")
    text = (ROOT / "conf" / "fastlb.service").read_text().replace("/opt/fastlb/.venv", str(Path(PY).parent.parent))
    here = tmp_path / "fastlb.service"
    here.write_text(text.replace("/opt/fastlb", str(ROOT)))
    result = subprocess.run([analyze, "verify", str(here)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_license_file_matches_setup_cfg() -> None:
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
