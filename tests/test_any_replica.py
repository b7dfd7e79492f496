"""Third-party app servers as replicas, through [replicas] command (issue 13, part 1).

Real uvicorn and gunicorn processes serving the apps in tests/apps/, started, watched and
replaced by a real fastlb; requests through its real listener.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop

from fastlb.app import Balancer
from fastlb.config import Config, parse
from tests.conftest import (
    PY,
    ROOT,
    Fastlb,
    Processes,
    children_of,
    free_port,
    http_get,
    load_in_background,
    run_load,
    wait_for,
    wait_port,
)

APPS = ROOT / "tests" / "apps"
BIN = Path(sys.executable).parent
NAMES = ("App1", "App2", "App3")

UVICORN_FD = [str(BIN / "uvicorn"), "starlette_app:app", "--fd", "{fd}", "--no-access-log"]
UVICORN_PORT = [
    str(BIN / "uvicorn"), "starlette_app:app", "--host", "{host}", "--port", "{port}",
    "--no-access-log",
]
GUNICORN_FD = [
    str(BIN / "gunicorn"), "--bind", "fd://{fd}", "--workers", "2", "--no-control-socket",
    "flask_app:app",
]


def app_config(
    command: list[str], *, port: int = 0, extra: str = "", health: str = ""
) -> str:
    """A fastlb config running `command` from tests/apps as three replicas."""
    names = ", ".join(f'"{n}"' for n in NAMES)
    return (
        f'[proxy]\nlisten = "127.0.0.1:{port or free_port()}"\nreplica_paths = []\n'
        f"[replicas]\nnames = [{names}]\ncommand = {json.dumps(command)}\n"
        f'env = {{ REPLICA_NAME = "{{name}}" }}\ncwd = "{APPS}"\nstart_timeout = 30\n{extra}'
        f'[health]\npath = "/healthz"\n{health}'
    )


@pytest.fixture
def start_lb(procs: Processes, tmp_path: Path) -> Callable[..., Fastlb]:
    """fastlb on an app_config; its log (with the replicas' lines) goes to a file, not a pipe
    nobody reads while the test runs (a full pipe would stall fastlb's logging)."""

    def start(command: list[str], **options: str) -> Fastlb:
        port = free_port()
        path = tmp_path / f"lb-{port}.toml"
        path.write_text(app_config(command, port=port, **options))
        log = (tmp_path / f"lb-{port}.log").open("wb")
        proc = procs.spawn([PY, "-m", "fastlb", "--config", str(path)], stderr=log)
        log.close()
        wait_port(port, 60.0, proc)
        return Fastlb(proc, port, path)

    return start


StartLb = Callable[..., Fastlb]


def app_children(pid: int) -> list[int]:
    """fastlb's children that serve one of the tests/apps apps (not its table worker)."""
    found = []
    for child in children_of(pid):
        try:
            if b"_app:app" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def serve_all_then_heal(lb: Fastlb, kill: signal.Signals = signal.SIGKILL) -> None:
    """Requests reach all three replicas; one killed under load is replaced with no failed
    request (GETs are idempotent: fastlb retries them on another replica)."""
    first = run_load(lb.port, total=600, concurrency=8)
    assert first.failures == []
    assert set(first.served) == set(NAMES), first.served
    before = set(app_children(lb.proc.pid))
    assert len(before) == 3
    done = threading.Event()
    thread, results = load_in_background(lb.port, 60.0, stop=done, concurrency=8)
    try:
        time.sleep(1.0)
        victim = sorted(before)[1]
        os.kill(victim, kill)

        def replaced() -> bool:
            now = set(app_children(lb.proc.pid))
            return len(now) == 3 and victim not in now

        wait_for(replaced, 30.0, "the killed replica to be replaced")
        wait_for(lambda: http_get(lb.port, "/rep")[0] == 200, 10.0, "fastlb to answer")
        time.sleep(1.0)  # load on the replacement too
    finally:
        done.set()
        thread.join()
    (result,) = results
    print(f"\n{result.ok} requests under the kill, served {result.served}")
    assert result.failures == []
    assert result.ok > 100
    after = run_load(lb.port, total=600, concurrency=8)
    assert after.failures == [] and set(after.served) == set(NAMES), after.served


def test_uvicorn_on_the_socket_fastlb_bound(start_lb: StartLb) -> None:
    lb = start_lb(UVICORN_FD)
    children = app_children(lb.proc.pid)
    assert len(children) == 3
    for child in children:
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        fd = argv[argv.index(b"--fd") + 1].decode()
        assert os.readlink(f"/proc/{child}/fd/{fd}").startswith("socket:[")
    serve_all_then_heal(lb)


def test_gunicorn_on_the_socket_fastlb_bound(start_lb: StartLb) -> None:
    lb = start_lb(GUNICORN_FD)
    serve_all_then_heal(lb)


def test_uvicorn_on_a_port_it_binds_itself(start_lb: StartLb) -> None:
    lb = start_lb(UVICORN_PORT)
    for child in app_children(lb.proc.pid):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        assert b"--port" in argv and b"--fd" not in argv
    serve_all_then_heal(lb, signal.SIGTERM)


def test_a_command_that_fails_at_once_is_a_clear_error(procs: Processes, tmp_path: Path) -> None:
    """fastlb cannot start: the error says how the replica ended and what it said last."""
    script = "import sys; print('loading settings'); sys.exit('config.ini: no such file')"
    config = tmp_path / "lb.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n[replicas]\ncount = 1\n'
        f'command = ["{PY}", "-c", "{script}", "{{port}}"]\n'
    )
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(config)], stdout=subprocess.PIPE)
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "replica 'Server1' exited (exit code 1) before it answered /heartbeat" in err, err
    assert "its last output:\n  loading settings\n  config.ini: no such file" in err, err
    # The same lines, as they came, in fastlb's log.
    assert "[Server1] config.ini: no such file" in err, err


