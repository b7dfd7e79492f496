"""The `fastlb` command line: version, config checking, exit codes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fastlb import __version__
from fastlb.cli import main
from tests.conftest import PY, ROOT, Backend, Fastlb, static_config


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
