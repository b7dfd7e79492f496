"""Replicas as Docker containers, through the Docker SDK (docker-py), never the docker CLI.

Each replica is one container from `[replicas] image`, named `fastlb-<cluster>-<name>` (or the
replica's own name when that already starts with its cluster's: `container_name`), so two
clusters can share one engine with the same replica names; it is labelled
`fastlb.cluster=<cluster>` and `fastlb.replica=<name>`. It runs the demo replica, or the
image's own app with `[replicas] command` (and `env`), listening on `[replicas] port` (5000).
The labels are how a balancer knows its own containers: a restarted fastlb adopts the running
ones instead of starting duplicates, and removes the exited ones instead of leaving them
behind. A container of that name without our label is someone else's, and is never touched.

Two ways to reach a replica:
- `network = ""` (fastlb on the host): the container's port is published on 127.0.0.1 only, on
  a port the engine picks, so replicas are never exposed beyond this machine; the address is
  that port.
- `network = "net1"` (fastlb itself in a container on that user network, as in the compose
  stack): the container joins the network and is reached by its container name through
  Docker's DNS, on the container's port.

Every SDK call blocks (HTTP to the engine), so each runs in the loop's default executor. A
container that dies is seen through the engine's event stream, read by one thread that posts to
the loop. The loop thread alone changes this provider's state, but for the containers being
created (recorded by the executor thread that creates them, and counted under a condition that
close() waits on, so that a cancelled start leaves no container behind).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import docker
import docker.errors

from fastlb.config import HealthConfig, ReplicasConfig
from fastlb.errors import ReplicaError
from fastlb.replicas.base import (
    DEFAULT_CHECK,
    ExitCallback,
    HeartbeatCheck,
    MoveCallback,
    Replica,
    heartbeat,
)
from fastlb.replicas.output import TAIL_LINES, last_words

log = logging.getLogger("fastlb.replicas")

# The SDK has no type hints: these name what its objects are, for the reader.
Client = Any  # docker.DockerClient
Container = Any  # docker.models.containers.Container

T = TypeVar("T")

CLUSTER_LABEL = "fastlb.cluster"
REPLICA_LABEL = "fastlb.replica"
REPLICA_PORT = 5000  # the demo replica's port inside its container (the spec's); [replicas] port
_LOOPBACK = "127.0.0.1"
_DEFAULT_URL = "unix:///var/run/docker.sock"
_STOP_TIMEOUT = 2  # seconds between SIGTERM and SIGKILL when a replica is stopped
_STATE_EVERY = 0.5  # while waiting for /heartbeat, how often to ask whether the container died
_LOG_LINES = 20  # of a container that failed to start, shown in the error
_EVENTS_RETRY = 1.0  # seconds before reading the event stream again after it broke
_ANY = "0.0.0.0"  # {host} inside a container: every interface, so the published port reaches it


def container_name(cluster: str, name: str) -> str:
    """The container of replica `name` in `cluster`: `fastlb-<cluster>-<name>`, so that two
    balancers on one engine can both have a Server1. A cluster already called fastlb... is
    not said twice (cluster "fastlb" gives fastlb-Server1), and a replica name that already
    starts with its cluster's prefix (`<cluster>-...`) is the container's name as it is."""
    prefix = cluster if cluster.startswith("fastlb") else f"fastlb-{cluster}"
    if name.startswith((f"{prefix}-", f"{cluster}-")):
        return name
    return f"{prefix}-{name}"


def port_key(config: ReplicasConfig) -> str:
    """The container port as the engine names it ("5000/tcp")."""
    return f"{config.port}/tcp"


def command_of(config: ReplicasConfig, name: str) -> list[str]:
    """What the container of `name` runs: [replicas] command filled in ({host} is every
    interface, {port} the container's port), or the demo replica."""
    values = {"host": _ANY, "port": str(config.port), "name": name}
    if config.command:
        return [arg.format_map(values) for arg in config.command]
    cmd = ["python3", "-m", "replica", "--name", name, "--host", _ANY]
    cmd += ["--port", str(config.port)]
    if config.latency_ms:
        cmd += ["--latency-ms", str(config.latency_ms)]
    if config.jitter_ms:
        cmd += ["--jitter-ms", str(config.jitter_ms)]
    return cmd


def create_options(config: ReplicasConfig, name: str) -> dict[str, Any]:
    """The arguments of `containers.create` for replica `name` (pure: unit-tested without an
    engine)."""
    values = {"host": _ANY, "port": str(config.port), "name": name}
    environment = {"REPLICA_NAME": name}
    environment.update((key, value.format_map(values)) for key, value in config.env)
    options: dict[str, Any] = {
        "name": container_name(config.cluster, name),
        "command": command_of(config, name),
        "labels": {CLUSTER_LABEL: config.cluster, REPLICA_LABEL: name},
        "environment": environment,
        "detach": True,
    }
    if config.network:
        options["network"] = config.network
    else:
        # Loopback only, on a port the engine picks: a replica is never exposed further.
        options["ports"] = {port_key(config): (_LOOPBACK, None)}
    return options


class DockerProvider:
    """Starts, stops, adopts and watches replica containers for one fastlb cluster."""

    replaceable = True  # a container that stays down is replaced by a new one

    def __init__(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        self._config = config
        self._check = DEFAULT_CHECK if health is None else HeartbeatCheck.of(health)
        self._weights = dict(config.weights)
        self._url = config.docker_url or os.environ.get("DOCKER_HOST") or _DEFAULT_URL
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._prepared = False  # image found and network there: checked once, before a start
        self._image_id = ""  # what config.image names now, to tell a leftover of an older build
        self._replicas: dict[str, Replica] = {}
        # name -> container id of the replicas this provider owns (started or adopted). A die
        # event is reported only for these ids, so a container stopped on purpose (dropped from
        # here first) or replaced under the same name is never reported.
        self._owned: dict[str, str] = {}
        self._dead: dict[str, str] = {}  # owned containers that died: removed by stop/close
        # Containers created by a start() still in progress. Written by the executor thread the
        # moment a container exists, so that one whose start() is cancelled (fastlb stopping
        # while replicas come up) is still removed by close() instead of being orphaned.
        self._pending: dict[str, str] = {}
        self._creates = 0  # _sync_create calls running in executor threads; close() waits for them
        self._creating = threading.Condition()
        self._on_exit: ExitCallback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._events_thread: threading.Thread | None = None
        self._events_stream: Any = None  # the SDK's CancellableStream being read, to cancel it

    # -- Provider -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._config.names)

    def reconfigure(self, config: ReplicasConfig, health: HealthConfig | None = None) -> None:
        """Containers started from now on take the new image, network and replica settings.
        The engine's address and the cluster label say which containers are this fastlb's:
        changing either under running containers would orphan them, so that needs a restart."""
        old = self._config
        for key in ("docker_url", "cluster"):
            if getattr(config, key) != getattr(old, key):
                log.warning(
                    "reload: [replicas] %s changed; restart fastlb to apply it (kept %r)",
                    key, getattr(old, key),
                )
        if config.image != old.image or config.network != old.network:
            self._prepared = False  # check the new image and network before the next start
        self._config = dataclasses.replace(config, docker_url=old.docker_url, cluster=old.cluster)
        self._weights = dict(config.weights)
        if health is not None:
            self._check = HeartbeatCheck.of(health)

    def on_exit(self, callback: ExitCallback) -> None:
        self._on_exit = callback
        if self._client is not None:  # connected already: watch from now on
            self._watch_events()

    def on_move(self, callback: MoveCallback) -> None:
        """Addresses change only through `start` here."""

    def new_names(self, count: int, running: Sequence[str]) -> list[str] | None:
        return None  # fastlb names its replicas

    def removal(self, count: int, running: Sequence[str]) -> list[str] | None:
        return None  # any replica may be stopped

    async def adopt(self) -> list[Replica]:
        """Take over the running containers of this cluster (a previous fastlb left them with
        stop_on_exit = false, or was killed before it could stop them) and remove the exited
        ones, so a restarted balancer neither starts duplicates nor leaves orphans."""
        await self._connect()
        found = await self._call(self._sync_adopt)
        adopted = []
        for name, cid, (host, port) in found:
            self._dead.pop(name, None)
            self._owned[name] = cid
            replica = Replica(name, host, port, self._weights.get(name, 1), identity=name)
            self._replicas[name] = replica
            adopted.append(replica)
            log.info("adopted replica %s (container %s) at %s:%d", name, cid[:12], host, port)
        return adopted

    async def start(self, name: str) -> Replica:
        if name in self._owned:
            raise ReplicaError(f"replica {name!r} is already running")
        await self._connect()
        await self._prepare()
        cid, (host, port), reused = await self._call(self._sync_create, name)
        reason = await self._wait_ready(cid, host, port, name)
        if reason is not None and reused:
            # A container left by an earlier run that does not answer: replace it.
            log.warning("replica %s: leftover container does not answer (%s); replacing it",
                        name, reason)
            await self._call(self._sync_remove, cid)
            cid, (host, port), reused = await self._call(self._sync_create, name, False)
            reason = await self._wait_ready(cid, host, port, name)
        if reason is not None:
            output = await self._call(self._sync_logs, cid)
            await self._call(self._sync_remove, cid)
            self._pending.pop(name, None)
            hint = ""
            if self._config.network and reason == "timeout":
                hint = (f"; replicas on network {self._config.network!r} are reached by name, "
                        "so fastlb must run in a container on that network too")
            raise ReplicaError(
                f"replica {name!r} (image {self._config.image}) did not answer "
                f"{self._check.describe()} ({self._check.wanted()}) at "
                f"{host}:{port} within {self._config.start_timeout:g} s ({reason}){hint}"
                + (f"; its last output:\n{output}" if output else "")
            )
        self._pending.pop(name, None)
        self._dead.pop(name, None)
        self._owned[name] = cid
        replica = Replica(name, host, port, self._weights.get(name, 1), identity=name)
        self._replicas[name] = replica
        if reused:
            log.info("replica %s: took over running container %s", name, cid[:12])
        return replica

    def address(self, name: str) -> tuple[str, int]:
        replica = self._replicas[name]
        return replica.host, replica.port

    async def stop(self, name: str) -> None:
        self._replicas.pop(name, None)
        # Dropped from _owned before the container stops, so its die event is not reported.
        cid = self._owned.pop(name, None) or self._dead.pop(name, None)
        cid = cid or self._pending.pop(name, None)
        if cid is not None:
            await self._call(self._sync_remove, cid)

    async def close(self) -> None:
        """Stop watching events; with stop_on_exit, also stop and remove every container this
        provider started or adopted (without it they keep running for the next fastlb to adopt).
        Never raises: this runs while fastlb exits, when there is no one left to handle it."""
        self._closing.set()  # no new container from here on
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._wait_creates)
        if self._config.stop_on_exit:
            names = sorted({*self._owned, *self._dead, *self._pending})
            results = await asyncio.gather(
                *(self.stop(name) for name in names), return_exceptions=True
            )
            for name, result in zip(names, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("could not remove the container of replica %s: %s", name, result)
        else:
            self._owned.clear()
            self._dead.clear()
            self._pending.clear()
            self._replicas.clear()
        await loop.run_in_executor(None, self._stop_events)
        if self._client is not None:
            client, self._client = self._client, None
            await loop.run_in_executor(None, client.close)

    # -- connecting -----------------------------------------------------------------------------

    @property
    def _docker(self) -> Client:
        """The connected client; every SDK call happens after `_connect`."""
        if self._client is None:
            raise ReplicaError("the Docker provider is not connected (or already closed)")
        return self._client

    def _unreachable(self, exc: BaseException) -> ReplicaError:
        return unreachable(self._url, exc)

    def _new_client(self, version: str = "auto") -> Client:
        if self._config.docker_url:
            return docker.DockerClient(base_url=self._config.docker_url, version=version)
        return docker.from_env(version=version)  # DOCKER_HOST, DOCKER_TLS_VERIFY, ...

    def _sync_connect(self) -> Client:
        try:
            client = self._new_client()
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            raise self._unreachable(exc) from None
        return client

    async def _connect(self) -> None:
        """Connect once, on first use (not in __init__: `fastlb --check` and tests that never
        start a replica should not need an engine)."""
        async with self._connecting:
            if self._client is not None:
                return
            self._loop = asyncio.get_running_loop()
            self._client = await self._loop.run_in_executor(None, self._sync_connect)
            if self._on_exit is not None:
                self._watch_events()

    async def _prepare(self) -> None:
        """Check the image and the network once, so a missing image is one clear error rather
        than one per replica (and the SDK never tries to pull it from a registry)."""
        async with self._connecting:
            if not self._prepared:
                await self._call(self._sync_prepare)
                self._prepared = True

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking SDK call in the default executor; an engine gone away (a connection
        error is an OSError, requests' too) becomes the one clear message, and any other engine
        error a ReplicaError."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, functools.partial(fn, *args))
        except ReplicaError:
            raise
        except docker.errors.APIError as exc:
            raise ReplicaError(f"Docker engine at {self._url}: {_reason(exc)}") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise self._unreachable(exc) from None

    # -- blocking SDK work (executor threads) ---------------------------------------------------

    def _sync_prepare(self) -> None:
        client = self._docker
        try:
            self._image_id = client.images.get(self._config.image).id
        except docker.errors.ImageNotFound:
            raise ReplicaError(self._image_missing()) from None
        network = self._config.network
        if network and not any(n.name == network for n in client.networks.list(names=[network])):
            try:
                client.networks.create(
                    network, driver="bridge", labels={CLUSTER_LABEL: self._config.cluster}
                )
                log.info("created Docker network %s", network)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: created meanwhile by someone else; fine
                    raise

    def _image_missing(self) -> str:
        return f"image {self._config.image} not found; build it with `make images`"

    def command(self, name: str) -> list[str]:
        return command_of(self._config, name)

    def _find(self, name: str) -> Container | None:
        """The container of replica `name`, if any. `containers.get` also matches id prefixes,
        so a container whose id merely starts with the name is not it."""
        wanted = container_name(self._config.cluster, name)
        try:
            container = self._docker.containers.get(wanted)
        except docker.errors.NotFound:
            return None
        return container if container.name == wanted else None

    def _wait_creates(self, timeout: float = 30.0) -> None:
        with self._creating:
            self._creating.wait_for(lambda: self._creates == 0, timeout)

    def _sync_create(
        self, name: str, reuse: bool = True
    ) -> tuple[str, tuple[str, int], bool]:
        """Create and start the container of `name`: (id, address, whether it was already
        running and is reused). A leftover of this cluster by that name is reused when it runs
        what we would run, and removed otherwise; anyone else's is an error."""
        with self._creating:
            if self._closing.is_set():
                raise ReplicaError(f"replica {name!r}: not started, fastlb is stopping")
            self._creates += 1
        try:
            return self._create(name, reuse)
        finally:
            with self._creating:
                self._creates -= 1
                self._creating.notify_all()

    def _create(self, name: str, reuse: bool) -> tuple[str, tuple[str, int], bool]:
        cluster = self._config.cluster
        existing = self._find(name)
        if existing is not None:
            labels: dict[str, str] = existing.labels or {}
            owner = labels.get(CLUSTER_LABEL)
            if owner is None:
                raise ReplicaError(
                    f"a container named {existing.name!r} already exists and is not a fastlb "
                    "replica "
                    f"(it has no {CLUSTER_LABEL} label); remove or rename it, or give this "
                    "replica another name"
                )
            if owner != cluster:
                raise ReplicaError(
                    f"container {existing.name!r} is a replica of fastlb cluster {owner!r}, not "
                    f"{cluster!r}; give this replica another name, or stop that balancer"
                )
            address = self._address_of(existing, name)
            if reuse and existing.status == "running" and address and self._runs_ours(existing):
                self._pending[name] = existing.id
                return existing.id, address, True
            self._remove(existing)
        options = create_options(self._config, name)
        try:
            container = self._docker.containers.create(self._config.image, **options)
        except docker.errors.ImageNotFound:
            raise ReplicaError(self._image_missing()) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ReplicaError(
                    f"a container named {options['name']!r} already exists (created by someone "
                    "else while "
                    f"this replica was starting): {_reason(exc)}"
                ) from None
            raise
        self._pending[name] = container.id
        try:
            container.start()
            container.reload()  # the published port is known only once it runs
            address = self._address_of(container, name)
            if address is None:
                raise ReplicaError(
                    f"replica {name!r}: container {container.short_id} has no published "
                    f"{port_key(self._config)} on {_LOOPBACK} (state {container.status})"
                )
        except BaseException:
            self._remove(container)
            self._pending.pop(name, None)
            raise
        return container.id, address, False

    def _runs_ours(self, container: Container) -> bool:
        """Whether a leftover container runs what we would start now: the same build of the
        image and the same command (a rebuilt image or a changed latency is not kept)."""
        config = container.attrs.get("Config") or {}
        name = (container.labels or {}).get(REPLICA_LABEL, "")
        return bool(
            container.attrs.get("Image") == self._image_id
            and list(config.get("Cmd") or []) == self.command(name)
        )

    def _address_of(self, container: Container, name: str) -> tuple[str, int] | None:
        """Where this provider reaches `container`, or None if it cannot (it is not on the
        configured network, or has no loopback port published)."""
        settings = container.attrs.get("NetworkSettings") or {}
        if self._config.network:
            networks = settings.get("Networks") or {}
            host = container_name(self._config.cluster, name)  # Docker's DNS knows it so
            return (host, self._config.port) if self._config.network in networks else None
        for binding in (settings.get("Ports") or {}).get(port_key(self._config)) or []:
            if binding.get("HostIp") == _LOOPBACK and binding.get("HostPort"):
                return _LOOPBACK, int(binding["HostPort"])
        return None

    def _remove(self, container: Container) -> None:
        """Stop (SIGTERM, then SIGKILL after _STOP_TIMEOUT) and remove; gone already is fine."""
        try:
            if container.status in ("running", "restarting", "paused"):
                container.stop(timeout=_STOP_TIMEOUT)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise

    def _sync_remove(self, ref: str) -> None:
        try:
            container = self._docker.containers.get(ref)
        except docker.errors.NotFound:
            return
        self._remove(container)

    def _sync_state(self, cid: str) -> str:
        try:
            container = self._docker.containers.get(cid)
        except docker.errors.NotFound:
            return "removed"
        status: str = container.status
        return status

    def _sync_logs(self, cid: str) -> str:
        try:
            output: bytes = self._docker.containers.get(cid).logs(tail=_LOG_LINES)
        except docker.errors.DockerException:
            return ""
        return output.decode("utf-8", "replace").strip()

    def _sync_adopt(self) -> list[tuple[str, str, tuple[str, int]]]:
        label = f"{CLUSTER_LABEL}={self._config.cluster}"
        found = []
        listed = self._docker.containers.list(
            all=True, filters={"label": label}, ignore_removed=True
        )
        for container in listed:
            name = (container.labels or {}).get(REPLICA_LABEL) or container.name
            address = self._address_of(container, name)
            mine = container_name(self._config.cluster, name) == container.name
            if container.status == "running" and address is not None and mine:
                found.append((name, container.id, address))
                continue
            log.info("removing %s container %s of replica %s", container.status,
                     container.short_id, name)
            self._remove(container)
        return found

    # -- waiting for a replica to come up -------------------------------------------------------

    async def _wait_ready(self, cid: str, host: str, port: int, name: str) -> str | None:
        """None once the heartbeat answers as `name` (or anonymously: see `probe`); otherwise
        why not ("timeout", "container exited")."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout
        next_state = loop.time() + _STATE_EVERY
        while loop.time() < deadline:
            if await heartbeat(host, port, 0.5, name, self._check):
                return None
            if loop.time() >= next_state:
                next_state = loop.time() + _STATE_EVERY
                state = await self._call(self._sync_state, cid)
                if state not in ("running", "created", "restarting"):
                    return f"container {state}"
            await asyncio.sleep(0.05)
        return "timeout"

    # -- watching for containers that die -------------------------------------------------------

    def _watch_events(self) -> None:
        if self._events_thread is not None or self._closing.is_set():
            return
        self._events_thread = threading.Thread(
            target=self._read_events, name="fastlb-docker-events", daemon=True
        )
        self._events_thread.start()

    def _read_events(self) -> None:
        """The events thread: reads `die` events of this cluster's containers and hands each to
        the loop. If the stream breaks (the engine restarted), it reads again from the time of
        the last event seen, so no death in between is missed; close() ends it."""
        loop = self._loop
        assert loop is not None and self._client is not None
        version = self._client.api.api_version
        filters = {
            "type": "container",
            "event": "die",
            "label": f"{CLUSTER_LABEL}={self._config.cluster}",
        }
        started = time.time()
        since: float | None = None  # None: from now on; after a break, from the last event seen
        while not self._closing.is_set():
            client: Client | None = None
            try:
                client = self._new_client(version)
                stream = client.events(decode=True, filters=filters, since=since)
                self._events_stream = stream
                if self._closing.is_set():
                    break
                for event in stream:
                    if "timeNano" in event:
                        since = event["timeNano"] / 1e9
                    actor = event.get("Actor") or {}
                    attributes = actor.get("Attributes") or {}
                    # The replica's name is its label (the container's name carries the cluster).
                    name = attributes.get(REPLICA_LABEL) or attributes.get("name", "")
                    cid = actor.get("ID") or event.get("id", "")
                    code = attributes.get("exitCode", "?")
                    words = ""
                    if cid and self._owned.get(name) == cid:
                        # Read here, off the loop, while the container is still there: what
                        # it said last explains its death (a traceback) in the `died` event.
                        words = self._last_words(client, cid)
                    loop.call_soon_threadsafe(self._died, name, cid, code, words)
            except RuntimeError:  # the loop is closed: nobody left to tell
                break
            except Exception as exc:  # the stream broke, or close() cancelled it
                if self._closing.is_set():
                    break
                log.warning("Docker event stream broke (%s); reading it again", _reason(exc))
                since = since or started
            finally:
                self._events_stream = None
                if client is not None:
                    client.close()
            self._closing.wait(_EVENTS_RETRY)

    def _stop_events(self) -> None:
        stream = self._events_stream
        if stream is not None:
            try:
                stream.close()  # unblocks the thread's read
            except Exception as exc:
                log.debug("closing the Docker event stream: %s", exc)
        if self._events_thread is not None:
            self._events_thread.join(timeout=5)
            self._events_thread = None

    @staticmethod
    def _last_words(client: Client, cid: str) -> str:
        """The container's last output lines for a message ('' if the engine cannot say)."""
        try:
            raw = client.api.logs(cid, stdout=True, stderr=True, tail=TAIL_LINES)
        except Exception as exc:  # gone already, or the engine is going away
            log.debug("the last output of container %s: %s", cid[:12], _reason(exc))
            return ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return last_words(text.splitlines()[-TAIL_LINES:])

    def _died(self, name: str, cid: str, code: str, words: str = "") -> None:
        """On the loop: a container of this cluster died. Reported only if it is one we own
        and did not stop ourselves (stop() forgets it before stopping it)."""
        if not cid or self._owned.get(name) != cid:
            return
        del self._owned[name]
        self._replicas.pop(name, None)
        self._dead[name] = cid
        log.warning("replica %s (container %s) exited with %s", name, cid[:12], code)
        if self._on_exit is not None:
            self._on_exit(name, f"container {cid[:12]} exited with {code}{words}")


def unreachable(url: str, exc: BaseException) -> ReplicaError:
    """The error for an engine that does not answer at `url`, with what to do about it (the
    Docker and Swarm providers say it alike)."""
    return ReplicaError(
        f"cannot reach the Docker engine at {url}: {_reason(exc)}; start it "
        "(e.g. `dockerd &`) or set [replicas] docker_url / DOCKER_HOST"
    )


def _reason(exc: BaseException) -> str:
    """The root cause of an SDK error in a few words: the OS error under the layers of
    requests and urllib3 ("No such file or directory", "Connection refused"), or the engine's
    own explanation."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None and current.strerror:
            return str(current.strerror)
        todo += [a for a in current.args if isinstance(a, BaseException)]
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)
