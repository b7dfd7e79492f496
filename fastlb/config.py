"""fastlb's configuration: a TOML file parsed and validated into frozen dataclasses.

Pure code (tomllib, no I/O beyond reading the one file in `load`), so every rule is unit-tested.
Unknown keys are errors, because a typo that passes silently is a setting the user believes in
and does not have. Every error names the file, the table and the key.

CONTRACT (implemented by the config work): see the dataclasses below; `parse`, `load` and
`default` keep these signatures.

Validation is built from small checks, one per kind of value (a positive number, a port, a
replica name...). A check knows nothing of where its value came from: it raises `_Invalid` with
"expected ..., got ...", and the `_Table` that handed it the value adds the file, the table and
the key. So every message has the same shape without any check repeating it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import ipaddress
import json
import math
import os
import re
import string
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TypeGuard, TypeVar

from fastlb.errors import ConfigError
from fastlb.limits import (
    ACCESS_FORMATS,
    CLASSIC_PROBES,
    DURATION_BUCKETS,
    KETAMA_MAX_WEIGHT,
    MAGLEV_SIZE,
    REPLICA_NAME_RULE,
    TABLE_KINDS,
    WEIGHT_RULE,
    is_prime,
    is_replica_name,
    is_weight,
)

__all__ = [
    "DEFAULT_REPLICA_PATHS",
    "MAX_REPLICAS",
    "PROVIDERS",
    "AdminConfig",
    "Config",
    "ConfigError",
    "HealthConfig",
    "ProxyConfig",
    "ReplicaSpec",
    "ReplicasConfig",
    "RoutingConfig",
    "default",
    "load",
    "parse",
    "swarm_service",
]

DEFAULT_REPLICA_PATHS = ("/home", "/heartbeat", "/neo", "/apod")

# Far above any real deployment of this balancer, low enough that a typo (count = 30000) is
# caught here rather than as thousands of child processes.
MAX_REPLICAS = 1000

#: Where replicas come from: child processes, replicas something else runs, Docker containers
#: fastlb starts, the tasks of a Docker Swarm service fastlb creates or adopts.
PROVIDERS = ("local", "static", "docker", "swarm")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 5000
    http: str = "httptools"  # "httptools" | "h11"
    connect_timeout: float = 2.0
    header_timeout: float = 10.0
    backend_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_header_bytes: int = 16384
    max_header_fields: int = 100
    forwarded_headers: bool = True
    pool_size: int = 64
    high_water: int = 256 * 1024
    low_water: int = 64 * 1024
    replica_paths: tuple[str, ...] = DEFAULT_REPLICA_PATHS
    backlog: int = 1024
    shutdown_timeout: float = 10.0  # SIGTERM: how long requests in flight may take to finish
    # A WebSocket tunnel with no byte either way for this long is closed (HAProxy's
    # `timeout tunnel`); on SIGTERM tunnels are closed when shutdown_timeout is over.
    tunnel_timeout: float = 3600.0
    # Client connections held at most (HAProxy's maxconn); past it, new ones wait in the
    # backlog. 0: derived from the descriptor limit (ulimit -n), with a reserve kept.
    max_connections: int = 0
    # HTTPS on the listener: PEM files of the certificate (chain) and its private key, both
    # or neither ("" = plain HTTP). Read by fastlb/tls.py at --check, at start, on SIGHUP.
    tls_cert: str = ""
    tls_key: str = ""
    # Processes serving the data port, each on its own SO_REUSEPORT listener (fastlb/workers.py);
    # 1: the main process serves it itself, as before workers existed. `"auto"` in the file
    # reads as the CPUs this process may run on (os.sched_getaffinity).
    workers: int = 1


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    table: str = TABLE_KINDS[0]  # one of TABLE_KINDS
    key: str = "request_id"  # request_id | path | client_ip | header:NAME | cookie:NAME
    maglev_size: int = MAGLEV_SIZE
    classic_probe: str = CLASSIC_PROBES[0]  # one of CLASSIC_PROBES
    classic_hash: str = "spec"  # a name registered in fastlb.hashing
    # (name, label) of the replicas the ketama table hashes by a label, not by their name: for
    # provider = "static" each entry's address as written ("127.0.0.1:8001"), which is what
    # nginx's `hash ... consistent` hashes for a `server` line of the same address. Not a key
    # of the file: derived from [[replicas.static]]. Other providers' replicas (started by
    # fastlb, reached at ports it picks) are hashed by name.
    labels: tuple[tuple[str, str], ...] = ()
    #: Consistent hashing with bounded loads (HAProxy's hash-balance-factor, as a factor):
    #: 0 is off; 1.25 keeps every replica's in-flight count under 1.25 x its fair share.
    balance_factor: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    name: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: the provider picks a free port
    weight: int = 1
    address: str = ""  # provider = "static": the address as written (the ketama label)


@dataclass(frozen=True, slots=True)
class ReplicasConfig:
    provider: str = "local"  # "local" | "static" | "docker" | "swarm"
    count: int = 3
    names: tuple[str, ...] = ("Server1", "Server2", "Server3")
    # (name, weight) overrides, in `names` order; others weigh 1. Weights of 1 are dropped, so
    # two files that mean the same thing give equal configs. For provider "static" this holds
    # the entries' weights too, so consumers read weights one way whatever the provider.
    weights: tuple[tuple[str, int], ...] = ()
    static: tuple[ReplicaSpec, ...] = ()
    start_timeout: float = 10.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # provider = "docker" (and "swarm": the service's image, its cluster label, ...)
    image: str = "fastlb-replica:latest"
    cluster: str = "fastlb"  # value of the fastlb.cluster label: which containers are ours
    network: str = ""  # a user network to run replicas on, reached by name ("" = host ports)
    stop_on_exit: bool = True  # stop the containers fastlb started when it exits
    docker_url: str = ""  # the engine's address ("" = DOCKER_HOST or the default socket)
    # Your own app as the replicas (local, docker): an argv template with {host}, {port},
    # {name} and (local only) {fd} placeholders; () runs the demo replica. `env` adds to the
    # environment (same placeholders), `cwd` is where a local child starts ("" = fastlb's).
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = ""
    #: Local replicas' stdout and stderr: "" logs each line prefixed with the replica's name;
    #: a directory gets one file per replica (NAME.log) instead.
    log_dir: str = ""
    port: int = 5000  # docker: the port the app listens on inside its container


@dataclass(frozen=True, slots=True)
class AdminConfig:
    on_data_port: bool = True  # serve /rep, /add, /rm on the proxy's port
    listen: tuple[str, int] | None = None  # a separate admin listener (on_data_port = false)
    token: str = ""  # bearer token that lets a non-loopback client change state
    socket: str = ""  # path of the admin unix socket ("" = none)
    max_replicas: int = 100
    drain_timeout: float = 10.0  # /rm and `drain`: how long in-flight requests may take
    # Where fastlb's own HTTP routes live: "" puts /metrics, /status, /status.json, /healthz and
    # the classic /rep /add /rm where the spec has them; "/_fastlb" moves them all under it, so
    # an app's own /metrics or /status reaches the app.
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    interval: float = 0.5  # seconds between heartbeats to each replica
    timeout: float = 0.3  # a heartbeat slower than this failed
    rise: int = 2  # consecutive good heartbeats that bring a down replica back
    fall: int = 2  # consecutive failed heartbeats that take a replica down
    replace_with: str = "same"  # "same" name (keys return) or "random" (the spec's behaviour)
    replace_after: float = 1.0  # a replica down this long is replaced
    crash_window: float = 5.0  # dying within this many seconds of starting is a crash
    backoff: float = 1.0  # first wait before restarting a crashing replica; doubles each time
    backoff_max: float = 30.0
    # What a heartbeat asks and what counts as a good answer: `path` answered with a status in
    # `expect` (inclusive). `host` is the Host header ("" = the replica's own host:port).
    path: str = "/heartbeat"
    method: str = "GET"  # "GET" | "HEAD"
    expect: tuple[int, int] = (200, 399)
    host: str = ""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # Upper bounds (seconds) of the response-time histogram buckets, increasing.
    buckets: tuple[float, ...] = DURATION_BUCKETS


@dataclass(frozen=True, slots=True)
class LogConfig:
    access: bool = False  # one line per request, written from a buffer
    access_file: str = ""  # where ("" = standard error); reopened on SIGHUP
    access_format: str = "combined"  # nginx's combined format, or "json" (observe/access.py)


@dataclass(frozen=True, slots=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Where the settings came from, for messages. Not compared: a file that spells out the
    # defaults configures exactly what no file does, and a reload of an unchanged file under
    # another path is no change.
    source: str = field(default="<default>", compare=False)


def default() -> Config:
    """The configuration used when no file is given; `conf/lb.toml` spells out the same values."""
    return Config()


def parse(text: str, source: str = "lb.toml") -> Config:
    """Read a whole configuration from TOML text.

    `source` is only used to name the file in messages (and kept in `Config.source`), so callers
    with text from elsewhere still get messages that point somewhere.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc

    _reject_unknown_tables(source, document)
    proxy_table = _Table.top(source, document, "proxy", _PROXY_KEYS)
    routing_table = _Table.top(source, document, "routing", _ROUTING_KEYS)
    replicas_table = _Table.top(source, document, "replicas", _REPLICAS_KEYS)
    admin_table = _Table.top(source, document, "admin", _ADMIN_KEYS)
    health_table = _Table.top(source, document, "health", _HEALTH_KEYS)
    metrics_table = _Table.top(source, document, "metrics", _METRICS_KEYS)
    log_table = _Table.top(source, document, "log", _LOG_KEYS)

    proxy = _read_proxy(proxy_table)
    routing = _read_routing(routing_table)
    replicas = _read_replicas(replicas_table)
    admin = _read_admin(admin_table, replicas)
    health = _read_health(health_table)
    _check_maglev_size(routing_table, routing, replicas)
    _check_ketama_weight(routing_table, routing, replicas)
    routing = _with_labels(source, routing, replicas)
    return Config(
        proxy=proxy,
        routing=routing,
        replicas=replicas,
        admin=admin,
        health=health,
        metrics=_read_metrics(metrics_table),
        log=_read_log(log_table),
        source=source,
    )


