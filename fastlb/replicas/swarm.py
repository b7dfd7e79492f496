"""Replicas as the tasks of a Docker Swarm service, through the Docker SDK (never the CLI).

fastlb creates one replicated service per cluster, `swarm_service(cluster)` (`fastlb-<cluster>`),
labelled `fastlb.cluster=<cluster>` (its containers too), from `[replicas] image`, `command`,
`env` and `port`, with `replicas = count` and a restart policy of `any`. A restarted fastlb finds
the service by name and label and adopts it: it never creates a second one. A service of that
name without our label is someone else's and is never touched.

Why fastlb still sits in front: Swarm's routing mesh balances round robin; fastlb keeps its own
consistent hashing over the tasks, detects a failure at once (heartbeats, the data path's
suspicion; `Upstream.up` is read when a request picks a replica), and keeps its metrics and the
classic API. Swarm keeps what it is built for: placing tasks and replacing dead ones.

Names: a member is a slot, `<service>.<slot>`. A task Swarm replaces keeps its slot, so the
member keeps its name and its keys; the demo replica answers X-Served-By with that name, read
from REPLICA_NAME, which Swarm fills from its `{{.Task.Slot}}` template for each task (fastlb
cannot: the template is one for every task). Swarm numbers new tasks with the next slots and
removes the highest ones when scaled down, so fastlb cannot choose names: `new_names` and
`removal` say which ones they will be, and the controller holds /add, /rm and the admin socket
to that.

Reaching the tasks:
- `network = ""` (fastlb on the host): the container port is published in host mode with no
  fixed port, so each task gets its own port (32768, 32769, ...), shown in the task's
  `Status.PortStatus`; the address is the task's node (127.0.0.1 when it is this engine's own
  node, the node's `Status.Addr` otherwise) and that port. Swarm cannot bind a host-mode port
  to one address: it listens on all of them (the Docker provider publishes on 127.0.0.1 only).
- `network = "NAME"` (fastlb itself in a container on that network): the service joins NAME,
  an attachable overlay network (created if missing), and a task is reached at its overlay
  address on `[replicas] port`; nothing is published.

Discovery: the Docker API sends no task events, so the service's tasks are polled, about once
a second (every 0.1 s while a start waits for its task or a slot has no running task, so that
a replacement is routed soon after it answers). A task's container dying is an engine event,
though: one thread reads the `die` events of this cluster's containers (they carry its label
and their task's id), so a death is reported in milliseconds, not at the next poll.

Swarm replaces a dead task itself, in the same slot, with a new port: fastlb does not replace
anything (`replaceable = False`), it reports the death (`on_exit`) and, once the new task
answers its heartbeat, the new address (`on_move`).

Every SDK call blocks (HTTP to the engine), so each runs in the loop's default executor; the
loop thread alone changes this provider's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import docker
import docker.errors
import docker.types

from fastlb.config import HealthConfig, ReplicasConfig, swarm_service
from fastlb.errors import ReplicaError
from fastlb.replicas.base import (
    DEFAULT_CHECK,
    ExitCallback,
    HeartbeatCheck,
    MoveCallback,
    Replica,
    heartbeat,
)
from fastlb.replicas.docker import CLUSTER_LABEL, _reason, unreachable

log = logging.getLogger("fastlb.replicas")

Client = Any  # docker.DockerClient (the SDK has no type hints)
T = TypeVar("T")

_DEFAULT_URL: Final = "unix:///var/run/docker.sock"
_LOOPBACK: Final = "127.0.0.1"
_ANY: Final = "0.0.0.0"  # {host} inside a task: every interface, so the published port reaches it
POLL_EVERY: Final = 1.0  # seconds between task listings in the steady state
POLL_FAST: Final = 0.1  # while a start waits or a slot has no running task
_STOP_GRACE_NS: Final = 2_000_000_000  # SIGTERM to SIGKILL when a task is stopped (ns)
_GONE_TIMEOUT: Final = 20.0  # close(): how long to wait for the service's containers to go
#: Task states of a task that will never run again (swarmkit's TaskState after RUNNING).
_ENDED: Final = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task of the service as a poll saw it (pure data: built in the executor thread)."""

    slot: int
    task_id: str
    state: str  # swarmkit's task state: new, pending, ..., running, failed, shutdown, ...
    address: tuple[str, int] | None  # where fastlb reaches it, once it runs
    detail: str = ""  # the engine's message for a task that ended (exit code, error)


