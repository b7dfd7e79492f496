"""Docker replicas against a real engine: the provider, fastlb end to end, the compose stack.

Skipped as a whole only when no Docker engine answers (CI starts one). The images must exist:
docker/build-images.sh builds them, from Debian packages, with no registry.

Every test uses its own cluster label and name prefix (a uuid), and a fixture removes every
container of that label or prefix whether the test passes or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import uvloop

from bench.healing import run_trials, signal_container
from fastlb.config import Config, ProxyConfig, ReplicasConfig
from fastlb.errors import ReplicaError
from fastlb.replicas.docker import CLUSTER_LABEL, REPLICA_LABEL, DockerProvider
from tests.conftest import ROOT, Fastlb, http_get

REPLICA_IMAGE = "fastlb-replica:latest"
BALANCER_IMAGE = "fastlb:latest"
COMPOSE_CLUSTER = "fastlb-compose"  # conf/compose.toml
COMPOSE_NETWORK = "net1"

StartFastlb = Callable[[str], Fastlb]


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A client of the local engine; the whole module is skipped if there is none."""
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine reachable ({exc}); start one with `dockerd &`")
    for image in (REPLICA_IMAGE, BALANCER_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} not found: build it with docker/build-images.sh")
    try:
        yield client
    finally:
        client.close()


def remove_containers(client: Any, **filters: str) -> None:
    for container in client.containers.list(all=True, filters=filters):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture
def tag(engine: Any) -> Iterator[str]:
    """A unique cluster label and name prefix; its containers are removed after the test."""
    value = f"t{uuid.uuid4().hex[:10]}"
    try:
        yield value
    finally:
        remove_containers(engine, label=f"{CLUSTER_LABEL}={value}")
        remove_containers(engine, name=value)


def config(tag: str, count: int = 2, **options: Any) -> ReplicasConfig:
    names = tuple(f"{tag}-{i}" for i in range(1, count + 1))
    return ReplicasConfig(provider="docker", count=count, names=names, cluster=tag, **options)


def served_by(body: bytes) -> str:
    """The replica name in a /home answer."""
    message: str = json.loads(body)["message"]
    return message.removeprefix("Hello from Server: ")


def home(host: str, port: int) -> str:
    """Ask a replica directly, through its published loopback port."""
    assert host == "127.0.0.1"
    status, _, body = http_get(port, "/home")
    assert status == 200, (port, status, body)
    return served_by(body)