def load(path: str) -> Config:
    """Read and parse the file at `path`, naming it as the user wrote it in every message."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig: some editors start a UTF-8 file with a byte order mark TOML does not allow.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read config: not UTF-8 text ({exc.reason})") from exc
    return parse(text, source=path)


# -------------------------------------------------------------------------------------------------
# The file's layout: which keys each table may hold. Listed here, once, so that an unknown key is
# reported before any value is checked (a typo in `high_water` should be reported as the typo,
# not as `low_water` being too large for the default it left in place).

_PROXY_KEYS = (
    "listen",
    "http",
    "connect_timeout",
    "header_timeout",
    "backend_timeout",
    "idle_timeout",
    "max_header_bytes",
    "max_header_fields",
    "forwarded_headers",
    "pool_size",
    "high_water",
    "low_water",
    "replica_paths",
    "backlog",
    "shutdown_timeout",
    "tunnel_timeout",
    "max_connections",
    "tls_cert",
    "tls_key",
    "workers",
)
_ROUTING_KEYS = ("table", "key", "maglev_size", "classic_probe", "classic_hash", "balance_factor")
_REPLICAS_KEYS = (
    "provider",
    "count",
    "names",
    "start_timeout",
    "latency_ms",
    "jitter_ms",
    "weights",
    "static",
    "image",
    "cluster",
    "network",
    "stop_on_exit",
    "docker_url",
    "command",
    "env",
    "cwd",
    "log_dir",
    "port",
)
_ADMIN_KEYS = (
    "on_data_port",
    "listen",
    "token",
    "socket",
    "max_replicas",
    "drain_timeout",
    "prefix",
)
_HEALTH_KEYS = (
    "interval",
    "timeout",
    "rise",
    "fall",
    "replace_with",
    "replace_after",
    "crash_window",
    "backoff",
    "backoff_max",
    "path",
    "method",
    "expect",
    "host",
)
_METRICS_KEYS = ("buckets",)
_LOG_KEYS = ("access", "access_file", "access_format")
_STATIC_KEYS = ("name", "address", "weight")
_TABLES: Mapping[str, tuple[str, ...]] = {
    "proxy": _PROXY_KEYS,
    "routing": _ROUTING_KEYS,
    "replicas": _REPLICAS_KEYS,
    "admin": _ADMIN_KEYS,
    "health": _HEALTH_KEYS,
    "metrics": _METRICS_KEYS,
    "log": _LOG_KEYS,
}

# Used when fastlb.hashing (which owns the registry) is not there to ask.
_LITERAL_CLASSIC_HASHES = ("spec", "xxhash", "fnv1a")

# Keys only the local provider acts on: with provider = "static" they would be silently ignored.
_LOCAL_ONLY_KEYS = ("count", "names", "weights", "latency_ms", "jitter_ms")
_DOCKER_ONLY_KEYS = ("image", "cluster", "network", "stop_on_exit", "docker_url", "port")
# Keys of a replica fastlb starts as a child process: a container has its own.
_CHILD_ONLY_KEYS = ("cwd", "log_dir")
# Keys of a replica fastlb starts (local or docker): with "static" nothing is started.
_STARTED_ONLY_KEYS = ("command", "env", *_CHILD_ONLY_KEYS)
#: The placeholders of `command` and `env`, by provider: a container cannot inherit fastlb's
#: socket, so {fd} is the local provider's alone.
COMMAND_PLACEHOLDERS: Mapping[str, tuple[str, ...]] = {
    "local": ("host", "port", "name", "fd"),
    "docker": ("host", "port", "name"),
    # One template for every task of a Swarm service: fastlb cannot fill in a task's name
    # (the demo replica reads it from REPLICA_NAME, which Swarm fills from {{.Task.Slot}}).
    "swarm": ("host", "port"),
}


def swarm_service(cluster: str) -> str:
    """The Swarm service of a cluster: `fastlb-<cluster>`, or the cluster itself when it is
    already called fastlb... (the rule of Docker replicas' container names)."""
    return cluster if cluster.startswith("fastlb") else f"fastlb-{cluster}"


# -------------------------------------------------------------------------------------------------
# Messages


class _Invalid(Exception):
    """A value failed a check. The check does not know where the value was; the `_Table` that
    called it does, and turns this into a `ConfigError` naming file, table and key."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.at = at  # appended to the key: "[2]" for a list item, ".Server1" for a table entry


def _expected(what: str, value: object, hint: str = "") -> _Invalid:
    """The one shape of a bad-value message, so every check reads the same to the user."""
    return _Invalid(f"expected {what}, got {_show(value)}{hint}")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHOW_LIMIT = 80


def _show(value: object) -> str:
    """A value as the user wrote it in TOML (strings quoted, true not True), so the message can
    be matched against the file by eye; long values are cut so one bad list does not flood it."""
    text = _toml(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _toml(value: object) -> str:
    """Roughly TOML syntax for a parsed value (tomllib gives no way back to the source text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{_show_key(str(k))} = {_toml(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return repr(value)


def _show_key(key: str) -> str:
    """A key as it would be written in TOML: bare when it can be, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _did_you_mean(word: str, candidates: Collection[str], template: str = "{}") -> str:
    """A suggestion for a near miss, because most unknown names are one typo from a known one."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {template.format(close[0])}?)" if close else ""


def _listing(names: Sequence[str], limit: int = 8) -> str:
    """Known names to show after an unknown one, cut short for a thousand replicas."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _one_of(options: Sequence[str]) -> str:
    """'"a", "b" or "c"' for a message listing the accepted strings."""
    quoted = [json.dumps(option) for option in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


# -------------------------------------------------------------------------------------------------
# Checks: one per kind of value. Each takes the raw TOML value and returns it typed, or raises.

T = TypeVar("T")
Check = Callable[[object], T]


def _is_number(value: object) -> TypeGuard[int | float]:
    """TOML booleans are Python bools, which are ints: `timeout = true` must not read as 1."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(what: str, accept: Callable[[float], bool]) -> Check[float]:
    """A check for a real quantity (seconds, milliseconds); ints are accepted because `2` is as
    natural to write as `2.0`, and non-finite values are refused because no timeout or latency
    downstream expects inf or nan."""

    def check(value: object) -> float:
        if not _is_number(value):
            raise _expected(what, value)
        number = float(value)
        if not math.isfinite(number):
            raise _expected(f"{what} (finite)", value)
        if not accept(number):
            raise _expected(what, value)
        return number

    return check


def _integer(low: int, high: int | None = None) -> Check[int]:
    """A check for a count or a size: an int (not a float that happens to be whole, not a
    bool) within bounds, so `pool_size = 1.5` is an error rather than a silent 1."""
    if high is not None:
        what = f"an integer from {low} to {high}"
    else:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"

    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _expected(what, value)
        if value < low or (high is not None and value > high):
            raise _expected(what, value)
        return value

    return check


_POSITIVE_NUMBER = _number("a positive number", lambda n: n > 0)
_NON_NEGATIVE_NUMBER = _number("a number >= 0", lambda n: n >= 0)
# Below 1 no assignment can keep every replica under its cap; past 100 the bound means nothing.
_BALANCE_FACTOR = _number(
    "0 (off) or a factor from 1 to 100, e.g. 1.25", lambda n: n == 0 or 1 <= n <= 100
)
_POSITIVE_INTEGER = _integer(1)
_NON_NEGATIVE_INTEGER = _integer(0)
_REPLICA_COUNT = _integer(1, MAX_REPLICAS)
#: More worker processes than this is a typo, not a machine (HAProxy caps nbthread at 4096).
MAX_WORKERS = 1024
_WORKER_RULE = f'an integer from 1 to {MAX_WORKERS} or "auto"'


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which a container's cpuset
    narrows), what `workers = "auto"` means."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _workers(value: object) -> int:
    """[proxy] workers: a count, or "auto" for one per usable CPU (read at load time, so
    --check and the running balancer agree on the number)."""
    if value == "auto":
        return min(usable_cpus(), MAX_WORKERS)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WORKERS:
        raise _expected(_WORKER_RULE, value)
    return value


def _weight_value(value: object) -> int:
    """A replica's weight, refused in the words `set weight` uses too (fastlb.limits)."""
    if not is_weight(value):
        raise _expected(WEIGHT_RULE, value)
    return value


def _boolean(value: object) -> bool:
    """Only TOML true/false: "yes" or 1 would be guesses about what the user meant."""
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _choice(options: Sequence[str]) -> Check[str]:
    """A check for one of a fixed set of names, suggesting the nearest on a typo."""

    def check(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        hint = _did_you_mean(value, options, '"{}"') if isinstance(value, str) else ""
        raise _expected(_one_of(options), value, hint)

    return check


def _list_of(item: Check[T]) -> Check[tuple[T, ...]]:
    """A check for a TOML array whose items all pass `item`; a bad item is named by index, so
    the user need not hunt for it in a long list. Tuples come out, because configs are frozen."""

    def check(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _expected("an array", value)
        checked: list[T] = []
        for index, element in enumerate(value):
            try:
                checked.append(item(element))
            except _Invalid as exc:
                raise _Invalid(exc.message, at=f"[{index}]{exc.at}") from None
        return tuple(checked)

    return check


_HOSTNAME = re.compile(
    # RFC 1123 labels, plus "_" because Docker service and container names may hold one.
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_PORT = re.compile(r"[0-9]{1,5}")
_ADDRESS_SHAPE = '"host:port" (or "[ipv6]:port")'


def _address(value: object) -> tuple[str, int]:
    """A check for "host:port" or "[v6]:port". The host comes back without brackets, as
    asyncio's create_server and open_connection take it. Port 0 is refused: here an address is
    something to listen on or connect to as written, not a request for any free port."""
    if not isinstance(value, str):
        raise _expected(_ADDRESS_SHAPE, value)
    host, colon, port_text = value.rpartition(":")
    if not colon or not host:
        raise _expected(_ADDRESS_SHAPE, value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _expected("an IPv6 address inside the brackets", value) from None
    elif ":" in host:
        raise _expected('an IPv6 address in brackets, like "[::1]:5000"', value)
    elif not _is_host(host):
        raise _expected("a hostname or IPv4 address before the port", value)
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise _expected("a port from 1 to 65535 after the host", value)
    return host, int(port_text)


def _is_host(host: str) -> bool:
    """A DNS name or an IPv4 address; "300.1.2.3" would pass as a name, so all-numeric hosts
    must be real IPv4 addresses."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def _replica_path(value: object) -> str:
    """A path the balancer forwards. It must start with "/" to ever equal a request's path, and
    whitespace cannot occur in a request-target, so a path holding any would never match."""
    what = 'a path starting with "/" (no spaces)'
    if not isinstance(value, str) or not value.startswith("/") or re.search(r"\s", value):
        raise _expected(what, value)
    return value


# RFC 9110 token characters: what a header field name, and a cookie name, may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_CHARACTERS = "letters, digits and !#$%&'*+-.^_`|~"
_PLAIN_KEYS = ("request_id", "path", "client_ip")
_NAMED_KEYS = ("header:", "cookie:")
_KEY_SHAPE = "request_id, path, client_ip, header:NAME or cookie:NAME"


def _routing_key(value: object) -> str:
    """What a request is hashed on. A header or cookie name must be a token: no request could
    carry any other name, so the key would never be found."""
    if not isinstance(value, str):
        raise _expected(_KEY_SHAPE, value)
    if value in _PLAIN_KEYS:
        return value
    for prefix in _NAMED_KEYS:
        if value.startswith(prefix):
            if not _TOKEN.fullmatch(value[len(prefix) :]):
                what = f'a {prefix[:-1]} name after "{prefix}" ({_TOKEN_CHARACTERS})'
                raise _expected(what, value)
            return value
    raise _expected(_KEY_SHAPE, value, _did_you_mean(value, _PLAIN_KEYS, '"{}"'))


def _prime(value: object) -> int:
    """Maglev's table size must be prime: each replica walks the table with a step coprime to
    it, and only a prime size makes every step visit every slot."""
    what = "a prime number"
    if not isinstance(value, int) or isinstance(value, bool):
        raise _expected(what, value)
    if not is_prime(value):
        raise _expected(what, value, _next_prime_hint(value))
    return value


def _next_prime_hint(n: int) -> str:
    """The fix for a composite size is almost always the next prime; beyond any sane table size
    the search is skipped, as it would only slow down reporting a typo."""
    if n >= 2**32:
        return ""
    candidate = max(n + 1, 2)
    while not is_prime(candidate):
        candidate += 1
    return f" ({candidate} is the next prime)"


def _replica_name(value: object) -> str:
    """A replica's name, refused in the words the admin routes and commands use too (it is also
    a container and host name: fastlb.limits says which rule that makes)."""
    if not is_replica_name(value):
        raise _expected(REPLICA_NAME_RULE, value)
    return value


def _first_duplicate(names: Sequence[str]) -> int | None:
    """The index of the first name seen before: two replicas with one name cannot be told apart
    in the table, the logs or the provider."""
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            return index
        seen.add(name)
    return None


def _replica_names(value: object) -> tuple[str, ...]:
    """A `names` array: valid, unique, and as many as a replica count may be."""
    names = _list_of(_replica_name)(value)
    if not 1 <= len(names) <= MAX_REPLICAS:
        raise _Invalid(f"expected 1 to {MAX_REPLICAS} names, got {len(names)}")
    duplicate = _first_duplicate(names)
    if duplicate is not None:
        raise _Invalid(
            f"expected unique names, got {_show(names[duplicate])} twice", f"[{duplicate}]"
        )
    return names


def _weights(value: object) -> tuple[tuple[str, int], ...]:
    """A `weights` table of name = weight. Whether the names exist is checked by the caller,
    which knows the replicas; here only the shape and the weights themselves."""
    if not isinstance(value, dict):
        raise _expected("a table of name = weight", value)
    weights: list[tuple[str, int]] = []
    for name, weight in value.items():
        try:
            weights.append((name, _weight_value(weight)))
        except _Invalid as exc:
            raise _Invalid(exc.message, at=f".{_show_key(name)}") from None
    return tuple(weights)


def _classic_hashes() -> tuple[str, ...]:
    """The hash families the classic ring knows. fastlb.hashing owns that registry (families can
    be registered at run time), so it is asked on each parse; it is imported lazily so that it may
    import this module, and the literal set stands in only when the module does not exist."""
    try:
        module = importlib.import_module("fastlb.hashing")
    except ModuleNotFoundError as exc:
        if exc.name != "fastlb.hashing":
            raise  # the module is there but broken: hiding that would only move the failure
        return _LITERAL_CLASSIC_HASHES
    registry = getattr(module, "CLASSIC_HASHES", None)
    if registry is None:
        return _LITERAL_CLASSIC_HASHES
    return tuple(str(name) for name in registry)


# -------------------------------------------------------------------------------------------------
# Tables


class _Table:
    """One TOML table being read: it refuses unknown keys up front and turns a failed check into
    a `ConfigError` naming the file, this table and the key."""

    def __init__(
        self, source: str, where: str, data: Mapping[str, object], known: Sequence[str]
    ) -> None:
        self.source = source
        self.where = where
        self.data = data
        self.known = known
        for key in data:
            if key not in known:
                hint = _did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
                raise self.error(_show_key(key), f"unknown key{hint}")

    @classmethod
    def top(
        cls, source: str, document: Mapping[str, object], name: str, known: Sequence[str]
    ) -> _Table:
        """A top-level table; a missing one is empty, so every default applies."""
        data = document.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}]: expected a table, got {_show(data)}")
        return cls(source, f"[{name}]", data, known)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.where} {key}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def optional(self, key: str, check: Check[T]) -> T | None:
        """The checked value, or None when the key is absent (for keys whose default depends on
        other keys)."""
        assert key in self.known, f"{key} is read but not listed for {self.where}"
        if key not in self.data:
            return None
        try:
            return check(self.data[key])
        except _Invalid as exc:
            raise self.error(key + exc.at, exc.message) from None

    def get(self, key: str, check: Check[T], default: T) -> T:
        value = self.optional(key, check)
        return default if value is None else value

    def require(self, key: str, check: Check[T], why: str) -> T:
        value = self.optional(key, check)
        if value is None:
            raise self.error(key, f"missing: {why}")
        return value


def _reject_unknown_tables(source: str, document: Mapping[str, object]) -> None:
    """Only [proxy], [routing] and [replicas] exist. Something else at the top is most often a
    key (or a sub-table) of one of them written outside it, so the table that knows it is
    suggested; failing that, the nearest table name."""
    for name, value in document.items():
        if name in _TABLES:
            continue
        owner = next((table for table, keys in _TABLES.items() if name in keys), None)
        is_table = isinstance(value, dict) or (
            isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
        )
        if is_table:
            hint = (
                f" (did you mean [{owner}.{name}]?)"
                if owner
                else _did_you_mean(name, _TABLES, "[{}]")
                or f" (tables are {_listing(list(_TABLES))})"
            )
            raise ConfigError(f"{source}: [{_show_key(name)}]: unknown table{hint}")
        hint = f" (did you mean [{owner}] {name}?)" if owner else ""
        raise ConfigError(f"{source}: {_show_key(name)}: key outside any table{hint}")


def _read_proxy(table: _Table) -> ProxyConfig:
    d = ProxyConfig()
    host, port = table.get("listen", _address, (d.host, d.port))
    high_water = table.get("high_water", _POSITIVE_INTEGER, d.high_water)
    low_water = table.get("low_water", _NON_NEGATIVE_INTEGER, d.low_water)
    if low_water >= high_water:
        # Blame the key the user set: a high_water below the default low_water is the mistake.
        if table.has("low_water") or not table.has("high_water"):
            raise table.error(
                "low_water", f"expected less than high_water ({high_water}), got {low_water}"
            )
        raise table.error(
            "high_water", f"expected more than low_water ({low_water}), got {high_water}"
        )
    tls_cert = table.get("tls_cert", _path_text, d.tls_cert)
    tls_key = table.get("tls_key", _path_text, d.tls_key)
    if bool(tls_cert) != bool(tls_key):
        # Blame the one left out: a certificate is served with its key, and a key alone is
        # nothing to serve.
        if tls_cert:
            raise table.error(
                "tls_key",
                f"missing: tls_cert = {_toml(tls_cert)} needs its private key (a PEM file)",
            )
        raise table.error(
            "tls_cert", f"missing: tls_key = {_toml(tls_key)} needs its certificate (a PEM file)"
        )
    return ProxyConfig(
        host=host,
        port=port,
        http=table.get("http", _choice(("httptools", "h11")), d.http),
        connect_timeout=table.get("connect_timeout", _POSITIVE_NUMBER, d.connect_timeout),
        header_timeout=table.get("header_timeout", _POSITIVE_NUMBER, d.header_timeout),
        backend_timeout=table.get("backend_timeout", _POSITIVE_NUMBER, d.backend_timeout),
        idle_timeout=table.get("idle_timeout", _POSITIVE_NUMBER, d.idle_timeout),
        max_header_bytes=table.get("max_header_bytes", _POSITIVE_INTEGER, d.max_header_bytes),
        max_header_fields=table.get("max_header_fields", _POSITIVE_INTEGER, d.max_header_fields),
        forwarded_headers=table.get("forwarded_headers", _boolean, d.forwarded_headers),
        pool_size=table.get("pool_size", _NON_NEGATIVE_INTEGER, d.pool_size),
        high_water=high_water,
        low_water=low_water,
        replica_paths=table.get("replica_paths", _list_of(_replica_path), d.replica_paths),
        backlog=table.get("backlog", _POSITIVE_INTEGER, d.backlog),
        shutdown_timeout=table.get("shutdown_timeout", _POSITIVE_NUMBER, d.shutdown_timeout),
        tunnel_timeout=table.get("tunnel_timeout", _POSITIVE_NUMBER, d.tunnel_timeout),
        max_connections=table.get("max_connections", _NON_NEGATIVE_INTEGER, d.max_connections),
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=table.get("workers", _workers, d.workers),
    )


def _read_routing(table: _Table) -> RoutingConfig:
    d = RoutingConfig()
    return RoutingConfig(
        table=table.get("table", _choice(TABLE_KINDS), d.table),
        key=table.get("key", _routing_key, d.key),
        maglev_size=table.get("maglev_size", _prime, d.maglev_size),
        classic_probe=table.get("classic_probe", _choice(CLASSIC_PROBES), d.classic_probe),
        classic_hash=table.get("classic_hash", _choice(_classic_hashes()), d.classic_hash),
        balance_factor=table.get("balance_factor", _BALANCE_FACTOR, d.balance_factor),
    )


def _read_replicas(table: _Table) -> ReplicasConfig:
    d = ReplicasConfig()
    provider = table.get("provider", _choice(PROVIDERS), d.provider)
    start_timeout = table.get("start_timeout", _POSITIVE_NUMBER, d.start_timeout)
    # Before the static branch: it reads only its own keys, so it would ignore these silently.
    if provider not in ("docker", "swarm"):
        for key in _DOCKER_ONLY_KEYS:
            if table.has(key):
                raise table.error(key, 'only used with provider = "docker" or "swarm"')
    if provider == "static":
        for key in _STARTED_ONLY_KEYS:
            if table.has(key):
                raise table.error(
                    key, 'not used with provider = "static" (fastlb starts nothing there)'
                )
        return _read_static_replicas(table, start_timeout)
    if provider in ("docker", "swarm"):
        for key in _CHILD_ONLY_KEYS:
            if table.has(key):
                raise table.error(key, 'only used with provider = "local"')
    if table.has("static"):
        raise table.error(
            "static",
            'entries are only used with provider = "static" '
            '(set provider = "static", or remove the [[replicas.static]] entries)',
        )
    cluster = table.get("cluster", _replica_name, d.cluster)
    names = _swarm_names(table, cluster) if provider == "swarm" else _local_names(table)
    command, env = _read_command(table, provider)
    return ReplicasConfig(
        provider=provider,
        count=len(names),
        names=names,
        weights=_known_weights(table, names),
        start_timeout=start_timeout,
        latency_ms=table.get("latency_ms", _NON_NEGATIVE_NUMBER, d.latency_ms),
        jitter_ms=table.get("jitter_ms", _NON_NEGATIVE_NUMBER, d.jitter_ms),
        image=table.get("image", _docker_reference, d.image),
        cluster=cluster,
        network=table.get("network", _optional_name, d.network),
        stop_on_exit=table.get("stop_on_exit", _boolean, d.stop_on_exit),
        docker_url=table.get("docker_url", _text, d.docker_url),
        command=command,
        env=env,
        cwd=table.get("cwd", _path_text, d.cwd),
        log_dir=table.get("log_dir", _path_text, d.log_dir),
        port=table.get("port", _port_number, d.port),
    )


def _read_command(
    table: _Table, provider: str
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """`command` and `env` of a provider that starts replicas. A local command must be told
    where to listen ({fd} or {port}, in its argv or its env): N children on one fixed port
    cannot all bind it."""
    d = ReplicasConfig()
    placeholders = COMMAND_PLACEHOLDERS[provider]
    command = table.get("command", _command(placeholders), d.command)
    env = table.get("env", _environment(placeholders), d.env)
    if provider == "local" and command:
        used = {name for text in (*command, *(v for _, v in env)) for name in _fields(text)}
        if not used & {"fd", "port"}:
            raise table.error(
                "command",
                "expected {fd} or {port} in command (or env): fastlb tells each replica "
                "where to listen, e.g. --port {port}, or --fd {fd} for a socket fastlb "
                f"bound; got {_show(list(command))}",
            )
    return command, env


def _fields(text: str) -> list[str]:
    """The placeholder names in a checked template ("{{" and "}}" are literal braces)."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def _template(placeholders: Sequence[str]) -> Check[str]:
    """A string with {placeholders} from a known set: a misspelt one is an error here, not a
    child that gets "{prot}" as its port. Braces meant literally are written {{ and }}."""
    known = ", ".join("{" + name + "}" for name in placeholders)

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise _expected("a string", value)
        if "\0" in value:
            raise _expected("a string without NUL characters", value)
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError:
            raise _expected(
                f'placeholders in braces ({known}; write "{{{{" and "}}}}" for a brace)', value
            ) from None
        for _, name, spec, conversion in parts:
            if name is None:
                continue
            if name not in placeholders:
                shown = "{" + name + "}"
                hint = _did_you_mean(name, placeholders, "{{{}}}")
                if name == "fd":
                    hint = ' (only with provider = "local": a container cannot inherit a socket)'
                raise _Invalid(
                    f"unknown placeholder {shown} in {_show(value)}{hint}; known: {known}"
                )
            if spec or conversion:
                raise _expected(f"a plain placeholder such as {{{name}}}", value)
        return value

    return check


def _command(placeholders: Sequence[str]) -> Check[tuple[str, ...]]:
    """An argv template: a non-empty array of strings, the first one the program."""
    each = _list_of(_template(placeholders))

    def check(value: object) -> tuple[str, ...]:
        argv = each(value)
        if not argv:
            raise _expected(
                'a command line such as ["uvicorn", "app:app", "--fd", "{fd}"]', value
            )
        if not argv[0]:
            raise _Invalid('expected a program name, got ""', at="[0]")
        return argv

    return check


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _environment(placeholders: Sequence[str]) -> Check[tuple[tuple[str, str], ...]]:
    """An `env` table of NAME = "value" (values are templates): names as a shell would take
    them, so a typo such as "PORT=" is caught rather than passed to the child."""
    value_check = _template(placeholders)

    def check(value: object) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise _expected('a table of NAME = "value"', value)
        pairs: list[tuple[str, str]] = []
        for name, item in value.items():
            at = f".{_show_key(name)}"
            if not _ENV_NAME.fullmatch(name):
                raise _Invalid(
                    "expected a variable name (letters, digits and _, not starting with a "
                    f"digit), got {_show(name)}",
                    at=at,
                )
            try:
                pairs.append((name, value_check(item)))
            except _Invalid as exc:
                raise _Invalid(exc.message, at=at) from None
        return tuple(pairs)

    return check


def _path_text(value: object) -> str:
    """A file system path ("" for none). Whether it exists is seen when it is used."""
    if not isinstance(value, str) or "\0" in value:
        raise _expected("a path (a string)", value)
    return value


_PORT_NUMBER = _integer(1, 65535)


def _port_number(value: object) -> int:
    return _PORT_NUMBER(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def _optional_name(value: object) -> str:
    """A container-style name, or "" for none."""
    return "" if value == "" else _replica_name(value)


def _docker_reference(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", value):
        raise _expected('an image reference such as "fastlb-replica:latest"', value)
    return value


def _read_admin(table: _Table, replicas: ReplicasConfig) -> AdminConfig:
    d = AdminConfig()
    on_data_port = table.get("on_data_port", _boolean, d.on_data_port)
    if on_data_port:
        listen = table.optional("listen", _address)
    else:
        # A missing key, reported as [replicas] static is for provider = "static".
        listen = table.require(
            "listen",
            _address,
            'on_data_port = false needs an admin address such as "127.0.0.1:5001" '
            "(otherwise the admin routes would be served nowhere)",
        )
    # Unset, the ceiling never sits below the replicas the file itself asks for.
    max_replicas = table.get("max_replicas", _REPLICA_COUNT, max(d.max_replicas, replicas.count))
    if max_replicas < replicas.count:
        raise table.error(
            "max_replicas",
            f"expected at least the configured replica count ({replicas.count}), "
            f"got {max_replicas}",
        )
    return AdminConfig(
        on_data_port=on_data_port,
        listen=listen,
        token=table.get("token", _text, d.token),
        socket=table.get("socket", _text, d.socket),
        max_replicas=max_replicas,
        drain_timeout=table.get("drain_timeout", _POSITIVE_NUMBER, d.drain_timeout),
        prefix=table.get("prefix", _admin_prefix, d.prefix),
    )


#: One or more path segments of RFC 3986 pchar (3.3), none empty, no trailing "/".
_PREFIX = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%]+)+")


def _admin_prefix(value: object) -> str:
    """The path fastlb's own routes move under: "" (where the spec has them) or segments such
    as "/_fastlb". A request's path is compared whole, so a trailing "/", an empty segment,
    a query or whitespace would make a prefix no request could ever reach."""
    what = '"" or a path such as "/_fastlb" (no trailing "/", no "?", no spaces)'
    if not isinstance(value, str) or (value and not _PREFIX.fullmatch(value)):
        raise _expected(what, value)
    return value


def _read_health(table: _Table) -> HealthConfig:
    d = HealthConfig()

    def shown(key: str, value: float) -> str:
        # As written in the file, like every other value in a message: `:g` would show 0.3 and
        # 0.30000001 alike, and "expected at most 0.3, got 0.3" points nowhere.
        return _show(table.data.get(key, value))

    interval = table.get("interval", _POSITIVE_NUMBER, d.interval)
    timeout = table.get("timeout", _POSITIVE_NUMBER, min(d.timeout, interval))
    if timeout > interval:
        raise table.error(
            "timeout",
            f"expected at most interval ({shown('interval', interval)}), "
            f"got {shown('timeout', timeout)}",
        )
    backoff = table.get("backoff", _POSITIVE_NUMBER, d.backoff)
    backoff_max = table.get("backoff_max", _POSITIVE_NUMBER, max(d.backoff_max, backoff))
    if backoff_max < backoff:
        raise table.error(
            "backoff_max",
            f"expected at least backoff ({shown('backoff', backoff)}), "
            f"got {shown('backoff_max', backoff_max)}",
        )
    return HealthConfig(
        interval=interval,
        timeout=timeout,
        rise=table.get("rise", _integer(1, 100), d.rise),
        fall=table.get("fall", _integer(1, 100), d.fall),
        replace_with=table.get("replace_with", _choice(("same", "random")), d.replace_with),
        replace_after=table.get("replace_after", _POSITIVE_NUMBER, d.replace_after),
        crash_window=table.get("crash_window", _NON_NEGATIVE_NUMBER, d.crash_window),
        backoff=backoff,
        backoff_max=backoff_max,
        path=table.get("path", _heartbeat_path, d.path),
        method=table.get("method", _choice(("GET", "HEAD")), d.method),
        expect=table.get("expect", _status_range, d.expect),
        host=table.get("host", _host_header, d.host),
    )


def _heartbeat_path(value: object) -> str:
    """The heartbeat's request-target: an origin-form path (a query may follow), with no
    whitespace or control characters, which would break the request line."""
    what = 'a path starting with "/" (no spaces), such as "/healthz"'
    if not isinstance(value, str) or not re.fullmatch(r"/[\x21-\x7e]*", value):
        raise _expected(what, value)
    return value


_STATUS_RANGE = re.compile(r"([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?")


def _status_range(value: object) -> tuple[int, int]:
    """A status (200, or "200") or an inclusive range ("200-399") a good heartbeat answers."""
    what = 'a status from 100 to 599 or a range such as "200-399"'
    if isinstance(value, int) and not isinstance(value, bool):
        if 100 <= value <= 599:
            return value, value
        raise _expected(what, value)
    if not isinstance(value, str) or not (match := _STATUS_RANGE.fullmatch(value)):
        raise _expected(what, value)
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if high < low:
        raise _expected(f"{what} (low before high)", value)
    return low, high


def _host_header(value: object) -> str:
    """A Host header value: a host, optionally with a port ("" = the replica's address)."""
    what = 'a host such as "app.example.com" or "localhost:8000" ("" = the replica\'s address)'
    if not isinstance(value, str):
        raise _expected(what, value)
    if value == "":
        return value
    host, colon, port = value.rpartition(":") if not value.endswith("]") else (value, "", "")
    if not colon:
        host = value
    elif not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise _expected(what, value)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _expected(what, value) from None
    elif not _is_host(host):
        raise _expected(what, value)
    return value


def _swarm_names(table: _Table, cluster: str) -> tuple[str, ...]:
    """A Swarm service's tasks are named by slot, `<service>.<slot>`: Swarm numbers them and
    removes the highest slots when scaled down, so `names` could only be a promise it breaks."""
    service = swarm_service(cluster)
    if table.has("names"):
        raise table.error(
            "names",
            f'not used with provider = "swarm" (Swarm names its tasks by slot: {service}.1, '
            f"{service}.2, ...); set count",
        )
    count = table.get("count", _REPLICA_COUNT, ReplicasConfig().count)
    names = tuple(f"{service}.{slot}" for slot in range(1, count + 1))
    if any(not is_replica_name(name) for name in names):
        raise table.error(
            "cluster", f"expected a shorter cluster name: {names[-1]!r} is not {REPLICA_NAME_RULE}"
        )
    return names


def _local_names(table: _Table) -> tuple[str, ...]:
    """`names` and `count` say the same thing two ways: either gives the other, and when both
    are given they must agree, because a silent winner would start a replica set the user did
    not write down."""
    names = table.optional("names", _replica_names)
    count = table.optional("count", _REPLICA_COUNT)
    if names is None:
        return tuple(f"Server{i}" for i in range(1, (count or ReplicasConfig().count) + 1))
    if count is not None and count != len(names):
        raise table.error(
            "names", f"expected {count} names to match count = {count}, got {len(names)}"
        )
    return names


def _known_weights(table: _Table, names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Weights for replicas that exist, in `names` order, without the ones equal to the default,
    so the result does not depend on how the table was written."""
    given: dict[str, int] = dict(table.optional("weights", _weights) or ())
    for name in given:
        if name not in names:
            hint = _did_you_mean(name, names) or f"; replicas are {_listing(names)}"
            raise table.error(f"weights.{_show_key(name)}", f"unknown replica{hint}")
    return tuple((name, given[name]) for name in names if given.get(name, 1) != 1)


def _read_static_replicas(table: _Table, start_timeout: float) -> ReplicasConfig:
    """Replicas something else runs: their names and count come from the entries, so the local
    provider's keys are refused rather than ignored."""
    for key in _LOCAL_ONLY_KEYS:
        if table.has(key):
            raise table.error(
                key,
                'not used with provider = "static" (names, count and weights come from the '
                "[[replicas.static]] entries; latency is the replicas' own)",
            )
    entries = table.require(
        "static",
        _static_entries,
        'provider = "static" needs [[replicas.static]] entries with a name and an address',
    )
    if not 1 <= len(entries) <= MAX_REPLICAS:
        raise table.error(
            "static",
            f"expected 1 to {MAX_REPLICAS} [[replicas.static]] entries, got {len(entries)}",
        )
    specs = tuple(
        _read_static_entry(_Table(table.source, f"[[replicas.static]] #{i}", entry, _STATIC_KEYS))
        for i, entry in enumerate(entries, start=1)
    )
    names = tuple(spec.name for spec in specs)
    duplicate = _first_duplicate(names)
    if duplicate is not None:
        first = names.index(names[duplicate]) + 1
        raise ConfigError(
            f"{table.source}: [[replicas.static]] #{duplicate + 1} name: expected unique names, "
            f"got {_show(names[duplicate])} again (already used by #{first})"
        )
    return ReplicasConfig(
        provider="static",
        count=len(specs),
        names=names,
        weights=tuple((spec.name, spec.weight) for spec in specs if spec.weight != 1),
        static=specs,
        start_timeout=start_timeout,
    )


def _static_entries(value: object) -> tuple[Mapping[str, object], ...]:
    """[[replicas.static]] must be an array of tables; `[replicas.static]` (one table) or an
    array of strings is the common slip."""
    what = "an array of tables, written [[replicas.static]]"
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _expected(what, value)
    return tuple(value)


def _read_static_entry(entry: _Table) -> ReplicaSpec:
    why = "every [[replicas.static]] entry needs a name and an address"
    name = entry.require("name", _replica_name, why)
    host, port = entry.require("address", _address, why)
    written = entry.data["address"]
    assert isinstance(written, str)  # _address accepted it
    return ReplicaSpec(
        name=name,
        host=host,
        port=port,
        weight=entry.get("weight", _weight_value, 1),
        address=written,
    )


def _check_maglev_size(table: _Table, routing: RoutingConfig, replicas: ReplicasConfig) -> None:
    """Maglev gives each replica at least one slot only if there are as many slots as replicas;
    fewer would leave some replicas with no traffic at all. (Shares are within 1% of fair from
    about 100 slots per replica; that is advice, not an error.)"""
    if routing.table == "maglev" and routing.maglev_size < replicas.count:
        raise table.error(
            "maglev_size",
            f"expected at least one slot per replica ({replicas.count}), got {routing.maglev_size}",
        )


def _check_ketama_weight(table: _Table, routing: RoutingConfig, replicas: ReplicasConfig) -> None:
    """ketama places 160 points per unit of weight; past KETAMA_MAX_WEIGHT units the table would
    take seconds to build and memory by the hundred megabytes, so the file is refused here
    rather than the first build failing."""
    if routing.table != "ketama":
        return
    given = dict(replicas.weights)
    total = sum(given.get(name, 1) for name in replicas.names)
    if total > KETAMA_MAX_WEIGHT:
        raise table.error(
            "table",
            f'"ketama" takes at most {KETAMA_MAX_WEIGHT} units of weight in all (160 points '
            f"each), got {total} from [replicas]",
        )


def _with_labels(source: str, routing: RoutingConfig, replicas: ReplicasConfig) -> RoutingConfig:
    """`routing` with the static replicas' addresses as their ketama labels. With table =
    "ketama", two entries of the same address would have the same points, so one of them would
    serve no key: refused, naming the second entry."""
    if replicas.provider != "static":
        return routing
    labels = tuple((spec.name, spec.address) for spec in replicas.static)
    if routing.table == "ketama":
        addresses = [label for _, label in labels]
        duplicate = _first_duplicate(addresses)
        if duplicate is not None:
            first = addresses.index(addresses[duplicate]) + 1
            raise ConfigError(
                f"{source}: [[replicas.static]] #{duplicate + 1} address: expected unique "
                f'addresses with [routing] table = "ketama" (it hashes the address, as nginx '
                f"does), got {_show(addresses[duplicate])} again (already used by #{first})"
            )
    return dataclasses.replace(routing, labels=labels)


def _read_metrics(table: _Table) -> MetricsConfig:
    d = MetricsConfig()
    buckets = table.get("buckets", _list_of(_POSITIVE_NUMBER), d.buckets)
    if not buckets:
        raise table.error("buckets", "expected at least one bucket bound, got []")
    if any(b >= a for a, b in zip(buckets[1:], buckets, strict=False)):
        raise table.error("buckets", f"expected strictly increasing bounds, got {list(buckets)}")
    return MetricsConfig(buckets=tuple(float(b) for b in buckets))


def _read_log(table: _Table) -> LogConfig:
    d = LogConfig()
    return LogConfig(
        access=table.get("access", _boolean, d.access),
        access_file=table.get("access_file", _text, d.access_file),
        access_format=table.get("access_format", _choice(ACCESS_FORMATS), d.access_format),
    )