def slot_of(service: str, name: str) -> int | None:
    """The slot in `<service>.<slot>`, or None for a name that is not one of the service's."""
    prefix, dot, slot = name.rpartition(".")
    if prefix != service or not dot or not slot.isdigit() or slot.startswith("0"):
        return None
    return int(slot)


def command_of(config: ReplicasConfig) -> list[str]:
    """What every task runs: [replicas] command ({host}: every interface, {port}: the container
    port), or the demo replica, which takes its name from REPLICA_NAME."""
    values = {"host": _ANY, "port": str(config.port)}
    if config.command:
        return [arg.format_map(values) for arg in config.command]
    cmd = ["python3", "-m", "replica", "--host", _ANY, "--port", str(config.port)]
    if config.latency_ms:
        cmd += ["--latency-ms", str(config.latency_ms)]
    if config.jitter_ms:
        cmd += ["--jitter-ms", str(config.jitter_ms)]
    return cmd


def service_options(config: ReplicasConfig, replicas: int) -> dict[str, Any]:
    """The arguments of `services.create` (pure: unit-tested without an engine)."""
    service = swarm_service(config.cluster)
    values = {"host": _ANY, "port": str(config.port)}
    # Swarm expands {{.Task.Slot}} per task: each task's name is its member's name.
    env = [f"REPLICA_NAME={service}.{{{{.Task.Slot}}}}"]
    env += [f"{key}={value.format_map(values)}" for key, value in config.env]
    labels = {CLUSTER_LABEL: config.cluster}
    options: dict[str, Any] = {
        "name": service,
        "command": command_of(config),
        "env": env,
        "labels": labels,
        "container_labels": labels,
        "mode": docker.types.ServiceMode("replicated", replicas=replicas),
        # Swarm restarts a task that ends, whatever its exit code: that is the replacement.
        "restart_policy": docker.types.RestartPolicy(condition="any", delay=0),
        "stop_grace_period": _STOP_GRACE_NS,
    }
    if config.network:
        options["networks"] = [config.network]
    else:
        # Host mode, no fixed published port: one port per task, picked by the engine.
        options["endpoint_spec"] = docker.types.EndpointSpec(
            ports=[{"TargetPort": config.port, "PublishMode": "host", "Protocol": "tcp"}]
        )
    return options