def ours(client: Any, tag: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={tag}"}))


def test_start_publishes_on_loopback_only_and_stop_removes(engine: Any, tag: str) -> None:
    async def scenario() -> None:
        provider = DockerProvider(config(tag))
        try:
            replicas = await asyncio.gather(*(provider.start(n) for n in provider.names()))
            assert [r.name for r in replicas] == provider.names()
            for replica in replicas:
                assert replica.host == "127.0.0.1"
                assert provider.address(replica.name) == ("127.0.0.1", replica.port)
                assert home(replica.host, replica.port) == replica.name
                container = engine.containers.get(replica.name)
                assert container.name == replica.name
                assert container.labels[CLUSTER_LABEL] == tag
                assert container.labels[REPLICA_LABEL] == replica.name
                assert f"REPLICA_NAME={replica.name}" in container.attrs["Config"]["Env"]
                bindings = container.attrs["HostConfig"]["PortBindings"]["5000/tcp"]
                assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
                published = container.attrs["NetworkSettings"]["Ports"]["5000/tcp"]
                assert {(b["HostIp"], int(b["HostPort"])) for b in published} == {
                    ("127.0.0.1", replica.port)
                }
            with pytest.raises(ReplicaError, match="already running"):
                await provider.start(replicas[0].name)
            await provider.stop(replicas[0].name)
            assert [c.name for c in ours(engine, tag)] == [replicas[1].name]
            await provider.stop(replicas[0].name)  # not running: not an error
        finally:
            await provider.close()
        assert ours(engine, tag) == []

    asyncio.run(scenario())


def test_a_second_provider_adopts_without_duplicates(engine: Any, tag: str) -> None:
    async def scenario() -> None:
        first = DockerProvider(config(tag, 3, stop_on_exit=False))
        try:
            started = await asyncio.gather(*(first.start(n) for n in first.names()))
            ids = {r.name: engine.containers.get(r.name).id for r in started}
            engine.containers.get(started[2].name).kill()  # an exited leftover
        finally:
            await first.close()
        assert len(ours(engine, tag)) == 3, "stop_on_exit = false must leave them"

        second = DockerProvider(config(tag, 3))
        try:
            adopted = await second.adopt()
            assert sorted(r.name for r in adopted) == sorted(n for n in ids if n != started[2].name)
            for replica in adopted:
                assert engine.containers.get(replica.name).id == ids[replica.name]
                assert home(replica.host, replica.port) == replica.name
                assert second.address(replica.name) == (replica.host, replica.port)
            # The exited one was removed, and adopting again finds the same two.
            assert sorted(c.name for c in ours(engine, tag)) == sorted(r.name for r in adopted)
            assert sorted(r.name for r in await second.adopt()) == sorted(r.name for r in adopted)
            with pytest.raises(ReplicaError, match="already running"):
                await second.start(adopted[0].name)
            await second.start(started[2].name)  # the missing one, started anew
            assert len(ours(engine, tag)) == 3
        finally:
            await second.close()
        assert ours(engine, tag) == []

    asyncio.run(scenario())


def test_start_takes_over_a_running_leftover(engine: Any, tag: str) -> None:
    """A fastlb that does not call adopt() first still starts no duplicate, and does not keep
    a leftover that runs another command than the one it would start."""

    async def scenario() -> None:
        first = DockerProvider(config(tag, 1, stop_on_exit=False))
        (name,) = first.names()
        try:
            await first.start(name)
            cid = engine.containers.get(name).id
        finally:
            await first.close()
        second = DockerProvider(config(tag, 1, stop_on_exit=False))
        try:
            replica = await second.start(name)
            assert engine.containers.get(name).id == cid
            assert home(replica.host, replica.port) == name
        finally:
            await second.close()
        third = DockerProvider(config(tag, 1, latency_ms=1.0))
        try:
            replica = await third.start(name)
            assert engine.containers.get(name).id != cid
            assert [c.name for c in ours(engine, tag)] == [name]
            assert home(replica.host, replica.port) == name
        finally:
            await third.close()
        assert ours(engine, tag) == []

    asyncio.run(scenario())


def test_on_exit_reports_a_kill_but_not_a_stop(engine: Any, tag: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        provider = DockerProvider(config(tag))
        exits: list[str] = []
        reported = asyncio.Event()

        def on_exit(name: str, detail: str) -> None:
            assert asyncio.get_running_loop() is loop  # called on the loop, not the thread
            assert detail.startswith("container ") and " exited with " in detail, detail
            # What it said last, read from the engine before the container went away.
            assert "; its last output:\n" in detail and f"replica {name} listening on" in detail
            exits.append(name)
            reported.set()

        provider.on_exit(on_exit)
        try:
            killed, stopped = provider.names()
            await asyncio.gather(provider.start(killed), provider.start(stopped))
            engine.containers.get(killed).kill()
            async with asyncio.timeout(3.0):
                await reported.wait()
            assert exits == [killed]
            with pytest.raises(KeyError):
                provider.address(killed)
            await provider.stop(stopped)
            await asyncio.sleep(1.5)
            assert exits == [killed], "a replica stopped on purpose must not be reported"
            # The dead one can be started again under its name.
            await provider.start(killed)
        finally:
            await provider.close()
        assert ours(engine, tag) == []

    asyncio.run(scenario())


@pytest.mark.parametrize("after", [0.05, 0.5])
def test_close_removes_containers_whose_start_was_cancelled(
    engine: Any, tag: str, after: float
) -> None:
    """fastlb stopping while replicas come up (the create still in an executor thread, or the
    container waiting for /heartbeat) leaves no container behind."""

    async def scenario() -> None:
        provider = DockerProvider(config(tag))
        starting = asyncio.gather(*(provider.start(n) for n in provider.names()))
        await asyncio.sleep(after)
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await provider.close()
        assert ours(engine, tag) == []

    asyncio.run(scenario())


def test_unreachable_engine_says_what_to_run() -> None:
    async def scenario() -> None:
        provider = DockerProvider(
            ReplicasConfig(provider="docker", docker_url="unix:///nonexistent.sock")
        )
        try:
            with pytest.raises(ReplicaError) as info:
                await provider.start("Server1")
            with pytest.raises(ReplicaError):
                await provider.adopt()
        finally:
            await provider.close()
        message = str(info.value)
        assert message.startswith(
            "cannot reach the Docker engine at unix:///nonexistent.sock: No such file or directory;"
        ), message
        assert "dockerd &" in message and "docker_url / DOCKER_HOST" in message

    asyncio.run(scenario())


def test_missing_image_and_foreign_container_are_clear_errors(engine: Any, tag: str) -> None:
    async def scenario() -> None:
        missing = DockerProvider(config(tag, image=f"fastlb-missing-{tag}:latest"))
        try:
            with pytest.raises(ReplicaError) as info:
                await missing.start(missing.names()[0])
        finally:
            await missing.close()
        assert str(info.value) == (
            f"image fastlb-missing-{tag}:latest not found; build it with `make images`"
        )

        foreign = f"{tag}-foreign"
        engine.containers.create(REPLICA_IMAGE, name=foreign)  # no fastlb label
        provider = DockerProvider(config(tag))
        try:
            with pytest.raises(ReplicaError, match="already exists and is not a fastlb replica"):
                await provider.start(foreign)
        finally:
            await provider.close()
        assert engine.containers.get(foreign).labels == {}, "someone else's: left alone"

    asyncio.run(scenario())


def test_fastlb_serves_from_containers_and_removes_them_on_sigterm(
    engine: Any, tag: str, start_fastlb: StartFastlb
) -> None:
    names = [f"{tag}-{i}" for i in range(1, 4)]
    quoted = ", ".join(f'"{n}"' for n in names)
    lb = start_fastlb(
        '[proxy]\nlisten = "127.0.0.1:{port}"\n'
        f'[replicas]\nprovider = "docker"\nnames = [{quoted}]\ncluster = "{tag}"\n'
        "start_timeout = 30\n"
    )
    assert sorted(c.name for c in ours(engine, tag)) == names
    seen = set()
    for i in range(200):
        status, _, body = lb.get("/home", {"X-Request-ID": str(i)})
        assert status == 200, body
        seen.add(served_by(body))
        if seen == set(names):
            break
    assert seen == set(names)
    lb.proc.send_signal(signal.SIGTERM)
    assert lb.proc.wait(timeout=30) == 0
    assert ours(engine, tag) == []


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_compose_stack_serves_on_5000(engine: Any) -> None:
    if port_taken(5000):
        pytest.skip("127.0.0.1:5000 is taken; the compose stack publishes the balancer there")
    project = f"fastlbtest{uuid.uuid4().hex[:8]}"
    compose = ["docker-compose", "-p", project]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )

    try:
        up = run("up", "-d")
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 60
        while True:  # the balancer listens once its three replicas answer
            with contextlib.suppress(OSError):
                if http_get(5000, "/home")[0] == 200:
                    break
            assert time.monotonic() < deadline, engine.containers.get("lb").logs()
            time.sleep(0.2)
        seen: set[str] = set()
        for i in range(100):
            status, _, body = http_get(5000, "/home", {"X-Request-ID": str(i)})
            assert status == 200, body
            seen.add(served_by(body))
        logs = engine.containers.get("lb").logs().decode(errors="replace")
        assert seen == {"Server1", "Server2", "Server3"}, logs
        replicas = ours(engine, COMPOSE_CLUSTER)
        # Named for their cluster (two clusters on one engine may both have a Server1).
        assert sorted(c.name for c in replicas) == [
            f"{COMPOSE_CLUSTER}-Server{i}" for i in (1, 2, 3)
        ]
        for container in replicas:  # reached by name on net1; nothing published
            assert COMPOSE_NETWORK in container.attrs["NetworkSettings"]["Networks"]
            assert not container.attrs["HostConfig"]["PortBindings"]
        down = run("down")
        assert down.returncode == 0, down.stderr
        assert ours(engine, COMPOSE_CLUSTER) == [], "the balancer removes its replicas on stop"
    finally:
        run("down", "--timeout", "5")
        remove_containers(engine, label=f"{CLUSTER_LABEL}={COMPOSE_CLUSTER}")
        with contextlib.suppress(docker.errors.NotFound):
            engine.containers.get("lb").remove(force=True)
        for network in engine.networks.list(names=[COMPOSE_NETWORK]):
            if network.name == COMPOSE_NETWORK:
                with contextlib.suppress(docker.errors.NotFound):
                    network.remove()


def test_a_killed_container_is_replaced_and_serving(engine: Any, tag: str) -> None:
    """The same measurement as `python -m bench.healing --docker`, once, with a loose bound."""
    cfg = Config(
        proxy=ProxyConfig(port=0),
        replicas=config(tag, count=2, start_timeout=30.0),
    )
    (kill,) = uvloop.run(run_trials(kills=1, stops=0, cfg=cfg, send=signal_container))
    print(f"\ndocker kill: detected {kill.detected * 1e3:.0f} ms, serving {kill.serving * 1e3:.0f} ms")
    assert 0 < kill.detected < 3.0  # the engine's die event, not missed heartbeats
    assert 0 < kill.serving < 15.0
