"""Swarm replicas against a real one-node swarm: fastlb creates or adopts the service, hashes
over its tasks, follows Swarm's replacements and scales it through the classic API.

Skipped as a whole only when no Docker engine answers (CI starts one). The swarm is this
engine's: if it is inactive the session fixture runs `swarm init --advertise-addr 127.0.0.1`
and leaves it (`leave --force`) at the end; a swarm that was already active is left as it was.
Every test has its own cluster label (a uuid), and a fixture removes that cluster's service,
containers and networks whether the test passes or fails.

Host-mode ports listen on every address (Swarm cannot bind them to one); the tests' traffic
itself stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import uvloop

from bench.healing import run_trials, signal_task
from fastlb.config import Config, ConfigError, ProxyConfig, ReplicasConfig, parse, swarm_service
from fastlb.errors import ReplicaError
from fastlb.replicas.docker import CLUSTER_LABEL
from fastlb.replicas.swarm import SwarmProvider, service_options, slot_of
from tests.conftest import ROOT, Fastlb, load_in_background, wait_for

REPLICA_IMAGE = "fastlb-replica:latest"
SWARM_BRIDGE = "docker_gwbridge"

StartFastlb = Callable[[str], Fastlb]


# -- without an engine --------------------------------------------------------------------------


def test_slot_names_and_what_swarm_adds_and_removes() -> None:
    provider = SwarmProvider(ReplicasConfig(provider="swarm", cluster="shop"))
    assert slot_of("fastlb-shop", "fastlb-shop.12") == 12
    for name in ("fastlb-shop", "fastlb-shop.", "fastlb-shop.01", "other.1", "fastlb-shop.x"):
        assert slot_of("fastlb-shop", name) is None, name
    running = ["fastlb-shop.1", "fastlb-shop.3", "fastlb-shop.2"]
    assert provider.new_names(2, running) == ["fastlb-shop.4", "fastlb-shop.5"]
    assert provider.removal(2, running) == ["fastlb-shop.2", "fastlb-shop.3"]
    assert provider.removal(0, running) == []


def test_service_spec_publishes_in_host_mode_and_names_each_task_by_slot() -> None:
    config = ReplicasConfig(provider="swarm", cluster="shop", env=(("MODE", "{port}"),))
    options = service_options(config, 3)
    assert options["name"] == "fastlb-shop"
    assert options["mode"].mode == "replicated" and options["mode"].replicas == 3
    assert options["labels"] == options["container_labels"] == {CLUSTER_LABEL: "shop"}
    assert options["env"] == ["REPLICA_NAME=fastlb-shop.{{.Task.Slot}}", "MODE=5000"]
    assert options["endpoint_spec"]["Ports"] == [
        {"TargetPort": 5000, "PublishMode": "host", "Protocol": "tcp"}
    ]
    assert options["restart_policy"]["Condition"] == "any"
    assert options["command"] == ["python3", "-m", "replica", "--host", "0.0.0.0", "--port", "5000"]
    networked = service_options(ReplicasConfig(provider="swarm", network="overlay1"), 1)
    assert networked["networks"] == ["overlay1"] and "endpoint_spec" not in networked


def test_config_names_swarm_replicas_by_slot() -> None:
    replicas = parse('[replicas]\nprovider = "swarm"\ncount = 2\ncluster = "shop"\n').replicas
    assert replicas.names == ("fastlb-shop.1", "fastlb-shop.2")
    assert swarm_service("fastlb-x") == "fastlb-x"
    with pytest.raises(ConfigError) as info:
        parse('[replicas]\nprovider = "swarm"\nnames = ["a"]\n')
    assert str(info.value) == (
        'lb.toml: [replicas] names: not used with provider = "swarm" (Swarm names its tasks '
        "by slot: fastlb.1, fastlb.2, ...); set count"
    )
    with pytest.raises(ConfigError, match=r"unknown placeholder \{name\}"):
        parse('[replicas]\nprovider = "swarm"\ncommand = ["app", "{name}"]\n')


def test_the_controller_holds_add_and_remove_to_the_names_swarm_gives_and_takes() -> None:
    """What /add, /rm and the admin socket's add and del reach (`Cluster`): no engine needed,
    the checks come before anything is started."""
    from fastlb.control.api import ControlError
    from fastlb.control.cluster import Cluster
    from fastlb.control.tables import TableBuilder
    from fastlb.proxy.upstream import Upstream

    names = ("fastlb-shop.1", "fastlb-shop.2", "fastlb-shop.3")
    replicas = ReplicasConfig(provider="swarm", cluster="shop", names=names, count=3)
    config = Config(replicas=replicas)
    cluster = Cluster(
        config, SwarmProvider(replicas), TableBuilder(config.routing),
        lambda r: Upstream(r.name, r.host, r.port),
    )
    for name in names:
        cluster._new_member(name)
    assert cluster.generated_names(2, []) == ["fastlb-shop.4", "fastlb-shop.5"]
    assert cluster.generated_names(1, ["fastlb-shop.4"]) == ["fastlb-shop.5"]
    cluster.check_new_names(["fastlb-shop.4", "fastlb-shop.5"])
    with pytest.raises(ControlError) as info:
        cluster.check_new_names(["fastlb-shop.5"])
    assert str(info.value) == (
        "the swarm provider names new replicas itself: the next 1 are fastlb-shop.4; ask for "
        "those (or for n alone)"
    )
    assert cluster.removal_names(2, []) == ["fastlb-shop.2", "fastlb-shop.3"]
    assert cluster.removal_names(1, ["fastlb-shop.3"]) == ["fastlb-shop.3"]
    with pytest.raises(ControlError, match=r"removing 1 takes fastlb-shop\.3;"):
        cluster.removal_names(1, ["fastlb-shop.1"])
    with pytest.raises(ControlError, match=r"removing 1 takes fastlb-shop\.3;"):
        asyncio.run(cluster.remove(["fastlb-shop.1"]))
    assert list(cluster.members) == list(names), "nothing changed"


# -- against the engine -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def swarm() -> Iterator[Any]:
    """A client of a swarm manager: this engine, made a one-node swarm if it was not one."""
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine reachable ({exc}); start one with `dockerd &`")
    try:
        client.images.get(REPLICA_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {REPLICA_IMAGE} not found: build it with docker/build-images.sh")
    state = (client.info().get("Swarm") or {}).get("LocalNodeState")
    initialised = state != "active"
    networks = {n.name for n in client.networks.list()}
    if initialised:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        yield client
    finally:
        try:
            if initialised:
                client.swarm.leave(force=True)
                # Leaving removes `ingress` but not the bridge the swarm made for its tasks'
                # host traffic: the swarm's, so ours to remove when we made the swarm.
                for network in client.networks.list(names=[SWARM_BRIDGE]):
                    if network.name == SWARM_BRIDGE and SWARM_BRIDGE not in networks:
                        with contextlib.suppress(docker.errors.APIError):
                            network.remove()
                assert {n.name for n in client.networks.list()} == networks, "networks left"
        finally:
            client.close()


def ours(client: Any, tag: str) -> tuple[list[Any], list[Any]]:
    """The services and the containers of cluster `tag`."""
    label = {"label": f"{CLUSTER_LABEL}={tag}"}
    return client.services.list(filters=label), client.containers.list(all=True, filters=label)


def remove_cluster(client: Any, tag: str) -> None:
    label = {"label": f"{CLUSTER_LABEL}={tag}"}
    for service in client.services.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            service.remove()
    deadline = time.monotonic() + 20
    while client.containers.list(all=True, filters=label) and time.monotonic() < deadline:
        time.sleep(0.2)
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for network in client.networks.list(filters=label):
        # An overlay network can still be listed for a moment after it was removed, and
        # removing it again is a 500 "not found": whether it is gone is checked below.
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
    wait_for(lambda: not client.networks.list(filters=label), 20, f"cluster {tag}'s networks gone")


@pytest.fixture
def tag(swarm: Any) -> Iterator[str]:
    """A unique cluster label; its service, containers and networks are removed afterwards."""
    value = f"t{uuid.uuid4().hex[:10]}"
    try:
        yield value
    finally:
        remove_cluster(swarm, value)


def lb_config(tag: str, count: int, extra: str = "") -> str:
    return (
        '[proxy]\nlisten = "127.0.0.1:{port}"\n'
        f'[replicas]\nprovider = "swarm"\ncount = {count}\ncluster = "{tag}"\n'
        f"start_timeout = 30\n{extra}"
    )


def tasks(client: Any, tag: str) -> dict[int, str]:
    """slot -> task id of the service's running tasks."""
    (service,) = client.services.list(filters={"label": f"{CLUSTER_LABEL}={tag}"})
    return {
        t["Slot"]: t["ID"]
        for t in service.tasks(filters={"desired-state": "running"})
        if t["Status"]["State"] == "running"
    }


