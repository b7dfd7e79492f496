"""fastlb's configuration: a TOML file parsed and validated into frozen dataclasses.

Pure code (tomllib, no I/O beyond reading the one file in `load`), so every rule is unit-tested.
Unknown keys are errors, because a typo that passes silently is a setting the user believes in
and does not have. Every error names the file, the table and the key.

CONTRACT (implemented by the config work): see the dataclasses below; `parse`, `load` and
`default` keep these signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastlb.errors import ConfigError

__all__ = [
    "DEFAULT_REPLICA_PATHS",
    "Config",
    "ConfigError",
    "ProxyConfig",
    "ReplicaSpec",
    "ReplicasConfig",
    "RoutingConfig",
    "default",
    "load",
    "parse",
]

DEFAULT_REPLICA_PATHS = ("/home", "/heartbeat", "/neo", "/apod")


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


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    table: str = "maglev"  # "maglev" | "classic"
    key: str = "request_id"  # request_id | path | client_ip | header:NAME | cookie:NAME
    maglev_size: int = 65537
    classic_probe: str = "linear"  # "linear" | "quadratic"
    classic_hash: str = "spec"  # a name registered in fastlb.hashing


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    name: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: the provider picks a free port
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ReplicasConfig:
    provider: str = "local"  # "local" | "static"
    count: int = 3
    names: tuple[str, ...] = ("Server1", "Server2", "Server3")
    weights: tuple[tuple[str, int], ...] = ()  # (name, weight) overrides; others weigh 1
    static: tuple[ReplicaSpec, ...] = ()
    start_timeout: float = 10.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    source: str = "<default>"


def default() -> Config:
    return Config()


def parse(text: str, source: str = "lb.toml") -> Config:
    raise NotImplementedError


def load(path: str) -> Config:
    raise NotImplementedError
