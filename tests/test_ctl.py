"""`fastlb ctl` as a user runs it (`python -m fastlb.ctl`, a separate process) against a real
AdminSocket served from a thread of the test, in front of the in-memory cluster."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from fastlb.control.adminsock import AdminSocket
from fastlb.ctl import main
from tests.conftest import PY, ROOT
from tests.test_commands import FakeCluster


class Served:
    """An AdminSocket on its own event loop in a thread, as fastlb would run it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.cluster = FakeCluster()
        self.loop = uvloop.new_event_loop()
        self.admin = AdminSocket(self.cluster)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.admin.start(path), self.loop).result(5)

    def block_adds(self) -> None:
        """Make every `add` wait forever (until close cancels it)."""

        async def set_gate() -> None:
            self.cluster.gate = asyncio.Event()

        asyncio.run_coroutine_threadsafe(set_gate(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.admin.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    # A unix socket path may hold 107 bytes; tmp_path can be longer than that.
    short = Path("/tmp") / f"fastlb-ctl-{os.getpid()}-{tmp_path.name[-20:]}"
    short.mkdir()
    try:
        yield short
    finally:
        for entry in short.iterdir():
            entry.unlink()
        short.rmdir()


@pytest.fixture
def served(socket_dir: Path) -> Iterator[Served]:
    server = Served(str(socket_dir / "admin.sock"))
    try:
        yield server
    finally:
        server.close()


def ctl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "fastlb.ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_data_is_printed_with_exit_0(served: Served) -> None:
    result = ctl("--socket", served.path, "show", "table")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["NAME     SHARE", "Server1  33.3%", "Server2  33.3%", "Server3  33.3%"]
    assert lines[4].startswith("table: maglev, fingerprint ") and len(lines) == 5
    assert result.stderr == ""


def test_ok_is_printed_with_exit_0_and_the_change_is_made(served: Served) -> None:
    result = ctl("--socket", served.path, "set", "weight", "Server2", "4")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok: Server2 weight 1 -> 4\n", "")
    assert served.cluster.members["Server2"].weight == 4


def test_a_refusal_is_exit_1_on_stderr(served: Served) -> None:
    result = ctl("--socket", served.path, "drain", "nosuch")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == 'error: no replica named "nosuch"\n'


def test_a_parse_error_is_exit_1_with_the_suggestion(served: Served) -> None:
    result = ctl("--socket", served.path, "shw")
    assert result.returncode == 1
    assert result.stderr == 'error: unknown command "shw"; did you mean "show replicas"?\n'


def test_no_socket_at_the_path_is_exit_2_naming_it(socket_dir: Path) -> None:
    path = str(socket_dir / "absent.sock")
    result = ctl("--socket", path, "show", "replicas")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"fastlb ctl: cannot reach {path}: no such socket; "
        f'is fastlb running, with [admin] socket = "{path}" in its config?\n'
    )


def test_a_stale_socket_is_exit_2(socket_dir: Path) -> None:
    path = str(socket_dir / "stale.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)
    result = ctl("--socket", path, "show", "replicas")
    assert result.returncode == 2
    assert f"cannot reach {path}: nothing answers on it" in result.stderr


def test_config_gives_the_socket(served: Served, socket_dir: Path) -> None:
    config = socket_dir / "lb.toml"
    config.write_text(f'[admin]\nsocket = "{served.path}"\n')
    result = ctl("--config", str(config), "disable", "Server1")
    assert (result.returncode, result.stdout) == (0, "ok: Server1 disabled\n")


def test_config_without_a_socket_is_exit_2(socket_dir: Path) -> None:
    config = socket_dir / "lb.toml"
    config.write_text("[admin]\nmax_replicas = 10\n")
    result = ctl("--config", str(config), "show", "replicas")
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"fastlb ctl: {config} does not set [admin] socket, so fastlb runs without one; "
    )


# The rest in-process: the same main(), without paying for a process each time.


def test_no_socket_and_no_config_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "replicas"]) == 2
    assert "no admin socket given: pass --socket PATH, or --config FILE" in capsys.readouterr().err


def test_config_with_a_socket_nobody_serves_says_so(
    socket_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = socket_dir / "lb.toml"
    path = str(socket_dir / "admin.sock")
    config.write_text(f'[admin]\nsocket = "{path}"\n')
    assert main(["--config", str(config), "show", "replicas"]) == 2
    assert capsys.readouterr().err == (
        f"fastlb ctl: cannot reach {path} ([admin] socket in {config}): no such socket; "
        "is fastlb running with this config?\n"
    )


def test_a_bad_config_is_exit_2(socket_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = socket_dir / "lb.toml"
    config.write_text("[admin]\nsockett = 1\n")
    assert main(["--config", str(config), "help"]) == 2
    assert "sockett" in capsys.readouterr().err


def test_a_line_break_in_a_word_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--socket", "/nonexistent", "drain", "a\ndel replica b"])
    assert caught.value.code == 2
    assert "line break" in capsys.readouterr().err


def test_words_are_joined_into_one_line(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", served.path, "add", "replica", "Server4", "Server5"]) == 0
    assert capsys.readouterr().out == "ok: added Server4, Server5\n"
    assert main(["--socket", served.path, "set", "weight", "Server4", "-1"]) == 1
    assert 'got "-1"' in capsys.readouterr().err


def test_quit_is_exit_0_without_output(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", served.path, "quit"]) == 0
    assert capsys.readouterr() == ("", "")


def test_no_answer_in_time_is_exit_2(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    served.block_adds()
    code = main(["--socket", served.path, "--timeout", "0.2", "add", "replica", "Server4"])
    assert code == 2
    assert f"no answer from {served.path} within 0.2 s; the command may still complete" in (
        capsys.readouterr().err
    )