def served(lb: Fastlb, want: set[str], tries: int = 400) -> set[str]:
    """Who answers /home through fastlb, over keys, until every one of `want` has."""
    seen: set[str] = set()
    for i in range(tries):
        status, headers, body = lb.get("/home", {"X-Request-ID": f"k{i}"})
        assert status == 200, body
        seen.add(headers["x-served-by"])
        if seen >= want:
            break
    return seen


def rep(lb: Fastlb, method: str = "GET", path: str = "/rep", body: Any = None) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=60)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_service_serves_scales_by_add_and_rm_and_goes_on_sigterm(
    swarm: Any, tag: str, start_fastlb: StartFastlb
) -> None:
    service = swarm_service(tag)
    names = {f"{service}.{slot}" for slot in (1, 2, 3)}
    lb = start_fastlb(lb_config(tag, 3))
    services, _ = ours(swarm, tag)
    assert [s.name for s in services] == [service]
    before = tasks(swarm, tag)
    assert sorted(before) == [1, 2, 3]
    assert served(lb, names) == names

    # 3 -> 5: the new tasks take slots 4 and 5; the running ones are not replaced.
    status, body = rep(lb, "POST", "/add", {"n": 2})
    assert status == 200, body
    five = [f"{service}.{slot}" for slot in range(1, 6)]
    assert body == {"message": {"N": 5, "replicas": five}, "status": "successful"}
    after = tasks(swarm, tag)
    assert {slot: after[slot] for slot in (1, 2, 3)} == before
    assert served(lb, set(five)) == set(five)

    # Names Swarm would not give, or removals it would not make: a 400 that says which.
    status, body = rep(lb, "POST", "/add", {"n": 1, "hostnames": ["Mine"]})
    assert status == 400
    assert body["message"] == (
        f"<Error> the swarm provider names new replicas itself: the next 1 are {service}.6; "
        "ask for those (or for n alone)"
    )
    status, body = rep(lb, "DELETE", "/rm", {"n": 1, "hostnames": [f"{service}.1"]})
    assert status == 400
    assert f"removing 1 takes {service}.5" in body["message"], body

    # 5 -> 2: Swarm removes the highest slots, and so does fastlb.
    status, body = rep(lb, "DELETE", "/rm", {"n": 3})
    assert status == 200, body
    assert body["message"] == {"N": 2, "replicas": [f"{service}.1", f"{service}.2"]}
    wait_for(lambda: sorted(tasks(swarm, tag)) == [1, 2], 20, "slots 3-5 removed")
    assert tasks(swarm, tag) == {slot: before[slot] for slot in (1, 2)}
    assert served(lb, {f"{service}.1", f"{service}.2"}, 100) == {f"{service}.1", f"{service}.2"}

    lb.proc.send_signal(signal.SIGTERM)
    assert lb.proc.wait(timeout=60) == 0
    assert ours(swarm, tag) == ([], []), "stop_on_exit removes the service and its containers"