class SwarmProvider:
    """Creates or adopts the service of one fastlb cluster, scales it, and follows its tasks."""

    # Swarm replaces a dead task itself: fastlb starting one too would make a duplicate.
    replaceable = False

    def __init__(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        self._config = config
        self._service = swarm_service(config.cluster)
        self._check = DEFAULT_CHECK if health is None else HeartbeatCheck.of(health)
        self._weights = dict(config.weights)
        self._url = config.docker_url or os.environ.get("DOCKER_HOST") or _DEFAULT_URL
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._scaling = asyncio.Lock()  # one service update at a time (each needs the version)
        self._service_id: str | None = None
        self._want = 0  # the service's replicas as fastlb last set or saw them
        self._node_id = ""  # this engine's own node: its tasks are on 127.0.0.1
        # The threads' caches (executor work, one poll at a time): node addresses and the IPv4
        # port of a task whose engine published it on two ports (IPv4 and IPv6 apart).
        self._node_addrs: dict[str, str] = {}
        self._v4_ports: dict[str, int] = {}
        self._replicas: dict[str, Replica] = {}  # the members: started or adopted
        self._task_of: dict[str, str] = {}  # member name -> the task id it runs as
        self._reported: dict[str, str] = {}  # member name -> the task id reported dead
        self._readying: dict[str, tuple[str, asyncio.Task[None]]] = {}  # new tasks, awaited
        self._views: dict[int, TaskView] = {}  # by slot, from the last poll
        self._polled = asyncio.Condition()
        self._waiting = 0  # start() calls waiting for a task: poll fast
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._drift_told: set[str] = set()  # template differences logged already
        self._poll_error = ""  # the last poll failure logged (a repeat is not logged)
        self._on_exit: ExitCallback | None = None
        self._on_move: MoveCallback | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_events = threading.Event()
        self._events_thread: threading.Thread | None = None
        self._events_stream: Any = None  # the SDK's stream being read, closed to end the thread

    # -- Provider -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._config.names)

    def reconfigure(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        """A reload changes the count (the controller adds and removes slots) and the weights.
        What every task runs (image, command, env, port, network) is the service's template:
        changing it would have Swarm replace every task, so it takes a restart of fastlb (with
        the service removed), and the engine and the cluster say which service is ours."""
        old = self._config
        for key in ("docker_url", "cluster", "image", "command", "env", "port", "network"):
            if getattr(config, key) != getattr(old, key):
                log.warning(
                    "reload: [replicas] %s changed; the Swarm service keeps %r (restart fastlb "
                    "after removing service %s to apply it)", key, getattr(old, key), self._service,
                )
        self._config = dataclasses.replace(
            config, docker_url=old.docker_url, cluster=old.cluster, image=old.image,
            command=old.command, env=old.env, port=old.port, network=old.network,
        )
        self._weights = dict(config.weights)
        if health is not None:
            self._check = HeartbeatCheck.of(health)

    def on_exit(self, callback: ExitCallback) -> None:
        self._on_exit = callback

    def on_move(self, callback: MoveCallback) -> None:
        self._on_move = callback

    def new_names(self, count: int, running: Sequence[str]) -> list[str] | None:
        """Swarm gives new tasks the slots after the highest one."""
        top = max((slot_of(self._service, n) or 0 for n in running), default=0)
        return [f"{self._service}.{slot}" for slot in range(top + 1, top + 1 + count)]

    def removal(self, count: int, running: Sequence[str]) -> list[str] | None:
        """Swarm removes the highest slots when scaled down."""
        slots = sorted((slot_of(self._service, n) or 0, n) for n in running)
        return [name for _, name in slots[len(slots) - count :]] if count > 0 else []

    async def adopt(self) -> list[Replica]:
        """Take over the service a previous fastlb left (stop_on_exit = false, or killed): its
        running tasks that answer are members again, and no second service is created."""
        await self._connect()
        async with self._scaling:
            found = await self._call(self._sync_find)
        if found is None:
            return []
        self._service_id, self._want = found
        log.info("adopted Swarm service %s (%s, %d replicas)", self._service,
                 self._service_id[:12], self._want)
        self._start_watching()
        await self._poll_once()  # the tasks as they are now, before anything is routed
        adopted = []
        for slot, view in sorted(self._views.items()):
            name = f"{self._service}.{slot}"
            if view.state != "running" or view.address is None:
                continue
            replica = self._replica(name, view.address)
            self._replicas[name] = replica
            self._task_of[name] = view.task_id
            adopted.append(replica)
        return adopted

    async def start(self, name: str) -> Replica:
        """Scale the service so that `name`'s slot exists (creating the service the first
        time), then wait for that slot's task to run and answer its heartbeat."""
        slot = slot_of(self._service, name)
        if slot is None:
            raise ReplicaError(
                f"replica {name!r} is not a task of Swarm service {self._service} "
                f"(its tasks are {self._service}.1, {self._service}.2, ...)"
            )
        if name in self._replicas:
            raise ReplicaError(f"replica {name!r} is already running")
        await self._connect()
        async with self._scaling:
            if self._closing:
                raise ReplicaError(f"replica {name!r}: not started, fastlb is stopping")
            if self._service_id is None:
                found = await self._call(self._sync_find)
                if found is None:
                    replicas = max(slot, len(self._config.names))
                    self._service_id = await self._call(self._sync_create, replicas)
                    self._want = replicas
                    log.info("created Swarm service %s with %d replicas", self._service, replicas)
                else:
                    self._service_id, self._want = found
            if self._want < slot:
                await self._call(self._sync_scale, slot)
                self._want = slot
        self._start_watching()
        view = await self._wait_task(name, slot)
        self._replicas[name] = self._replica(name, view.address or ("", 0))
        self._task_of[name] = view.task_id
        self._reported.pop(name, None)
        return self._replicas[name]

    async def stop(self, name: str) -> None:
        """Scale the service below `name`'s slot (Swarm removes the highest slots, so the
        controller stops only those); not an error when it is not running."""
        self._replicas.pop(name, None)
        self._task_of.pop(name, None)
        self._reported.pop(name, None)
        ready = self._readying.pop(name, None)
        if ready is not None:
            ready[1].cancel()
        slot = slot_of(self._service, name)
        if slot is None or self._client is None:
            return
        async with self._scaling:
            if self._service_id is not None and self._want >= slot:
                await self._call(self._sync_scale, slot - 1)
                self._want = slot - 1

    def address(self, name: str) -> tuple[str, int]:
        replica = self._replicas[name]
        return replica.host, replica.port

    async def close(self) -> None:
        """Stop following the tasks; with stop_on_exit, also remove the service and wait until
        its containers are gone (without it, the service keeps running for the next fastlb to
        adopt). Never raises: this runs while fastlb exits."""
        self._closing = True
        tasks = [t for _, t in self._readying.values()]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._readying.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._end_events)
        async with self._scaling:
            if self._config.stop_on_exit and self._client is not None:
                try:
                    found = await self._call(self._sync_find)
                    if found is not None:
                        await self._call(self._sync_remove, found[0])
                except ReplicaError as exc:
                    log.warning("could not remove Swarm service %s: %s", self._service, exc)
            self._service_id = None
        self._replicas.clear()
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.get_running_loop().run_in_executor(None, client.close)

    # -- connecting -----------------------------------------------------------------------------

    @property
    def _docker(self) -> Client:
        if self._client is None:
            raise ReplicaError("the Swarm provider is not connected (or already closed)")
        return self._client

    def _unreachable(self, exc: BaseException) -> ReplicaError:
        return unreachable(self._url, exc)

    def _sync_connect(self) -> tuple[Client, str]:
        try:
            if self._config.docker_url:
                client = docker.DockerClient(base_url=self._config.docker_url, version="auto")
            else:
                client = docker.from_env(version="auto")
            swarm = client.info().get("Swarm") or {}
        except (docker.errors.DockerException, OSError) as exc:
            raise self._unreachable(exc) from None
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            client.close()
            raise ReplicaError(
                f'provider = "swarm" needs the Docker engine at {self._url} to be a swarm '
                f"manager (its swarm is {swarm.get('LocalNodeState') or 'inactive'}); run "
                "`docker swarm init --advertise-addr 127.0.0.1` for a one-node swarm"
            )
        return client, str(swarm.get("NodeID") or "")

    async def _connect(self) -> None:
        """Connect once, on first use (`fastlb --check` needs no engine)."""
        async with self._connecting:
            if self._client is None:
                loop = asyncio.get_running_loop()
                self._client, self._node_id = await loop.run_in_executor(None, self._sync_connect)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking SDK call in the default executor; engine errors become ReplicaError."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, functools.partial(fn, *args))
        except ReplicaError:
            raise
        except docker.errors.APIError as exc:
            raise ReplicaError(f"Docker engine at {self._url}: {_reason(exc)}") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise self._unreachable(exc) from None

    def _replica(self, name: str, address: tuple[str, int]) -> Replica:
        host, port = address
        return Replica(name, host, port, self._weights.get(name, 1), identity=name)

    # -- blocking SDK work (executor threads) ---------------------------------------------------

    def _sync_find(self) -> tuple[str, int] | None:
        """(id, replicas) of this cluster's service, or None; someone else's of that name is
        an error rather than something to scale."""
        client = self._docker
        for service in client.api.services(filters={"name": self._service}):
            spec = service.get("Spec") or {}
            if spec.get("Name") != self._service:
                continue  # the name filter matches prefixes
            owner = (spec.get("Labels") or {}).get(CLUSTER_LABEL)
            if owner != self._config.cluster:
                whose = (
                    "is not a fastlb service" if owner is None
                    else f"belongs to fastlb cluster {owner!r}"
                )
                raise ReplicaError(
                    f"Swarm service {self._service!r} already exists and {whose} (label "
                    f"{CLUSTER_LABEL}); remove it, or give this cluster another name"
                )
            replicated = (spec.get("Mode") or {}).get("Replicated")
            if replicated is None:
                raise ReplicaError(
                    f"Swarm service {self._service!r} is not replicated (a global service "
                    "cannot be scaled); remove it and let fastlb create it"
                )
            self._warn_drift((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {})
            return str(service["ID"]), int(replicated.get("Replicas", 0))
        return None

    def _warn_drift(self, container: dict[str, Any]) -> None:
        """An adopted service runs what it was created with: changing its template would make
        Swarm replace every task, so a difference from the config is said, not applied."""
        image = str(container.get("Image", "")).split("@")[0]  # Swarm may pin a digest
        wanted = {"image": self._config.image, "command": command_of(self._config)}
        found = {"image": image, "command": list(container.get("Command") or [])}
        for key, value in wanted.items():
            if found[key] != value and key not in self._drift_told:
                self._drift_told.add(key)
                log.warning(
                    "Swarm service %s runs %s %r, not %r as [replicas] says; kept (remove the "
                    "service to have fastlb create it anew)", self._service, key, found[key], value,
                )

    def _sync_create(self, replicas: int) -> str:
        client = self._docker
        try:
            client.images.get(self._config.image)
        except docker.errors.ImageNotFound:
            raise ReplicaError(
                f"image {self._config.image} not found; build it with `make images`"
            ) from None
        network = self._config.network
        if network and not any(n.name == network for n in client.networks.list(names=[network])):
            try:
                client.networks.create(
                    network, driver="overlay", attachable=True,
                    labels={CLUSTER_LABEL: self._config.cluster},
                )
                log.info("created attachable overlay network %s", network)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
        options = service_options(self._config, replicas)
        service = client.services.create(self._config.image, **options)
        return str(service.id)

    def _sync_scale(self, replicas: int) -> None:
        """Set the replica count and nothing else. Neither SDK way does only that: the high-level
        Service.scale rebuilds the task template from its arguments (dropping the command and
        env), and the low-level update_service, even with fetch_current_spec, adds empty
        DNSConfig, Placement and Resources to it; any change of the template makes Swarm
        replace every task (new ports, every member moved). So the service's own spec goes
        back to the engine's update endpoint as it was, with only Mode.Replicated changed."""
        api = self._docker.api
        assert self._service_id is not None
        inspected = api.inspect_service(self._service_id)
        spec = dict(inspected["Spec"])
        spec["Mode"] = {"Replicated": {"Replicas": replicas}}
        url = api._url("/services/{0}/update", self._service_id)
        response = api._post_json(url, data=spec, params={"version": inspected["Version"]["Index"]})
        api._raise_for_status(response)

    def _sync_remove(self, service_id: str) -> None:
        """Remove the service, then wait until the engine has removed its containers (it does
        so on its own, a little later), removing any of ours still there at the deadline."""
        client = self._docker
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(service_id)
        filters = {"label": f"com.docker.swarm.service.id={service_id}"}
        deadline = time.monotonic() + _GONE_TIMEOUT
        while time.monotonic() < deadline:
            if not client.containers.list(all=True, filters=filters, ignore_removed=True):
                return
            time.sleep(0.2)
        for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def _sync_tasks(self) -> list[TaskView]:
        """The service's tasks whose desired state is running (the ones Swarm keeps), with
        where each one is reached once it runs."""
        assert self._service_id is not None
        tasks = self._docker.api.tasks(
            filters={"service": self._service_id, "desired-state": "running"}
        )
        views = []
        for task in tasks:
            status = task.get("Status") or {}
            state = str(status.get("State", ""))
            address = self._address_of(task) if state == "running" else None
            detail = ""
            if state in _ENDED:
                code = (status.get("ContainerStatus") or {}).get("ExitCode")
                detail = f"task {task['ID'][:12]} {state}"
                detail += f" (exit code {code})" if code is not None else ""
                detail += f": {status['Err']}" if status.get("Err") else ""
            views.append(TaskView(int(task.get("Slot") or 0), task["ID"], state, address, detail))
        return views

    def _address_of(self, task: dict[str, Any]) -> tuple[str, int] | None:
        if self._config.network:
            for attachment in task.get("NetworksAttachments") or []:
                spec = (attachment.get("Network") or {}).get("Spec") or {}
                addresses = attachment.get("Addresses") or []
                if spec.get("Name") == self._config.network and addresses:
                    return str(addresses[0]).split("/")[0], self._config.port
            return None
        ports = [
            int(p["PublishedPort"])
            for p in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
            if p.get("TargetPort") == self._config.port and p.get("PublishedPort")
        ]
        if not ports:
            return None
        node = str(task.get("NodeID", ""))
        host = _LOOPBACK if node == self._node_id else self._node_address(node)
        if len(ports) > 1 and host == _LOOPBACK:
            # An engine that publishes IPv4 and IPv6 on ports of their own lists both, in no
            # promised order: the container's bindings say which is IPv4's.
            return host, self._v4_port(task, ports)
        return host, ports[0]

    def _node_address(self, node: str) -> str:
        if node not in self._node_addrs:
            status = self._docker.api.inspect_node(node).get("Status") or {}
            self._node_addrs[node] = str(status.get("Addr") or _LOOPBACK)
        return self._node_addrs[node]

    def _v4_port(self, task: dict[str, Any], ports: list[int]) -> int:
        task_id = str(task["ID"])
        if task_id not in self._v4_ports:
            cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
            port = ports[0]
            try:
                attrs = self._docker.api.inspect_container(cid)
                bindings = (attrs["NetworkSettings"]["Ports"] or {}).get(
                    f"{self._config.port}/tcp"
                ) or []
                port = next(
                    (int(b["HostPort"]) for b in bindings if b.get("HostIp") in (_ANY, "")), port
                )
            except (docker.errors.DockerException, KeyError, TypeError):
                pass
            if len(self._v4_ports) > 10000:
                self._v4_ports.clear()
            self._v4_ports[task_id] = port
        return self._v4_ports[task_id]

    # -- following the tasks --------------------------------------------------------------------

    def _start_watching(self) -> None:
        if self._watcher is None and not self._closing:
            self._watcher = asyncio.ensure_future(self._watch())
            self._loop = asyncio.get_running_loop()
            self._events_thread = threading.Thread(
                target=self._read_events, name="fastlb-swarm-events", daemon=True
            )
            self._events_thread.start()

    def _read_events(self) -> None:
        """The events thread: each `die` of one of this cluster's containers goes to the loop
        with its task's id. A broken stream is read again from the last event seen."""
        loop = self._loop
        assert loop is not None
        filters = {
            "type": "container",
            "event": "die",
            "label": f"{CLUSTER_LABEL}={self._config.cluster}",
        }
        since: float | None = None
        while not self._stop_events.is_set():
            client: Client | None = None
            try:
                client = docker.from_env(version="auto") if not self._config.docker_url else (
                    docker.DockerClient(base_url=self._config.docker_url, version="auto")
                )
                stream = client.events(decode=True, filters=filters, since=since)
                self._events_stream = stream
                if self._stop_events.is_set():
                    break
                for event in stream:
                    since = event.get("timeNano", 0) / 1e9 or since
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    task_id = attributes.get("com.docker.swarm.task.id", "")
                    code = attributes.get("exitCode", "?")
                    if task_id:
                        loop.call_soon_threadsafe(self._container_died, task_id, code)
            except RuntimeError:  # the loop is closed
                break
            except Exception as exc:
                if self._stop_events.is_set():
                    break
                log.warning("Docker event stream broke (%s); reading it again", _reason(exc))
                since = since or time.time()
            finally:
                self._events_stream = None
                if client is not None:
                    client.close()
            self._stop_events.wait(1.0)

    def _end_events(self) -> None:
        self._stop_events.set()
        stream = self._events_stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if self._events_thread is not None:
            self._events_thread.join(timeout=5)
            self._events_thread = None

    def _container_died(self, task_id: str, code: str) -> None:
        """On the loop: a container of ours died; if it ran a member's task, that member's
        task is dead (reported once), and the poll goes fast to find its replacement."""
        for name, known in self._task_of.items():
            if known == task_id and self._reported.get(name) != known:
                self._reported[name] = known
                self._died(name, f"task {task_id[:12]}: its container exited with {code}")
                self._wake.set()
                return

    async def _watch(self) -> None:
        """The poll loop: list the tasks, act on what changed, wait."""
        while not self._closing:
            await self._poll_once()
            fast = self._waiting > 0 or self._degraded()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_FAST if fast else POLL_EVERY)

    def _degraded(self) -> bool:
        """Whether a member's slot has no running task of its own (dead, or its replacement
        not yet moved to): polled fast until it is whole again."""
        for name, known in self._task_of.items():
            view = self._views.get(slot_of(self._service, name) or 0)
            if view is None or view.task_id != known or view.state != "running":
                return True
        return False

    async def _poll_once(self) -> None:
        if self._service_id is None:
            return
        try:
            views = await self._call(self._sync_tasks)
        except ReplicaError as exc:
            if str(exc) != self._poll_error:
                log.warning("Swarm service %s: listing its tasks failed: %s", self._service, exc)
            self._poll_error = str(exc)
            return
        self._poll_error = ""
        by_slot: dict[int, TaskView] = {}
        for view in views:
            held = by_slot.get(view.slot)
            # Two tasks of one slot (the dead one still listed beside its replacement): the
            # one that runs, or will, is the slot's.
            if held is None or held.state in _ENDED:
                by_slot[view.slot] = view
        self._views = by_slot
        self._seen()
        async with self._polled:
            self._polled.notify_all()

    def _seen(self) -> None:
        """On the loop, after a poll: report a member whose task ended, and get a member's
        new task (a replacement in its slot) ready."""
        for name in list(self._replicas):
            slot = slot_of(self._service, name) or 0
            view = self._views.get(slot)
            known = self._task_of.get(name)
            gone = view is None or view.task_id != known or view.state in _ENDED
            if gone and known is not None and self._reported.get(name) != known:
                self._reported[name] = known
                detail = view.detail if view is not None and view.task_id == known else ""
                self._died(name, detail or f"task {known[:12]} is no longer running")
            if (
                view is not None and view.task_id != known and view.state == "running"
                and view.address is not None
            ):
                pending = self._readying.get(name)
                if pending is None or pending[0] != view.task_id:
                    if pending is not None:
                        pending[1].cancel()
                    ready = asyncio.ensure_future(self._ready(name, view))
                    self._readying[name] = (view.task_id, ready)

    def _died(self, name: str, detail: str) -> None:
        log.warning("replica %s: %s; Swarm replaces it in its slot", name, detail)
        if self._on_exit is not None:
            self._on_exit(name, detail)

    async def _ready(self, name: str, view: TaskView) -> None:
        """A member's new task: once it answers its heartbeat, the member moves to it."""
        assert view.address is not None
        host, port = view.address
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout
        try:
            while loop.time() < deadline and not self._closing:
                if await heartbeat(host, port, 0.5, name, self._check):
                    break
                await asyncio.sleep(0.05)
            else:
                log.warning("replica %s: the new task %s at %s:%d did not answer %s within "
                            "%g s; heartbeats go on", name, view.task_id[:12], host, port,
                            self._check.describe(), self._config.start_timeout)
            if name not in self._replicas or self._closing:
                return
            replica = self._replica(name, view.address)
            self._replicas[name] = replica
            self._task_of[name] = view.task_id
            self._reported.pop(name, None)
            if self._on_move is not None:
                self._on_move(replica)
        finally:
            if self._readying.get(name, ("", None))[0] == view.task_id:
                del self._readying[name]

    async def _wait_task(self, name: str, slot: int) -> TaskView:
        """The slot's task once it runs and answers its heartbeat (ReplicaError otherwise)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout
        self._waiting += 1
        self._wake.set()
        last = "no task yet"
        try:
            while loop.time() < deadline:
                async with self._polled:
                    try:
                        await asyncio.wait_for(self._polled.wait(), max(deadline - loop.time(), 0))
                    except TimeoutError:
                        break
                view = self._views.get(slot)
                if view is None:
                    continue
                last = f"task {view.task_id[:12]} {view.state}" + (
                    f": {view.detail}" if view.detail else ""
                )
                if view.state == "running" and view.address is not None:
                    host, port = view.address
                    if await heartbeat(host, port, 0.5, name, self._check):
                        return view
                    last += f", not answering {self._check.describe()} at {host}:{port}"
        finally:
            self._waiting -= 1
        raise ReplicaError(
            f"replica {name!r} (Swarm service {self._service}, image {self._config.image}) did "
            f"not answer {self._check.describe()} ({self._check.wanted()}) within "
            f"{self._config.start_timeout:g} s ({last})"
        )

