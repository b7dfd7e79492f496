"""How fast fastlb notices a failed replica and has a replacement serving.

    python -m bench.healing [--kills 5] [--stops 2] [--docker | --swarm]

Runs a balancer in this process on real child replicas, and for each trial kills one replica
(SIGKILL: the process is gone) or freezes it (SIGSTOP: a hung process that still accepts
connections). It reports, per trial, the time from the signal to the replica leaving the
routing (detection: its `Upstream.up` cleared, read when a request picks it) and to its
replacement answering /home through the balancer.

With --swarm the replicas are the tasks of a Swarm service (a swarm must be active): fastlb
does not replace a task, Swarm does, in the same slot, and fastlb moves the member to the new
task once it answers. Only kills are run there: a frozen task still runs as far as Swarm can
tell, so Swarm never replaces it (fastlb takes it out of the routing, and that is all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import uvloop

from fastlb.app import Balancer
from fastlb.config import Config, HealthConfig, ProxyConfig, ReplicasConfig, swarm_service

POLL = 0.001


@dataclass
class Trial:
    how: str
    replica: str
    detected: float  # seconds from the signal to the data path passing it over
    serving: float  # seconds from the signal to the replacement answering through the proxy


def config(port: int = 0) -> Config:
    return Config(
        proxy=ProxyConfig(port=port),
        replicas=ReplicasConfig(),
        health=HealthConfig(),
    )


def signal_process(balancer: Balancer, name: str, sig: signal.Signals) -> None:
    """Signal a local replica's process."""
    replica = balancer.cluster.members[name].replica
    assert replica is not None and replica.pid is not None
    os.kill(replica.pid, sig)


def signal_container(balancer: Balancer, name: str, sig: signal.Signals) -> None:
    """Signal a Docker replica's container through the engine (the SDK, as fastlb does)."""
    import docker

    from fastlb.replicas.docker import container_name

    cluster = balancer.config.replicas.cluster
    client = docker.from_env()
    try:
        # The container's name carries its cluster (fastlb-bench-Server1 for Server1).
        client.containers.get(container_name(cluster, name)).kill(signal=sig.name)
    finally:
        client.close()


def signal_task(balancer: Balancer, name: str, sig: signal.Signals) -> None:
    """Signal the container of a Swarm task (member `<service>.<slot>`) through the engine."""
    import docker

    service = name.rpartition(".")[0]
    client = docker.from_env()
    try:
        filters = {"label": f"com.docker.swarm.service.name={service}", "status": "running"}
        for container in client.containers.list(filters=filters):
            if container.labels.get("com.docker.swarm.task.name", "").startswith(f"{name}."):
                container.kill(signal=sig.name)
                return
        raise AssertionError(f"no running container of task {name}")
    finally:
        client.close()


Signaller = Callable[[Balancer, str, signal.Signals], None]


async def trial(
    balancer: Balancer, name: str, how: str, send: Signaller = signal_process
) -> Trial:
    cluster = balancer.cluster
    server = balancer.server
    assert server is not None
    member = cluster.members[name]
    restarts = member.restarts
    before = member.replica
    port = server.address[1]
    started = time.monotonic()
    sig = signal.SIGKILL if how == "kill" else signal.SIGSTOP
    await asyncio.get_running_loop().run_in_executor(None, send, balancer, name, sig)
    detected = serving = 0.0
    while time.monotonic() - started < 30:
        # Detection: the data path is told to pass the replica over (health is read when a
        # request picks it; its name stays in the table, which is not rebuilt).
        upstream = member.upstream
        picked = upstream is not None and upstream.up
        if not detected and not picked:
            detected = time.monotonic() - started
        # Replaced by fastlb (a restart) or by the engine (a Swarm task moved to anew).
        replaced = member.restarts > restarts or member.replica is not before
        if detected and replaced and picked:
            # Up again on a new process: prove it serves its keys.
            key = _key_for(balancer, name)
            if await _home_from_key(port, key, name):
                serving = time.monotonic() - started
                break
        await asyncio.sleep(POLL)
    return Trial(how, name, detected, serving)


def _key_for(balancer: Balancer, name: str) -> bytes:
    server = balancer.server
    assert server is not None and server.route is not None
    table = server.route.table
    for i in range(100000, 200000):
        key = b"%d" % i
        if table.names[table.lookup(key)] == name:
            return key
    raise AssertionError(f"no key maps to {name}")


async def _home_from_key(port: int, key: bytes, name: str) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /home HTTP/1.1\r\nHost: b\r\nX-Request-ID: " + key + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        return head.startswith(b"HTTP/1.1 200") and b"X-Served-By: " + name.encode() in head
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return False
    finally:
        writer.close()


async def run_trials(
    kills: int, stops: int, cfg: Config | None = None, send: Signaller = signal_process
) -> list[Trial]:
    cfg = cfg or config()
    balancer = Balancer(cfg)
    await balancer.start()
    trials: list[Trial] = []
    try:
        names = list(cfg.replicas.names)
        for i in range(kills + stops):
            how = "kill" if i < kills else "stop"
            trials.append(await trial(balancer, names[i % len(names)], how, send))
            await asyncio.sleep(cfg.health.crash_window + 0.2)  # not a crash loop next time
    finally:
        await balancer.stop()
    return trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--stops", type=int, default=2)
    engines = parser.add_mutually_exclusive_group()
    engines.add_argument(
        "--docker", action="store_true", help="Docker replicas (needs the engine and `make images`)"
    )
    engines.add_argument(
        "--swarm", action="store_true",
        help="the tasks of a Swarm service (needs an active swarm and `make images`); kills only",
    )
    args = parser.parse_args()
    cfg, send = config(), signal_process
    if args.docker:
        cfg = replace(cfg, replicas=ReplicasConfig(provider="docker", cluster="fastlb-bench"))
        send = signal_container
    if args.swarm:
        swarm = ReplicasConfig(provider="swarm", cluster="fastlb-bench", start_timeout=30.0)
        names = tuple(f"{swarm_service(swarm.cluster)}.{slot}" for slot in (1, 2, 3))
        cfg = replace(cfg, replicas=replace(swarm, names=names, count=len(names)))
        send, args.stops = signal_task, 0
    trials = uvloop.run(run_trials(args.kills, args.stops, cfg, send))
    print("| signal | replica | detected ms | replacement serving ms |")
    print("|---|---|--:|--:|")
    for t in trials:
        print(f"| {t.how} | {t.replica} | {t.detected * 1e3:.1f} | {t.serving * 1e3:.0f} |")
    for how in ("kill", "stop"):
        rows = [t for t in trials if t.how == how]
        if rows:
            detected = statistics.median(t.detected for t in rows) * 1e3
            serving = statistics.median(t.serving for t in rows) * 1e3
            print(f"median {how}: detected {detected:.1f} ms, serving {serving:.0f} ms")


if __name__ == "__main__":
    main()