def test_a_killed_task_under_load_fails_no_request_and_its_replacement_is_routed(
    swarm: Any, tag: str, start_fastlb: StartFastlb
) -> None:
    service = swarm_service(tag)
    lb = start_fastlb(lb_config(tag, 3))
    before = tasks(swarm, tag)
    done = threading.Event()
    thread, results = load_in_background(lb.port, 30.0, stop=done, concurrency=8)
    try:
        time.sleep(1.0)
        _, _, body = lb.get("/rep")
        victim = json.loads(body)["message"]["replicas"][0]
        slot = slot_of(service, victim)
        assert slot is not None
        (container,) = swarm.containers.list(
            filters={"label": f"com.docker.swarm.task.id={before[slot]}"}
        )
        killed_at = time.monotonic()  # before: the engine answers a kill ~0.2 s later
        container.kill()

        def replaced() -> bool:
            now = tasks(swarm, tag)
            return slot in now and now[slot] != before[slot]

        wait_for(replaced, 30, f"Swarm replaces slot {slot}")
        # Routed again once it answers: requests keyed to it are served by it (its name).
        deadline = time.monotonic() + 20
        while True:
            seen = served(lb, {victim}, 200)
            if victim in seen:
                break
            assert time.monotonic() < deadline, f"{victim} not routed again: {seen}"
            time.sleep(0.1)
        back = time.monotonic() - killed_at
        time.sleep(0.5)
    finally:
        done.set()
        thread.join()
    (result,) = results
    print(f"\n{result.ok} requests, {len(result.failures)} failed, served {result.served}, "
          f"{victim} routed again {back:.2f} s after the kill")
    assert result.failures == []
    assert result.ok > 100
    now = tasks(swarm, tag)
    assert sorted(now) == [1, 2, 3] and {s: now[s] for s in now if s != slot} == {
        s: before[s] for s in before if s != slot
    }
    label = {"label": f"{CLUSTER_LABEL}={tag}", "status": "running"}
    assert len(swarm.containers.list(filters=label)) == 3, "fastlb started no container itself"
    _, body = rep(lb)
    assert body["message"]["N"] == 3
    # Swarm's replacement is counted as a recovery, with the time the slot was away.
    _, _, metrics = lb.get("/metrics")
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.decode().splitlines()
        if line.startswith("fastlb_replica_recover")
    }
    assert values["fastlb_replica_recoveries_total"] == 1, values
    assert 0 < values["fastlb_replica_recovery_seconds_total"] < back, values