def test_a_missing_program_is_named(procs: Processes, tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n[replicas]\ncount = 1\n'
        'command = ["no-such-app-server", "--port", "{port}"]\n'
    )
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(config)], stdout=subprocess.PIPE)
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "'no-such-app-server' is not found on PATH nor beside fastlb's Python" in err, err


def balancer_config(text: str) -> Config:
    """The config run in this process, on a port the kernel picks."""
    config = parse(text)
    return replace(config, proxy=replace(config.proxy, port=0))


def test_a_replica_that_keeps_failing_backs_off_with_its_traceback_in_the_events(
    tmp_path: Path,
) -> None:
    """A deployed app that stops starting (here: a file it refuses to start with): its
    restarts fail with the app's own traceback in the event, each try waits longer than the
    last (no hot loop), and once the cause is gone the next try brings it back."""
    flag = tmp_path / "broken"
    command = [*UVICORN_FD]
    text = app_config(command, health="crash_window = 60\nbackoff = 0.2\nbackoff_max = 1\n")
    text = text.replace(
        'env = { REPLICA_NAME = "{name}" }',
        f'env = {{ REPLICA_NAME = "{{name}}", FAIL_IF_EXISTS = "{flag}" }}',
    )
    config = balancer_config(text)

    async def scenario() -> tuple[list[tuple[str, str]], list[float], int]:
        balancer = Balancer(config)
        await balancer.start()
        try:
            member = balancer.cluster.members["App2"]
            assert member.replica is not None and member.replica.pid is not None
            flag.write_text("")
            os.kill(member.replica.pid, signal.SIGKILL)
            events = balancer.cluster.events
            while sum(e.kind == "restart-failed" for e in events) < 3:
                await asyncio.sleep(0.02)
            flag.unlink()
            while member.restarts < 1:
                await asyncio.sleep(0.02)
            kinds = [(e.kind, e.detail) for e in events if e.replica == "App2"]
            waits = [float(d.split()[2]) for k, d in kinds if k == "crash-loop"]
            return kinds, waits, member.restarts
        finally:
            await balancer.stop()

    kinds, waits, restarts = uvloop.run(scenario())
    died = [d for k, d in kinds if k == "died"]
    assert died == ["killed by SIGKILL"] or died[0].startswith("killed by SIGKILL"), died
    failed = [d for k, d in kinds if k == "restart-failed"]
    assert len(failed) >= 3
    for detail in failed:
        assert "replica 'App2' exited (exit code 1) before it answered /healthz" in detail
        assert "RuntimeError: starlette_app: refusing to start" in detail, detail
    assert waits[:3] == [0.2, 0.4, 0.8], kinds  # doubling, then capped at backoff_max
    assert kinds[-1][0] == "replaced" and restarts == 1


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, for a unix socket (a path holds 107 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="fastlb-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_output_in_log_dir_and_the_last_lines_in_the_died_event(
    start_lb: StartLb, tmp_path: Path, short_dir: Path
) -> None:
    logs = tmp_path / "replica-logs"
    admin = short_dir / "admin.sock"
    lb = start_lb(
        UVICORN_FD, extra=f'log_dir = "{logs}"\n', health=f'[admin]\nsocket = "{admin}"\n'
    )
    for name in NAMES:
        text = (logs / f"{name}.log").read_text()
        assert "Application startup complete." in text, text
    victim = sorted(app_children(lb.proc.pid))[0]
    os.kill(victim, signal.SIGTERM)  # uvicorn shuts down cleanly, saying so, and re-raises it

    def died() -> list[dict[str, str]]:
        status, _, body = http_get(lb.port, "/status.json")
        assert status == 200
        return [e for e in json.loads(body)["events"] if e["kind"] == "died"]

    wait_for(lambda: bool(died()), 20.0, "the died event")
    (event,) = died()
    assert event["detail"].startswith("killed by SIGTERM; its last output:\n"), event
    assert f"Finished server process [{victim}]" in event["detail"], event
    name = event["replica"]
    assert f"Finished server process [{victim}]" in (logs / f"{name}.log").read_text()
    fastlb_log = lb.config.with_suffix(".log").read_text()
    for other in NAMES:  # with log_dir, the lines are not in fastlb's log too
        assert f"[{other}] INFO:" not in fastlb_log, fastlb_log
    # The admin socket shows the same: `show replica NAME`, its row and its events, the died
    # one's last lines indented under it.
    shown = subprocess.run(
        [PY, "-m", "fastlb.ctl", "--socket", str(admin), "show", "replica", name],
        capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ADDRESS", "STATE"] and lines[1].startswith(name)
    died_at = next(i for i, line in enumerate(lines) if "  died  killed by SIGTERM" in line)
    assert any(
        line.startswith("    ") and f"Finished server process [{victim}]" in line
        for line in lines[died_at + 1 :]
    ), shown.stdout


@pytest.mark.parametrize("example", ["uvicorn", "gunicorn"])
def test_the_examples_run_as_written(example: str, procs: Processes, tmp_path: Path) -> None:
    """conf/examples/{uvicorn,gunicorn}.toml, run from the repository's root as the README
    says (only the listen port changed): all three replicas answer through fastlb."""
    text = (ROOT / "conf" / "examples" / f"{example}.toml").read_text()
    port = free_port()
    assert text.count('listen = "127.0.0.1:5000"') == 1
    path = tmp_path / f"{example}.toml"
    path.write_text(text.replace('listen = "127.0.0.1:5000"', f'listen = "127.0.0.1:{port}"'))
    log = (tmp_path / "fastlb.log").open("wb")
    proc = procs.spawn([PY, "-m", "fastlb", "--config", str(path)], stderr=log)
    log.close()
    wait_port(port, 60.0, proc)
    result = run_load(port, total=300, concurrency=4)
    assert result.failures == []
    assert set(result.served) == {"Server1", "Server2", "Server3"}, result.served
