"""Self-healing, reload and drain, against real replica processes under real load.

Times are measured and shown (`-s`); the assertions hold generous bounds that only a broken
mechanism misses. `python -m bench.healing` measures the same thing for the record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop

from bench.bounded import SlottedReplica
from bench.healing import run_trials
from fastlb.app import Balancer
from fastlb.config import Config, HealthConfig, ProxyConfig, ReplicasConfig, ReplicaSpec
from tests.conftest import ROOT, Fastlb, http_get, load_in_background, replica_children

StartFastlb = Callable[[str], Fastlb]


def test_exit_is_detected_and_replaced_quickly() -> None:
    trials = uvloop.run(run_trials(kills=1, stops=1, cfg=Config(proxy=ProxyConfig(port=0))))
    kill, stop = trials
    print(f"\nkill: detected {kill.detected * 1e3:.1f} ms, serving {kill.serving * 1e3:.0f} ms")
    print(f"stop: detected {stop.detected * 1e3:.1f} ms, serving {stop.serving * 1e3:.0f} ms")
    assert 0 < kill.detected < 1.0  # an exit is an event, not a missed heartbeat
    assert 0 < kill.serving < 5.0
    assert 0 < stop.detected < 5.0  # fall x interval (+ the probe timeout)
    assert 0 < stop.serving < 10.0


def test_no_failed_requests_while_replicas_are_killed_every_2s(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\n')
    thread, results = load_in_background(lb.port, 9.0, concurrency=16)
    kills = 0
    signals = [signal.SIGKILL, signal.SIGKILL, signal.SIGSTOP, signal.SIGKILL]
    try:
        for sig in signals:
            time.sleep(2.0)
            replicas = replica_children(lb.proc.pid)
            os.kill(replicas[kills % len(replicas)], sig)
            kills += 1
    finally:
        thread.join()
    (result,) = results
    print(f"\n{result.ok} requests, {len(result.failures)} failed, served {result.served}")
    assert result.failures == []
    assert result.ok > 1000
    _status, _, body = lb.get("/rep")
    assert json.loads(body)["message"]["N"] == 3


def test_crash_loop_backs_off() -> None:
    health = HealthConfig(crash_window=5.0, backoff=0.2, backoff_max=1.0)
    config = Config(proxy=ProxyConfig(port=0), replicas=ReplicasConfig(names=("Loop1",), count=1),
                    health=health)

    async def scenario() -> list[str]:
        balancer = Balancer(config)
        await balancer.start()
        try:
            member = balancer.cluster.members["Loop1"]
            for restarts in range(1, 4):
                assert member.replica is not None and member.replica.pid is not None
                os.kill(member.replica.pid, signal.SIGKILL)
                while member.restarts < restarts:
                    await asyncio.sleep(0.01)
            return [f"{e.kind} {e.detail}" for e in balancer.cluster.events if e.kind == "crash-loop"]
        finally:
            await balancer.stop()

    import asyncio

    events = uvloop.run(scenario())
    # First early death: replaced at once. Then 0.2 s, then 0.4 s: doubling, not a hot loop.
    assert events == ["crash-loop restarting in 0.2 s", "crash-loop restarting in 0.4 s"]


def test_replace_with_random_gives_a_new_name() -> None:
    import asyncio

    config = Config(proxy=ProxyConfig(port=0), health=HealthConfig(replace_with="random"))

    async def scenario() -> list[str]:
        balancer = Balancer(config)
        await balancer.start()
        try:
            member = balancer.cluster.members["Server2"]
            assert member.replica is not None and member.replica.pid is not None
            os.kill(member.replica.pid, signal.SIGKILL)
            while member.restarts < 1:
                await asyncio.sleep(0.01)
            return balancer.cluster.names()
        finally:
            await balancer.stop()

    names = uvloop.run(scenario())
    assert len(names) == 3 and "Server2" not in names
    assert names[0] == "Server1" and names[1] == "Server3"


def test_twenty_reloads_under_load_lose_nothing(start_fastlb: StartFastlb, tmp_path: Path) -> None:
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\n')
    text = lb.config.read_text()
    thread, results = load_in_background(lb.port, 7.0, concurrency=16)
    try:
        for i in range(20):
            time.sleep(0.3)
            # Alternate table settings so every reload builds and swaps a new table.
            table = "classic" if i % 2 else "maglev"
            lb.config.write_text(text + f'[routing]\ntable = "{table}"\n')
            lb.proc.send_signal(signal.SIGHUP)
    finally:
        thread.join()
    (result,) = results
    print(f"\n{result.ok} requests across 20 reloads, {len(result.failures)} failed")
    assert result.failures == []
    assert set(result.served) == {"Server1", "Server2", "Server3"}


def test_reload_applies_the_replica_list_and_rejects_a_bad_file(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb('[proxy]\nlisten = "127.0.0.1:{port}"\n')
    text = lb.config.read_text()
    lb.config.write_text(text + '[replicas]\nnames = ["Server1", "Server2", "Server3", "Extra"]\n')
    lb.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    names: list[str] = []
    while time.monotonic() < deadline:
        names = json.loads(lb.get("/rep")[2])["message"]["replicas"]
        if "Extra" in names:
            break
        time.sleep(0.05)
    assert names == ["Server1", "Server2", "Server3", "Extra"]
    lb.config.write_text(text.replace("[proxy]\n", "[proxy]\nconnect_timeout = -1\n"))
    lb.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert json.loads(lb.get("/rep")[2])["message"]["replicas"] == names
    assert lb.get("/home")[0] == 200
    lb.proc.send_signal(signal.SIGTERM)
    lb.proc.wait(timeout=15)
    assert lb.proc.stderr is not None
    log = lb.proc.stderr.read().decode()
    assert "reload failed" in log and "connect_timeout" in log


def test_sigterm_finishes_requests_in_flight(start_fastlb: StartFastlb) -> None:
    lb = start_fastlb(
        '[proxy]\nlisten = "127.0.0.1:{port}"\n[replicas]\nlatency_ms = 400\n'
        "[health]\ninterval = 1.0\ntimeout = 0.9\n"
    )
    thread, results = load_in_background(lb.port, 3.0, concurrency=10)
    time.sleep(1.0)
    lb.proc.send_signal(signal.SIGTERM)
    code = lb.proc.wait(timeout=20)
    thread.join()
    (result,) = results
    assert code == 0
    # Requests that were in flight when SIGTERM came all completed; after that the listener
    # was closed, so the only failures are refused new connections.
    completed_failures = [f for f in result.failures if "Refused" not in f and "refused" not in f]
    print(f"\n{result.ok} ok; after SIGTERM: {len(result.failures)} refused or failed")
    assert result.ok >= 10
    assert completed_failures == [], completed_failures
    assert http_get is not None


def test_balancer_config_dataclass_round_trip() -> None:
    # `replace` keeps the frozen config usable by the in-process scenarios above.
    config = replace(Config(), proxy=ProxyConfig(port=0))
    assert config.proxy.port == 0


def test_a_replica_whose_port_another_answers_is_down_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two real replicas; then the port fastlb has for B is answered by A (what the old port race
    # did: B's startup heartbeat answered by A, B's keys sent to A). B's heartbeats fail, the
    # log says why once, and A is not touched.
    import asyncio

    health = HealthConfig(interval=0.05, timeout=1.0, replace_after=60.0)
    config = Config(
        proxy=ProxyConfig(port=0),
        health=health,
        replicas=ReplicasConfig(names=("IdA", "IdB"), count=2),
    )

    async def scenario() -> tuple[list[str], int, str]:
        balancer = Balancer(config)
        await balancer.start()
        try:
            cluster = balancer.cluster
            a, b = cluster.members["IdA"], cluster.members["IdB"]
            assert a.replica is not None and b.replica is not None
            b.replica = replace(b.replica, port=a.replica.port)
            # Down after `fall` failures; the probes then wait for the healing (60 s away).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while b.state != "down" and loop.time() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # a second warning would come within these probes
            return (
                [f"{e.kind} {e.replica}" for e in cluster.events],
                cluster.heartbeat_failures.get("IdA", 0),
                b.state,
            )
        finally:
            await balancer.stop()

    with caplog.at_level(logging.INFO, logger="fastlb"):
        events, a_failures, b_state = uvloop.run(scenario())
    assert b_state == "down"
    assert "down IdB" in events and "down IdA" not in events
    assert a_failures == 0
    said = [
        r.getMessage() for r in caplog.records if "another replica holds its port" in r.getMessage()
    ]
    assert len(said) == 1, said
    assert "answered as 'IdA', not 'IdB'" in said[0]


def test_a_static_replica_that_fails_is_down_not_replaced(tmp_path: Path) -> None:
    # Nothing of fastlb's runs behind a static replica: it is logged down, probed on, and taken
    # back when it answers again; never "replaced" (which only declared it up again, unseen).
    import asyncio

    hole = socket.socket()  # bound, not listening: connections to it are refused
    hole.bind(("127.0.0.1", 0))
    port = hole.getsockname()[1]
    health = HealthConfig(interval=0.05, timeout=0.5, replace_after=0.1, backoff=0.1)
    config = Config(
        proxy=ProxyConfig(port=0),
        health=health,
        replicas=ReplicasConfig(
            provider="static",
            count=1,
            names=("Far",),
            static=(ReplicaSpec("Far", "127.0.0.1", port),),
        ),
    )

    async def scenario() -> tuple[list[str], list[str], int]:
        balancer = Balancer(config)
        await balancer.start()
        child = None
        try:
            cluster = balancer.cluster
            member = cluster.members["Far"]
            while member.state != "down":
                await asyncio.sleep(0.02)
            # Ten times replace_after: a replacement would have happened many times over.
            failures = cluster.heartbeat_failures["Far"]
            while cluster.heartbeat_failures["Far"] < failures + 20:
                await asyncio.sleep(0.02)
            while_down = [f"{e.kind} {e.replica}" for e in cluster.events]
            # Someone brings it back on its address: `rise` good heartbeats take it back.
            child = subprocess.Popen(
                [sys.executable, "-m", "replica", "--name", "Far", "--fd", str(hole.fileno())],
                pass_fds=(hole.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            )
            hole.close()
            while member.state != "up":
                await asyncio.sleep(0.02)
            return while_down, [f"{e.kind} {e.replica}" for e in cluster.events], member.restarts
        finally:
            if child is not None:
                child.terminate()
                child.wait(timeout=10)
            await balancer.stop()

    try:
        while_down, events, restarts = uvloop.run(scenario())
    finally:
        hole.close()
    assert "down Far" in while_down
    kinds = {event.split()[0] for event in events}
    assert not kinds & {"replaced", "crash-loop", "restart-failed"}, events
    # Back by itself, and how long it was away (fastlb_replica_recovery_seconds).
    assert events[-2:] == ["up Far", "recovered Far"] and restarts == 0


# ------------------------------------------------------------- health read at the pick
async def served_by(port: int, keys: list[bytes]) -> list[str]:
    """Who served each key, through the balancer (one kept-alive connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen = []
    try:
        for key in keys:
            writer.write(b"GET /home HTTP/1.1\r\nHost: t\r\nX-Request-ID: " + key + b"\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
            seen.append(head.split(b"X-Served-By: ", 1)[1].split(b"\r\n", 1)[0].decode())
    finally:
        writer.close()
    return seen


def test_a_health_flap_moves_only_that_replicas_keys_and_builds_no_table() -> None:
    # Pingora's model: the table lists members, health is read when a request picks one. A
    # flap of one replica of ten moves its keys only (to their next candidates, and back
    # after), and a hundred flaps build no table.
    import asyncio

    health = HealthConfig(interval=0.01, timeout=0.5, rise=1, fall=1, replace_after=60)
    keys = [b"%d" % i for i in range(100_000, 102_000)]

    async def scenario() -> tuple[int, int, int, list[str], list[str], list[str]]:
        replicas = [SlottedReplica(f"R{i}") for i in range(10)]
        ports = [await r.start() for r in replicas]
        config = Config(
            proxy=ProxyConfig(port=0),
            health=health,
            replicas=ReplicasConfig(
                provider="static",
                count=10,
                names=tuple(r.name for r in replicas),
                static=tuple(
                    ReplicaSpec(r.name, "127.0.0.1", p) for r, p in zip(replicas, ports, strict=True)
                ),
            ),
        )
        balancer = Balancer(config)
        await balancer.start()
        try:
            cluster, server = balancer.cluster, balancer.server
            assert server is not None
            port = server.address[1]
            builds = cluster.table_builds
            before = await served_by(port, keys)
            flappy, member = replicas[3], cluster.members["R3"]
            flappy.healthy = False
            while member.state != "down":
                await asyncio.sleep(0.005)
            during = await served_by(port, keys)
            flappy.healthy = True
            while member.state != "up":
                await asyncio.sleep(0.005)
            after = await served_by(port, keys)
            flaps = 0
            for _ in range(100):
                for want in ("down", "up"):
                    flappy.healthy = want == "up"
                    while member.state != want:
                        await asyncio.sleep(0.002)
                flaps += 1
            return builds, cluster.table_builds, flaps, before, during, after
        finally:
            await balancer.stop()
            for r in replicas:
                r.close()

    builds, builds_after, flaps, before, during, after = uvloop.run(scenario())
    moved = [(b, d) for b, d in zip(before, during, strict=True) if b != d]
    assert {b for b, _ in moved} == {"R3"}  # only the flapping replica's keys moved
    assert len(moved) == before.count("R3") and "R3" not in during
    assert 0.05 < len(moved) / len(keys) < 0.15  # its share of ten (Maglev: even)
    assert after == before  # they came back to it
    assert flaps == 100 and builds_after == builds == 1