def test_restarted_fastlb_adopts_the_service(
    swarm: Any, tag: str, start_fastlb: StartFastlb
) -> None:
    service = swarm_service(tag)
    names = {f"{service}.1", f"{service}.2"}
    config = lb_config(tag, 2, "stop_on_exit = false\n")
    first = start_fastlb(config)
    (created,) = ours(swarm, tag)[0]
    before = tasks(swarm, tag)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    assert [s.id for s in ours(swarm, tag)[0]] == [created.id], "left for the next fastlb"

    second = start_fastlb(config)
    assert [s.id for s in ours(swarm, tag)[0]] == [created.id], "adopted, not created again"
    assert tasks(swarm, tag) == before
    assert served(second, names) == names
    _, body = rep(second)
    assert body["message"] == {"N": 2, "replicas": sorted(names)}

    # A reload with another count scales the same service by its next slot.
    text = second.config.read_text().replace("count = 2", "count = 3")
    second.config.write_text(text)
    second.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: rep(second)[1]["message"]["N"] == 3, 30, "the reload adds slot 3")
    assert sorted(tasks(swarm, tag)) == [1, 2, 3]
    assert {slot: tasks(swarm, tag)[slot] for slot in (1, 2)} == before
    assert [s.id for s in ours(swarm, tag)[0]] == [created.id]


def test_a_killed_task_is_replaced_by_swarm_and_serving(swarm: Any, tag: str) -> None:
    """The same measurement as `python -m bench.healing --swarm`, once, with a loose bound."""
    service = swarm_service(tag)
    names = (f"{service}.1", f"{service}.2")
    replicas = ReplicasConfig(
        provider="swarm", cluster=tag, names=names, count=2, start_timeout=30.0
    )
    cfg = Config(proxy=ProxyConfig(port=0), replicas=replicas)
    (kill,) = uvloop.run(run_trials(kills=1, stops=0, cfg=cfg, send=signal_task))
    print(f"\nswarm kill: detected {kill.detected * 1e3:.0f} ms, "
          f"serving {kill.serving * 1e3:.0f} ms")
    assert 0 < kill.detected < 3.0
    assert 0 < kill.serving < 15.0
    assert ours(swarm, tag) == ([], [])


def test_a_service_of_that_name_not_ours_is_a_clear_error_and_left_alone(
    swarm: Any, tag: str
) -> None:
    service = swarm_service(tag)
    foreign = swarm.services.create(
        REPLICA_IMAGE, name=service, labels={CLUSTER_LABEL: "someone-else"},
        mode=docker.types.ServiceMode("replicated", replicas=0),
    )

    async def scenario() -> str:
        names = (f"{service}.1",)
        provider = SwarmProvider(
            ReplicasConfig(provider="swarm", cluster=tag, names=names, count=1)
        )
        try:
            with pytest.raises(ReplicaError) as info:
                await provider.start(names[0])
            return str(info.value)
        finally:
            await provider.close()

    try:
        message = asyncio.run(scenario())
        assert message == (
            f"Swarm service {service!r} already exists and belongs to fastlb cluster "
            f"'someone-else' (label {CLUSTER_LABEL}); remove it, or give this cluster another "
            "name"
        )
        (still,) = swarm.services.list(filters={"name": service})
        assert still.id == foreign.id
        assert still.attrs["Spec"]["Labels"] == {CLUSTER_LABEL: "someone-else"}, "left alone"
    finally:
        foreign.remove()


CLIENT = """
import http.client, sys
seen = set()
for i in range(200):
    conn = http.client.HTTPConnection(sys.argv[1], 8080, timeout=10)
    conn.request("GET", "/home", headers={"X-Request-ID": f"k{i}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
    seen.add(response.getheader("X-Served-By"))
    conn.close()
print(" ".join(sorted(seen)))
"""


def test_fastlb_in_a_container_reaches_the_tasks_on_an_overlay_network(
    swarm: Any, tag: str
) -> None:
    """`network = NAME`: fastlb in a container on an attachable overlay network shared with
    the service, reaching the tasks at their overlay addresses. Tested only from containers on
    that network (the overlay is not reachable from the host, and nothing is published); the
    balancer's image is built from this tree under a tag of the test's own."""
    service = swarm_service(tag)
    network = f"{tag}-net"
    image = f"fastlb-swarmtest:{tag}"
    labels = {CLUSTER_LABEL: tag}
    swarm.networks.create(network, driver="overlay", attachable=True, labels=labels)
    built = subprocess.run(
        ["docker", "build", "-q", "-f", "Dockerfile", "-t", image, "."], cwd=ROOT,
        env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stderr
    config = (
        '[proxy]\nlisten = "0.0.0.0:8080"\n'
        f'[replicas]\nprovider = "swarm"\ncount = 2\ncluster = "{tag}"\n'
        f'network = "{network}"\nstart_timeout = 30\n'
    )
    lb = None
    try:
        lb = swarm.containers.run(
            image, name=f"{tag}-lb", detach=True, network=network, labels=labels,
            entrypoint=["sh", "-c", 'printf "%s" "$LB_TOML" > /tmp/lb.toml && '
                        "exec python3 -m fastlb --config /tmp/lb.toml"],
            command=[], environment={"LB_TOML": config},
            volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
            stop_signal="SIGTERM",
        )

        def listening() -> bool:
            lb.reload()
            assert lb.status == "running", lb.logs().decode(errors="replace")
            return b"listening on" in lb.logs()

        wait_for(listening, 60, "fastlb in its container listens")
        (attached,) = swarm.services.list(filters={"label": f"{CLUSTER_LABEL}={tag}"})
        assert not attached.attrs["Spec"].get("EndpointSpec", {}).get("Ports"), "nothing published"
        output = swarm.containers.run(
            REPLICA_IMAGE, ["python3", "-c", CLIENT, f"{tag}-lb"], network=network,
            labels=labels, remove=True, stdout=True, stderr=True,
        )
        assert output.decode().split() == [f"{service}.1", f"{service}.2"], lb.logs()
        lb.stop(timeout=30)
        assert lb.wait(timeout=30)["StatusCode"] == 0, lb.logs()
        assert ours(swarm, tag)[0] == [], "fastlb removed its service on SIGTERM"
    finally:
        if lb is not None:
            with contextlib.suppress(docker.errors.NotFound):
                lb.remove(force=True)
        remove_cluster(swarm, tag)
        with contextlib.suppress(docker.errors.ImageNotFound):
            swarm.images.remove(image, force=True)
