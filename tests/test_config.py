"""Tests of fastlb.config: every rule, and the exact shape of its message.

The messages are tested as much as the values, because they are the config's user interface: a
message that does not name the file, the table and the key sends the user reading code.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
import types
from dataclasses import fields, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb import config
from fastlb.config import (
    AdminConfig,
    Config,
    ConfigError,
    HealthConfig,
    LogConfig,
    MetricsConfig,
    ProxyConfig,
    ReplicasConfig,
    ReplicaSpec,
    RoutingConfig,
    default,
    load,
    parse,
)

CONF = Path(__file__).resolve().parent.parent / "conf" / "lb.toml"

# The tables of a Config, by field name: each is also a table of the file.
PARTS = tuple(f.name for f in fields(Config) if f.name != "source")
DOCKER_KEYS = ("image", "cluster", "network", "stop_on_exit", "docker_url", "port")


def error(text: str, source: str = "lb.toml") -> str:
    """The message `parse` fails with (the test fails if it succeeds)."""
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------------


def test_empty_file_is_the_default() -> None:
    assert parse("") == default()


def test_empty_tables_are_the_default() -> None:
    assert parse("[proxy]\n[routing]\n[replicas]\n[admin]\n[health]\n") == default()


def test_every_table_of_the_config_is_a_table_of_the_file() -> None:
    assert tuple(config._TABLES) == PARTS
    assert config._DOCKER_ONLY_KEYS == DOCKER_KEYS


def test_default_matches_the_dataclass_defaults() -> None:
    cfg = default()
    assert cfg.proxy == ProxyConfig()
    assert cfg.routing == RoutingConfig()
    assert cfg.replicas == ReplicasConfig()
    assert cfg.admin == AdminConfig()
    assert cfg.health == HealthConfig()
    assert cfg.source == "<default>"
    assert cfg.replicas.count == len(cfg.replicas.names)


def test_defaults_of_the_new_keys() -> None:
    """The documented defaults, spelled out: a change to one is a change to conf/lb.toml too."""
    cfg = default()
    assert cfg.proxy.shutdown_timeout == 10.0
    assert cfg.proxy.tunnel_timeout == 3600.0
    assert cfg.proxy.max_connections == 0  # derived from the descriptor limit
    assert cfg.replicas.provider == "local"
    assert (
        cfg.replicas.image,
        cfg.replicas.cluster,
        cfg.replicas.network,
        cfg.replicas.stop_on_exit,
        cfg.replicas.docker_url,
    ) == ("fastlb-replica:latest", "fastlb", "", True, "")
    assert cfg.admin == AdminConfig(
        on_data_port=True,
        listen=None,
        token="",
        socket="",
        max_replicas=100,
        drain_timeout=10.0,
    )
    assert cfg.health == HealthConfig(
        interval=0.5,
        timeout=0.3,
        rise=2,
        fall=2,
        replace_with="same",
        replace_after=1.0,
        crash_window=5.0,
        backoff=1.0,
        backoff_max=30.0,
    )


def test_shipped_conf_is_exactly_the_default() -> None:
    cfg = load(str(CONF))
    assert cfg == default()
    for part in PARTS:
        assert getattr(cfg, part) == getattr(default(), part)
    assert cfg.source == str(CONF)


# Keys conf/lb.toml shows commented out: derived from other keys (setting them would change what
# the defaults mean: raise count and a written max_replicas = 100 becomes an error), without a
# default (admin listen), or only used by another provider.
COMMENTED_OUT = {
    "replicas": {"names", "static", "command", "cwd", "log_dir", *DOCKER_KEYS},
    "admin": {"listen", "max_replicas"},
    "health": {"timeout", "backoff_max"},
}
DERIVED = ("names", "max_replicas", "timeout", "backoff_max")


def uncomment(text: str, keys: tuple[str, ...]) -> str:
    """conf/lb.toml with the commented-out `# key = value` lines of these keys made live."""
    for key in keys:
        assert text.count(f"\n# {key} = ") == 1, key
        text = text.replace(f"\n# {key} = ", f"\n{key} = ")
    return text


def test_shipped_conf_sets_every_key_but_the_derived_ones() -> None:
    """conf/lb.toml documents every key. The ones in COMMENTED_OUT are there commented out (the
    static entries as an example)."""
    text = CONF.read_text()
    document = tomllib.loads(text)
    assert set(document) == set(config._TABLES)
    for table, keys in config._TABLES.items():
        assert set(document[table]) == set(keys) - COMMENTED_OUT.get(table, set()), table
        for key in COMMENTED_OUT.get(table, set()) - {"static"}:
            assert f"\n# {key} = " in text, key
    assert "\n# names = [" in text
    assert "\n# [[replicas.static]]\n# name = " in text


def test_shipped_conf_comments_out_the_defaults_of_derived_keys() -> None:
    """Uncommented, the derived keys' lines still configure exactly the default."""
    assert parse(uncomment(CONF.read_text(), DERIVED)) == default()


def test_shipped_conf_comments_out_the_docker_defaults() -> None:
    text = uncomment(CONF.read_text(), DOCKER_KEYS)
    assert text.count('\nprovider = "local"\n') == 1
    text = text.replace('\nprovider = "local"\n', '\nprovider = "docker"\n')
    assert parse(text).replicas == ReplicasConfig(provider="docker")


def test_shipped_conf_shows_an_admin_listen_example() -> None:
    text = uncomment(CONF.read_text(), ("listen",)).replace(
        "\non_data_port = true\n", "\non_data_port = false\n"
    )
    admin = parse(text).admin
    assert (admin.on_data_port, admin.listen) == (False, ("127.0.0.1", 5001))


def test_source_is_provenance_not_configuration() -> None:
    a = parse("", "a.toml")
    b = parse("", "b.toml")
    assert a == b
    assert (a.source, b.source) == ("a.toml", "b.toml")


def test_every_key_is_read() -> None:
    """A key listed as known but never read would be accepted and silently ignored: set every
    key to a non-default value and check each one arrives."""
    cfg = parse(
        """
        [proxy]
        listen = "0.0.0.0:8080"
        http = "h11"
        connect_timeout = 1
        header_timeout = 5.5
        backend_timeout = 12
        idle_timeout = 90.0
        max_header_bytes = 8192
        max_header_fields = 50
        forwarded_headers = false
        pool_size = 0
        high_water = 1000
        low_water = 0
        replica_paths = []
        backlog = 16
        shutdown_timeout = 2.5
        tunnel_timeout = 120
        max_connections = 500
        tls_cert = "/etc/fastlb/cert.pem"
        tls_key = "key.pem"
        workers = 4

        [routing]
        table = "classic"
        key = "header:X-User"
        maglev_size = 101
        classic_probe = "quadratic"
        classic_hash = "xxhash"
        balance_factor = 1.25

        [replicas]
        provider = "docker"
        count = 2
        names = ["a", "b"]
        start_timeout = 3
        latency_ms = 5
        jitter_ms = 1.5
        weights = { b = 3 }
        image = "registry.example.com:5000/team/replica:1.2"
        cluster = "blue"
        network = "lbnet"
        stop_on_exit = false
        docker_url = "tcp://10.0.0.5:2375"
        command = ["gunicorn", "--bind", "{host}:{port}", "app:app"]
        env = { APP_NAME = "{name}" }
        port = 8000

        [admin]
        on_data_port = false
        listen = "[::1]:9000"
        token = "s3cret"
        socket = "/run/fastlb/admin.sock"
        max_replicas = 50
        drain_timeout = 4
        prefix = "/_fastlb"

        [health]
        interval = 1
        timeout = 0.25
        rise = 3
        fall = 4
        replace_with = "random"
        replace_after = 2.5
        crash_window = 0
        backoff = 0.5
        backoff_max = 8
        path = "/healthz"
        method = "HEAD"
        expect = 204
        host = "app.internal"

        [metrics]
        buckets = [0.001, 0.5, 3]

        [log]
        access = true
        access_file = "/var/log/fastlb/access.log"
        access_format = "json"
        """
    )
    assert cfg == Config(
        proxy=ProxyConfig(
            host="0.0.0.0",
            port=8080,
            http="h11",
            connect_timeout=1.0,
            header_timeout=5.5,
            backend_timeout=12.0,
            idle_timeout=90.0,
            max_header_bytes=8192,
            max_header_fields=50,
            forwarded_headers=False,
            pool_size=0,
            high_water=1000,
            low_water=0,
            replica_paths=(),
            backlog=16,
            shutdown_timeout=2.5,
            tunnel_timeout=120.0,
            max_connections=500,
            tls_cert="/etc/fastlb/cert.pem",
            tls_key="key.pem",
            workers=4,
        ),
        routing=RoutingConfig(
            table="classic",
            key="header:X-User",
            maglev_size=101,
            classic_probe="quadratic",
            classic_hash="xxhash",
            balance_factor=1.25,
        ),
        replicas=ReplicasConfig(
            provider="docker",
            count=2,
            names=("a", "b"),
            weights=(("b", 3),),
            start_timeout=3.0,
            latency_ms=5.0,
            jitter_ms=1.5,
            image="registry.example.com:5000/team/replica:1.2",
            cluster="blue",
            network="lbnet",
            stop_on_exit=False,
            docker_url="tcp://10.0.0.5:2375",
            command=("gunicorn", "--bind", "{host}:{port}", "app:app"),
            env=(("APP_NAME", "{name}"),),
            port=8000,
        ),
        admin=AdminConfig(
            on_data_port=False,
            listen=("::1", 9000),
            token="s3cret",
            socket="/run/fastlb/admin.sock",
            max_replicas=50,
            drain_timeout=4.0,
            prefix="/_fastlb",
        ),
        health=HealthConfig(
            interval=1.0,
            timeout=0.25,
            rise=3,
            fall=4,
            replace_with="random",
            replace_after=2.5,
            crash_window=0.0,
            backoff=0.5,
            backoff_max=8.0,
            path="/healthz",
            method="HEAD",
            expect=(204, 204),
            host="app.internal",
        ),
        metrics=MetricsConfig(buckets=(0.001, 0.5, 3.0)),
        log=LogConfig(
            access=True, access_file="/var/log/fastlb/access.log", access_format="json"
        ),
    )
    defaults = default()
    for part in PARTS:
        for f in fields(getattr(cfg, part)):
            # docker here; static is tested below, the local-only keys in test_replica_command;
            # routing.labels is no key but the static addresses (test_static_addresses_are_...).
            if f.name in ("static", "cwd", "log_dir", "labels"):
                continue
            assert getattr(getattr(cfg, part), f.name) != getattr(getattr(defaults, part), f.name)


def test_numbers_come_out_as_floats_and_ints() -> None:
    proxy = parse("[proxy]\nconnect_timeout = 3\nshutdown_timeout = 5\n").proxy
    assert isinstance(proxy.connect_timeout, float)
    assert isinstance(proxy.shutdown_timeout, float)
    assert isinstance(proxy.max_header_bytes, int)
    cfg = parse("[admin]\ndrain_timeout = 1\nmax_replicas = 7\n[health]\ninterval = 1\nrise = 3\n")
    assert isinstance(cfg.admin.drain_timeout, float)
    assert isinstance(cfg.admin.max_replicas, int)
    assert isinstance(cfg.health.interval, float)
    assert isinstance(cfg.health.timeout, float)
    assert isinstance(cfg.health.rise, int)


def test_config_is_frozen_and_hashable() -> None:
    cfg = parse("[replicas]\nweights = { Server1 = 2 }\n")
    with pytest.raises(AttributeError):
        cfg.proxy.port = 1  # type: ignore[misc]
    assert hash(cfg) == hash(parse("[replicas]\nweights = { Server1 = 2 }\n"))


# --- bad values: file, table and key named, and what was wrong -----------------------------------

BAD_VALUES: list[tuple[str, str, str, str]] = [
    # (table, key, TOML value, what the message says was expected)
    ("proxy", "connect_timeout", '"abc"', "a positive number"),
    ("proxy", "connect_timeout", "0", "a positive number"),
    ("proxy", "connect_timeout", "-1.5", "a positive number"),
    ("proxy", "connect_timeout", "true", "a positive number"),
    ("proxy", "connect_timeout", "inf", "a positive number (finite)"),
    ("proxy", "connect_timeout", "nan", "a positive number (finite)"),
    ("proxy", "connect_timeout", "[2]", "a positive number"),
    ("proxy", "header_timeout", "0.0", "a positive number"),
    ("proxy", "backend_timeout", "-30", "a positive number"),
    ("proxy", "idle_timeout", "false", "a positive number"),
    ("proxy", "idle_timeout", '"60s"', "a positive number"),
    ("proxy", "max_header_bytes", "0", "a positive integer"),
    ("proxy", "max_header_bytes", "16384.0", "a positive integer"),
    ("proxy", "max_header_bytes", '"16k"', "a positive integer"),
    ("proxy", "max_header_bytes", "true", "a positive integer"),
    ("proxy", "max_header_fields", "-1", "a positive integer"),
    ("proxy", "pool_size", "-1", "an integer >= 0"),
    ("proxy", "pool_size", "1.5", "an integer >= 0"),
    ("proxy", "pool_size", "false", "an integer >= 0"),
    ("proxy", "high_water", "0", "a positive integer"),
    ("proxy", "low_water", "-1", "an integer >= 0"),
    ("proxy", "backlog", "0", "a positive integer"),
    ("proxy", "workers", "0", 'an integer from 1 to 1024 or "auto"'),
    ("proxy", "workers", "1025", 'an integer from 1 to 1024 or "auto"'),
    ("proxy", "workers", '"all"', 'an integer from 1 to 1024 or "auto"'),
    ("proxy", "workers", "2.0", 'an integer from 1 to 1024 or "auto"'),
    ("proxy", "workers", "true", 'an integer from 1 to 1024 or "auto"'),
    ("proxy", "max_connections", "-1", "an integer >= 0"),
    ("proxy", "max_connections", '"1k"', "an integer >= 0"),
    ("proxy", "max_connections", "10.5", "an integer >= 0"),
    ("proxy", "shutdown_timeout", "0", "a positive number"),
    ("proxy", "shutdown_timeout", "-10", "a positive number"),
    ("proxy", "shutdown_timeout", '"10s"', "a positive number"),
    ("proxy", "shutdown_timeout", "true", "a positive number"),
    ("proxy", "shutdown_timeout", "inf", "a positive number (finite)"),
    ("proxy", "tunnel_timeout", "0", "a positive number"),
    ("proxy", "tunnel_timeout", '"1h"', "a positive number"),
    ("proxy", "tunnel_timeout", "inf", "a positive number (finite)"),
    ("proxy", "forwarded_headers", "1", "true or false"),
    ("proxy", "forwarded_headers", '"yes"', "true or false"),
    ("proxy", "forwarded_headers", '"true"', "true or false"),
    ("proxy", "http", '"uvloop"', '"httptools" or "h11"'),
    ("proxy", "http", '"H11"', '"httptools" or "h11"'),
    ("proxy", "http", "1", '"httptools" or "h11"'),
    ("proxy", "listen", '"127.0.0.1"', '"host:port" (or "[ipv6]:port")'),
    ("proxy", "listen", '":5000"', '"host:port" (or "[ipv6]:port")'),
    ("proxy", "listen", "5000", '"host:port" (or "[ipv6]:port")'),
    ("proxy", "listen", '"127.0.0.1:0"', "a port from 1 to 65535"),
    ("proxy", "listen", '"127.0.0.1:65536"', "a port from 1 to 65535"),
    ("proxy", "listen", '"localhost:-1"', "a port from 1 to 65535"),
    ("proxy", "listen", '"localhost:5e3"', "a port from 1 to 65535"),
    ("proxy", "listen", '"localhost:"', "a port from 1 to 65535"),
    ("proxy", "listen", '"localhost: 80"', "a port from 1 to 65535"),
    ("proxy", "listen", '"::1:5000"', "an IPv6 address in brackets"),
    ("proxy", "listen", '"[::1]"', "an IPv6 address in brackets"),
    ("proxy", "listen", '"[nope]:80"', "an IPv6 address inside the brackets"),
    ("proxy", "listen", '"[127.0.0.1]:80"', "an IPv6 address inside the brackets"),
    ("proxy", "listen", '"bad host:80"', "a hostname or IPv4 address"),
    ("proxy", "listen", '"300.1.2.3:80"', "a hostname or IPv4 address"),
    ("proxy", "listen", '"-lead.example:80"', "a hostname or IPv4 address"),
    ("proxy", "replica_paths", '"/home"', "an array"),
    ("proxy", "replica_paths", '{ home = "/home" }', "an array"),
    ("proxy", "replica_paths[0]", '["home"]', 'a path starting with "/"'),
    ("proxy", "replica_paths[1]", '["/home", "neo"]', 'a path starting with "/"'),
    ("proxy", "replica_paths[0]", '["/a b"]', 'a path starting with "/" (no spaces)'),
    ("proxy", "replica_paths[0]", "[1]", 'a path starting with "/"'),
    ("proxy", "replica_paths[0]", '[""]', 'a path starting with "/"'),
    ("routing", "table", '"ring"', '"maglev", "classic" or "ketama"'),
    ("routing", "table", '"Maglev"', '"maglev", "classic" or "ketama"'),
    ("routing", "key", '"user"', "request_id, path, client_ip, header:NAME or cookie:NAME"),
    ("routing", "key", "1", "request_id, path, client_ip, header:NAME or cookie:NAME"),
    ("routing", "key", '"header:"', "a header name"),
    ("routing", "key", '"header:X User"', "a header name"),
    ("routing", "key", '"header:X:Y"', "a header name"),
    ("routing", "key", '"cookie:a;b"', "a cookie name"),
    ("routing", "key", '"cookie:"', "a cookie name"),
    ("routing", "maglev_size", "65536", "a prime number"),
    ("routing", "maglev_size", "1", "a prime number"),
    ("routing", "maglev_size", "0", "a prime number"),
    ("routing", "maglev_size", "-7", "a prime number"),
    ("routing", "maglev_size", "65537.0", "a prime number"),
    ("routing", "maglev_size", '"65537"', "a prime number"),
    ("routing", "maglev_size", "true", "a prime number"),
    ("routing", "maglev_size", "561", "a prime number"),  # a Carmichael number
    ("routing", "balance_factor", "0.5", "0 (off) or a factor from 1 to 100"),
    ("routing", "balance_factor", "-1", "0 (off) or a factor from 1 to 100"),
    ("routing", "balance_factor", "125", "0 (off) or a factor from 1 to 100"),
    ("routing", "balance_factor", '"1.25"', "0 (off) or a factor from 1 to 100"),
    ("routing", "classic_probe", '"cubic"', '"linear" or "quadratic"'),
    ("routing", "classic_hash", '"md5"', '"spec", "xxhash" or "fnv1a"'),
    ("routing", "classic_hash", "0", '"spec", "xxhash" or "fnv1a"'),
    ("replicas", "provider", '"kubernetes"', '"local", "static", "docker" or "swarm"'),
    ("replicas", "provider", '"Docker"', '"local", "static", "docker" or "swarm"'),
    ("replicas", "provider", "1", '"local", "static", "docker" or "swarm"'),
    ("replicas", "count", "0", "an integer from 1 to 1000"),
    ("replicas", "count", "1001", "an integer from 1 to 1000"),
    ("replicas", "count", "2.5", "an integer from 1 to 1000"),
    ("replicas", "count", "true", "an integer from 1 to 1000"),
    ("replicas", "count", '"3"', "an integer from 1 to 1000"),
    ("replicas", "names", '"Server1"', "an array"),
    ("replicas", "names", "[]", "1 to 1000 names"),
    ("replicas", "names[0]", '["bad name"]', "a replica name"),
    ("replicas", "names[0]", '["-lead"]', "a replica name"),
    ("replicas", "names[0]", '[".hidden"]', "a replica name"),
    ("replicas", "names[0]", '["a/b"]', "a replica name"),
    ("replicas", "names[0]", '["Sérver"]', "a replica name"),
    ("replicas", "names[0]", f'["{"a" * 64}"]', "a replica name"),
    ("replicas", "names[1]", '["ok", 1]', "a replica name"),
    ("replicas", "names[2]", '["a", "b", "a"]', "unique names"),
    ("replicas", "start_timeout", "0", "a positive number"),
    ("replicas", "latency_ms", "-1", "a number >= 0"),
    ("replicas", "latency_ms", "true", "a number >= 0"),
    ("replicas", "jitter_ms", "-0.5", "a number >= 0"),
    ("replicas", "jitter_ms", '"5ms"', "a number >= 0"),
    ("replicas", "weights", "3", "a table of name = weight"),
    ("replicas", "weights", '["Server1"]', "a table of name = weight"),
    ("replicas", "weights.Server1", "{ Server1 = 0 }", "an integer from 1 to 256"),
    ("replicas", "weights.Server1", "{ Server1 = 1.5 }", "an integer from 1 to 256"),
    ("replicas", "weights.Server1", "{ Server1 = true }", "an integer from 1 to 256"),
    ("replicas", "weights.Server2", "{ Server1 = 2, Server2 = -1 }", "an integer from 1 to 256"),
    ("admin", "on_data_port", "0", "true or false"),
    ("admin", "on_data_port", '"false"', "true or false"),
    ("admin", "listen", '"127.0.0.1"', '"host:port" (or "[ipv6]:port")'),
    ("admin", "listen", "5001", '"host:port" (or "[ipv6]:port")'),
    ("admin", "listen", '"127.0.0.1:0"', "a port from 1 to 65535"),
    ("admin", "listen", '"::1:5001"', "an IPv6 address in brackets"),
    ("admin", "listen", '"bad host:5001"', "a hostname or IPv4 address"),
    ("admin", "token", "1234", "a string"),
    ("admin", "token", "true", "a string"),
    ("admin", "token", '["s3cret"]', "a string"),
    ("admin", "socket", "0", "a string"),
    ("admin", "socket", "false", "a string"),
    ("admin", "max_replicas", "0", "an integer from 1 to 1000"),
    ("admin", "max_replicas", "1001", "an integer from 1 to 1000"),
    ("admin", "max_replicas", "100.0", "an integer from 1 to 1000"),
    ("admin", "max_replicas", "true", "an integer from 1 to 1000"),
    ("admin", "max_replicas", '"100"', "an integer from 1 to 1000"),
    ("admin", "max_replicas", "2", "at least the configured replica count (3)"),
    ("admin", "drain_timeout", "0", "a positive number"),
    ("admin", "drain_timeout", "-1", "a positive number"),
    ("admin", "drain_timeout", '"10s"', "a positive number"),
    ("admin", "drain_timeout", "nan", "a positive number (finite)"),
    ("health", "interval", "0", "a positive number"),
    ("health", "interval", "-0.5", "a positive number"),
    ("health", "interval", '"500ms"', "a positive number"),
    ("health", "interval", "true", "a positive number"),
    ("health", "interval", "inf", "a positive number (finite)"),
    ("health", "timeout", "0", "a positive number"),
    ("health", "timeout", "false", "a positive number"),
    ("health", "timeout", "0.6", "at most interval (0.5)"),
    ("health", "rise", "0", "an integer from 1 to 100"),
    ("health", "rise", "101", "an integer from 1 to 100"),
    ("health", "rise", "2.0", "an integer from 1 to 100"),
    ("health", "rise", "true", "an integer from 1 to 100"),
    ("health", "fall", "0", "an integer from 1 to 100"),
    ("health", "fall", "-2", "an integer from 1 to 100"),
    ("health", "fall", '"2"', "an integer from 1 to 100"),
    ("health", "replace_with", '"new"', '"same" or "random"'),
    ("health", "replace_with", '"Same"', '"same" or "random"'),
    ("health", "replace_with", "1", '"same" or "random"'),
    ("health", "replace_after", "0", "a positive number"),
    ("health", "replace_after", "-1", "a positive number"),
    ("health", "crash_window", "-1", "a number >= 0"),
    ("health", "crash_window", "true", "a number >= 0"),
    ("health", "crash_window", "-inf", "a number >= 0 (finite)"),
    ("health", "backoff", "0", "a positive number"),
    ("health", "backoff", '"1s"', "a positive number"),
    ("health", "backoff_max", "0", "a positive number"),
    ("health", "backoff_max", "0.5", "at least backoff (1.0)"),
]


@pytest.mark.parametrize(("table", "key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_file_table_and_key(
    table: str, key: str, value: str, expected: str
) -> None:
    bare_key = key.split("[")[0].split(".")[0]
    message = error(f"[{table}]\n{bare_key} = {value}\n")
    assert message.startswith(f"lb.toml: [{table}] {key}: expected {expected}"), message
    assert ", got " in message


# Values of the docker keys, read only with provider = "docker" (with another provider every one
# of them is refused whatever its value: see test_docker_keys_need_the_docker_provider).
BAD_DOCKER_VALUES: list[tuple[str, str, str]] = [
    # (key, TOML value, what the message says was expected)
    ("image", '""', 'an image reference such as "fastlb-replica:latest"'),
    ("image", '"Fastlb-Replica"', 'an image reference such as "fastlb-replica:latest"'),
    ("image", '"fastlb replica"', 'an image reference such as "fastlb-replica:latest"'),
    ("image", '":latest"', 'an image reference such as "fastlb-replica:latest"'),
    ("image", "1", 'an image reference such as "fastlb-replica:latest"'),
    ("cluster", '""', "a replica name"),
    ("cluster", '"my cluster"', "a replica name"),
    ("cluster", '"-lead"', "a replica name"),
    ("cluster", f'"{"c" * 64}"', "a replica name"),
    ("cluster", "1", "a replica name"),
    ("network", '"my net"', "a replica name"),
    ("network", '"_lead"', "a replica name"),
    ("network", "false", "a replica name"),
    ("stop_on_exit", "1", "true or false"),
    ("stop_on_exit", '"no"', "true or false"),
    ("docker_url", "2375", "a string"),
    ("docker_url", "false", "a string"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_DOCKER_VALUES)
def test_bad_docker_value_names_file_table_and_key(key: str, value: str, expected: str) -> None:
    message = error(f'[replicas]\nprovider = "docker"\n{key} = {value}\n')
    assert message.startswith(f"lb.toml: [replicas] {key}: expected {expected}"), message
    assert ", got " in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[proxy]\nconnect_timeout = "abc"\n',
            'lb.toml: [proxy] connect_timeout: expected a positive number, got "abc"',
        ),
        (
            "[proxy]\nconnect_timeout = true\n",
            "lb.toml: [proxy] connect_timeout: expected a positive number, got true",
        ),
        (
            "[proxy]\nforwarded_headers = 1\n",
            "lb.toml: [proxy] forwarded_headers: expected true or false, got 1",
        ),
        (
            '[proxy]\nhttp = "h12"\n',
            'lb.toml: [proxy] http: expected "httptools" or "h11", got "h12" (did you mean "h11"?)',
        ),
        (
            '[proxy]\nreplica_paths = ["/home", "neo"]\n',
            'lb.toml: [proxy] replica_paths[1]: expected a path starting with "/" (no spaces), '
            'got "neo"',
        ),
        (
            '[routing]\ntable = "maglve"\n',
            'lb.toml: [routing] table: expected "maglev", "classic" or "ketama", got "maglve" '
            '(did you mean "maglev"?)',
        ),
        (
            '[routing]\nkey = "client-ip"\n',
            "lb.toml: [routing] key: expected request_id, path, client_ip, header:NAME or "
            'cookie:NAME, got "client-ip" (did you mean "client_ip"?)',
        ),
        (
            "[routing]\nmaglev_size = 65536\n",
            "lb.toml: [routing] maglev_size: expected a prime number, got 65536 "
            "(65537 is the next prime)",
        ),
        (
            '[replicas]\nnames = ["a", "b", "a"]\n',
            'lb.toml: [replicas] names[2]: expected unique names, got "a" twice',
        ),
        (
            "[replicas]\nweights = { Server1 = 0 }\n",
            "lb.toml: [replicas] weights.Server1: expected an integer from 1 to 256, got 0",
        ),
        (
            '[replicas]\nweights = { "my server" = 0 }\n',
            'lb.toml: [replicas] weights."my server": expected an integer from 1 to 256, got 0',
        ),
        (
            '[proxy]\nshutdown_timeout = "10s"\n',
            'lb.toml: [proxy] shutdown_timeout: expected a positive number, got "10s"',
        ),
        (
            "[proxy]\ntunnel_timeout = -1\n",
            "lb.toml: [proxy] tunnel_timeout: expected a positive number, got -1",
        ),
        (
            '[replicas]\nprovider = "dokcer"\n',
            'lb.toml: [replicas] provider: expected "local", "static", "docker" or "swarm", got "dokcer" '
            '(did you mean "docker"?)',
        ),
        (
            '[replicas]\nprovider = "docker"\nimage = "Fastlb"\n',
            'lb.toml: [replicas] image: expected an image reference such as "fastlb-replica:latest", '
            'got "Fastlb"',
        ),
        (
            '[admin]\nlisten = "localhost"\n',
            'lb.toml: [admin] listen: expected "host:port" (or "[ipv6]:port"), got "localhost"',
        ),
        (
            "[admin]\ntoken = 1234\n",
            "lb.toml: [admin] token: expected a string, got 1234",
        ),
        (
            "[admin]\nmax_replicas = 5000\n",
            "lb.toml: [admin] max_replicas: expected an integer from 1 to 1000, got 5000",
        ),
        (
            '[health]\nreplace_with = "sam"\n',
            'lb.toml: [health] replace_with: expected "same" or "random", got "sam" '
            '(did you mean "same"?)',
        ),
        (
            "[health]\nrise = 0\n",
            "lb.toml: [health] rise: expected an integer from 1 to 100, got 0",
        ),
        (
            "[health]\ncrash_window = -5\n",
            "lb.toml: [health] crash_window: expected a number >= 0, got -5",
        ),
    ],
)
def test_exact_messages(text: str, message: str) -> None:
    assert error(text) == message


def test_long_values_are_cut_short_in_messages() -> None:
    names = json.dumps([f"S{i}" for i in range(200)] + ["bad name"])
    message = error(f"[replicas]\nnames = {names}\n")
    assert message.startswith("lb.toml: [replicas] names[200]: expected a replica name")
    assert message.endswith('got "bad name"')
    message = error("[proxy]\nlisten = " + json.dumps(["x"] * 200) + "\n")
    assert message.endswith("...")
    assert len(message) < 200


def test_message_names_the_source_given() -> None:
    message = error('[proxy]\nhttp = "x"\n', source="/etc/fastlb/lb.toml")
    assert message.startswith("/etc/fastlb/lb.toml: [proxy] http: ")


def test_toml_values_are_shown_as_toml() -> None:
    assert error("[proxy]\nbacklog = -inf\n").endswith("got -inf")
    assert error("[proxy]\nbacklog = 1979-05-27\n").endswith("got 1979-05-27")
    assert error("[proxy]\nbacklog = [true, 1.5]\n").endswith("got [true, 1.5]")
    assert error('[proxy]\nbacklog = { a = "b", "c d" = 1 }\n').endswith('got {a = "b", "c d" = 1}')


# --- cross-key rules -----------------------------------------------------------------------------


def test_low_water_must_be_below_high_water() -> None:
    assert (
        error("[proxy]\nhigh_water = 1000\nlow_water = 1000\n")
        == "lb.toml: [proxy] low_water: expected less than high_water (1000), got 1000"
    )
    assert (
        error("[proxy]\nlow_water = 300000\n")
        == "lb.toml: [proxy] low_water: expected less than high_water (262144), got 300000"
    )


def test_a_high_water_below_the_default_low_water_blames_high_water() -> None:
    assert (
        error("[proxy]\nhigh_water = 1000\n")
        == "lb.toml: [proxy] high_water: expected more than low_water (65536), got 1000"
    )


def test_maglev_size_must_give_every_replica_a_slot() -> None:
    assert (
        error("[routing]\nmaglev_size = 3\n[replicas]\ncount = 5\n")
        == "lb.toml: [routing] maglev_size: expected at least one slot per replica (5), got 3"
    )
    assert parse("[routing]\nmaglev_size = 5\n[replicas]\ncount = 5\n").routing.maglev_size == 5


def test_maglev_size_is_not_held_against_the_classic_table() -> None:
    cfg = parse('[routing]\ntable = "classic"\nmaglev_size = 2\n[replicas]\ncount = 5\n')
    assert cfg.routing.maglev_size == 2


@pytest.mark.parametrize("size", [2, 3, 5, 101, 65537, 655373, 2**31 - 1, 2**61 - 1])
def test_prime_maglev_sizes_are_accepted(size: int) -> None:
    text = f"[routing]\nmaglev_size = {size}\n[replicas]\ncount = 1\n"
    assert parse(text).routing.maglev_size == size


@pytest.mark.parametrize("size", [4, 9, 65535, 561, 41041, 2**31 + 1, (2**31 - 1) * (2**31 - 1)])
def test_composite_maglev_sizes_are_refused(size: int) -> None:
    assert "expected a prime number" in error(f"[routing]\nmaglev_size = {size}\n")


# --- unknown keys and tables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[proxy]\nlistn = "127.0.0.1:5000"\n',
            "lb.toml: [proxy] listn: unknown key (did you mean listen?)",
        ),
        (
            "[proxy]\nconect_timeout = 2\n",
            "lb.toml: [proxy] conect_timeout: unknown key (did you mean connect_timeout?)",
        ),
        (
            '[routing]\nclassic_hsh = "spec"\n',
            "lb.toml: [routing] classic_hsh: unknown key (did you mean classic_hash?)",
        ),
        (
            "[replicas]\nweight = { Server1 = 2 }\n",
            "lb.toml: [replicas] weight: unknown key (did you mean weights?)",
        ),
        (
            "[replicas.weight]\nServer1 = 2\n",
            "lb.toml: [replicas] weight: unknown key (did you mean weights?)",
        ),
        (
            '[prxy]\nlisten = "127.0.0.1:5000"\n',
            "lb.toml: [prxy]: unknown table (did you mean [proxy]?)",
        ),
        (
            "[[replica]]\nname = 1\n",
            "lb.toml: [replica]: unknown table (did you mean [replicas]?)",
        ),
        (
            "[tls]\ncert = 1\n",
            "lb.toml: [tls]: unknown table (tables are proxy, routing, replicas, admin, health, metrics, log)",
        ),
        (
            '[admin]\ntokn = "x"\n',
            "lb.toml: [admin] tokn: unknown key (did you mean token?)",
        ),
        (
            "[admin]\nport = 5001\n",
            "lb.toml: [admin] port: unknown key "
            "(known keys: on_data_port, listen, token, socket, max_replicas, drain_timeout, prefix)",
        ),
        (
            "[health]\nintervall = 1\n",
            "lb.toml: [health] intervall: unknown key (did you mean interval?)",
        ),
        (
            "[health]\nbackoff_limit = 60\n",
            "lb.toml: [health] backoff_limit: unknown key (did you mean backoff_max?)",
        ),
        (
            "[proxy]\nshutdown_timout = 5\n",
            "lb.toml: [proxy] shutdown_timout: unknown key (did you mean shutdown_timeout?)",
        ),
        (
            '[replicas]\nimages = "x"\n',
            "lb.toml: [replicas] images: unknown key (did you mean image?)",
        ),
        (
            "[helth]\nrise = 2\n",
            "lb.toml: [helth]: unknown table (did you mean [health]?)",
        ),
        (
            '[admn]\ntoken = "x"\n',
            "lb.toml: [admn]: unknown table (did you mean [admin]?)",
        ),
        (
            '[docker]\nimage = "x"\n',
            "lb.toml: [docker]: unknown table (tables are proxy, routing, replicas, admin, health, metrics, log)",
        ),
        (
            'token = "x"\n',
            "lb.toml: token: key outside any table (did you mean [admin] token?)",
        ),
        (
            "rise = 3\n",
            "lb.toml: rise: key outside any table (did you mean [health] rise?)",
        ),
        (
            'image = "x"\n',
            "lb.toml: image: key outside any table (did you mean [replicas] image?)",
        ),
        ("admin = true\n", "lb.toml: [admin]: expected a table, got true"),
        ("health = []\n", "lb.toml: [health]: expected a table, got []"),
        (
            'listen = "127.0.0.1:5000"\n',
            "lb.toml: listen: key outside any table (did you mean [proxy] listen?)",
        ),
        ("verbose = true\n", "lb.toml: verbose: key outside any table"),
        (
            'names = ["a"]\n',
            "lb.toml: names: key outside any table (did you mean [replicas] names?)",
        ),
        (
            "[weights]\nServer1 = 2\n",
            "lb.toml: [weights]: unknown table (did you mean [replicas.weights]?)",
        ),
        (
            '[[static]]\nname = "a"\n',
            "lb.toml: [static]: unknown table (did you mean [replicas.static]?)",
        ),
        ("proxy = 5\n", "lb.toml: [proxy]: expected a table, got 5"),
        ('routing = "maglev"\n', 'lb.toml: [routing]: expected a table, got "maglev"'),
    ],
)
def test_unknown_keys_and_tables(text: str, message: str) -> None:
    assert error(text) == message


def test_unknown_key_without_a_near_miss_lists_the_known_keys() -> None:
    message = error("[routing]\nzzz = 1\n")
    assert message == (
        "lb.toml: [routing] zzz: unknown key "
        "(known keys: table, key, maglev_size, classic_probe, classic_hash, balance_factor)"
    )


def test_a_sub_table_of_a_table_is_an_unknown_key() -> None:
    assert error("[proxy.tls]\ncert = 1\n").startswith("lb.toml: [proxy] tls: unknown key")


def test_unknown_key_is_reported_before_the_values_it_affects() -> None:
    """A typo in high_water leaves the default in place; the message must be about the typo,
    not about low_water then being too large."""
    message = error("[proxy]\nhigh_wter = 1048576\nlow_water = 524288\n")
    assert message == "lb.toml: [proxy] high_wter: unknown key (did you mean high_water?)"
    message = error("[health]\nintervl = 0.1\ntimeout = 0.2\n")
    assert message == "lb.toml: [health] intervl: unknown key (did you mean interval?)"
    message = error('[replicas]\nprovidr = "docker"\nimage = "x"\n')
    assert message == "lb.toml: [replicas] providr: unknown key (did you mean provider?)"
    # Every table is checked for unknown keys before any value of any table.
    message = error("[replicas]\ncount = 0\n[admin]\nmax_replica = 5\n")
    assert message == "lb.toml: [admin] max_replica: unknown key (did you mean max_replicas?)"


# --- syntax and files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[proxy\n",
        "[proxy]\nlisten = \n",
        "[proxy]\nlisten = '127.0.0.1:5000\n",
        "[proxy]\nbacklog = 1\nbacklog = 2\n",
        "[proxy]\n[proxy]\n",
        "[proxy]\nforwarded_headers = True\n",
    ],
)
def test_syntax_errors(text: str) -> None:
    message = error(text)
    assert message.startswith("lb.toml: invalid TOML: ")
    assert "line" in message or "end of document" in message


def test_syntax_error_message_is_tomllibs() -> None:
    assert error("[proxy]\nlisten = \n") == (
        "lb.toml: invalid TOML: Invalid value (at line 2, column 10)"
    )


def test_load_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lb.toml").write_text('[proxy]\nhttp = "x"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^lb\.toml: \[proxy\] http: "):
        load("lb.toml")
    with pytest.raises(ConfigError, match=r"^\./lb\.toml: \[proxy\] http: "):
        load("./lb.toml")


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_text("[replicas]\ncount = 4\n")
    cfg = load(str(path))
    assert cfg.replicas.count == 4
    assert cfg.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: cannot read config: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: cannot read config: Is a directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[replicas]\nnames = ["S\xe9rver"]\n')
    with pytest.raises(ConfigError, match=r": cannot read config: not UTF-8 text"):
        load(str(path))


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[replicas]\ncount = 2\n")
    assert load(str(path)).replicas.count == 2


def test_toml_syntax_error_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[proxy\n")
    with pytest.raises(ConfigError, match=rf"^{path}: invalid TOML: "):
        load(str(path))


# --- listen forms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:5000", "127.0.0.1", 5000),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("localhost:8080", "localhost", 8080),
        ("lb.example.com:443", "lb.example.com", 443),
        ("lb.example.com.:443", "lb.example.com.", 443),
        ("my_service:1", "my_service", 1),
        ("[::1]:5000", "::1", 5000),
        ("[::]:65535", "::", 65535),
        ("[2001:db8::1]:8080", "2001:db8::1", 8080),
        ("[fe80::1%eth0]:5000", "fe80::1%eth0", 5000),
    ],
)
def test_listen_forms(listen: str, host: str, port: int) -> None:
    proxy = parse(f'[proxy]\nlisten = "{listen}"\n').proxy
    assert (proxy.host, proxy.port) == (host, port)


@given(
    octets=st.tuples(*[st.integers(0, 255)] * 4),
    port=st.integers(1, 65535),
)
@settings(max_examples=50, deadline=None)
def test_any_ipv4_listen_address_round_trips(octets: tuple[int, ...], port: int) -> None:
    host = ".".join(map(str, octets))
    proxy = parse(f'[proxy]\nlisten = "{host}:{port}"\n').proxy
    assert (proxy.host, proxy.port) == (host, port)


# --- routing -------------------------------------------------------------------------------------


def test_bad_header_name_message() -> None:
    assert error('[routing]\nkey = "header:X User"\n') == (
        'lb.toml: [routing] key: expected a header name after "header:" '
        '(letters, digits and !#$%&\'*+-.^_`|~), got "header:X User"'
    )


def test_huge_composite_maglev_size_is_refused_quickly() -> None:
    assert error(f"[routing]\nmaglev_size = {10**40}\n") == (
        f"lb.toml: [routing] maglev_size: expected a prime number, got {10**40}"
    )


@pytest.mark.parametrize(
    "key",
    [
        "request_id",
        "path",
        "client_ip",
        "header:X-User",
        "header:x_forwarded.for~1",
        "cookie:session",
        "cookie:__Host-id",
    ],
)
def test_routing_keys(key: str) -> None:
    assert parse(f'[routing]\nkey = "{key}"\n').routing.key == key


@pytest.mark.parametrize("name", ["spec", "xxhash", "fnv1a"])
def test_classic_hashes(name: str) -> None:
    assert parse(f'[routing]\nclassic_hash = "{name}"\n').routing.classic_hash == name


def test_classic_hash_follows_the_hashing_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fastlb.hashing")
    fake.CLASSIC_HASHES = {"spec": object(), "custom": object()}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fastlb.hashing", fake)
    assert parse('[routing]\nclassic_hash = "custom"\n').routing.classic_hash == "custom"
    assert error('[routing]\nclassic_hash = "xxhash"\n') == (
        'lb.toml: [routing] classic_hash: expected "spec" or "custom", got "xxhash"'
    )


def test_classic_hash_without_the_hashing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastlb.hashing", None)  # makes the import fail
    assert parse('[routing]\nclassic_hash = "fnv1a"\n').routing.classic_hash == "fnv1a"
    assert '"spec", "xxhash" or "fnv1a"' in error('[routing]\nclassic_hash = "md5"\n')


def test_classic_hash_with_a_hashing_module_without_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "fastlb.hashing", types.ModuleType("fastlb.hashing"))
    assert parse('[routing]\nclassic_hash = "xxhash"\n').routing.classic_hash == "xxhash"


# --- local replicas: names, count, weights -------------------------------------------------------


def test_count_names_the_replicas() -> None:
    replicas = parse("[replicas]\ncount = 5\n").replicas
    assert replicas.count == 5
    assert replicas.names == ("Server1", "Server2", "Server3", "Server4", "Server5")


def test_names_give_the_count() -> None:
    replicas = parse('[replicas]\nnames = ["alpha", "beta"]\n').replicas
    assert (replicas.count, replicas.names) == (2, ("alpha", "beta"))


def test_names_and_count_that_agree() -> None:
    replicas = parse('[replicas]\ncount = 2\nnames = ["a.1", "b_2"]\n').replicas
    assert (replicas.count, replicas.names) == (2, ("a.1", "b_2"))


def test_names_and_count_that_disagree() -> None:
    assert error('[replicas]\ncount = 3\nnames = ["a", "b"]\n') == (
        "lb.toml: [replicas] names: expected 3 names to match count = 3, got 2"
    )


def test_limits_of_count_and_names() -> None:
    assert parse("[replicas]\ncount = 1000\n").replicas.names[-1] == "Server1000"
    assert parse("[replicas]\ncount = 1\n").replicas.names == ("Server1",)
    longest = "a" * 63
    assert parse(f'[replicas]\nnames = ["{longest}"]\n').replicas.names == (longest,)
    too_many = json.dumps([f"S{i}" for i in range(1001)])
    assert error(f"[replicas]\nnames = {too_many}\n") == (
        "lb.toml: [replicas] names: expected 1 to 1000 names, got 1001"
    )


def test_weights() -> None:
    replicas = parse("[replicas]\ncount = 4\nweights = { Server4 = 3, Server2 = 2 }\n").replicas
    assert replicas.weights == (("Server2", 2), ("Server4", 3))  # in names order


def test_weights_as_a_table_header() -> None:
    replicas = parse("[replicas]\ncount = 2\n[replicas.weights]\nServer2 = 5\n").replicas
    assert replicas.weights == (("Server2", 5),)


def test_weights_of_one_are_the_default() -> None:
    assert parse("[replicas]\nweights = { Server1 = 1 }\n") == default()
    assert parse("[replicas]\nweights = {}\n") == default()


def test_weights_for_unknown_replicas() -> None:
    assert error("[replicas]\nweights = { Servr2 = 2 }\n") == (
        "lb.toml: [replicas] weights.Servr2: unknown replica (did you mean Server2?)"
    )
    assert error("[replicas]\nweights = { Server4 = 2 }\n").startswith(
        "lb.toml: [replicas] weights.Server4: unknown replica"
    )
    assert error('[replicas]\nnames = ["a", "b"]\nweights = { zzzz = 2 }\n') == (
        "lb.toml: [replicas] weights.zzzz: unknown replica; replicas are a, b"
    )


def test_weights_follow_the_names_given() -> None:
    replicas = parse('[replicas]\nnames = ["a", "b"]\nweights = { b = 4 }\n').replicas
    assert replicas.weights == (("b", 4),)


def test_local_provider_with_static_entries() -> None:
    text = '[replicas]\n[[replicas.static]]\nname = "a"\naddress = "127.0.0.1:8001"\n'
    assert error(text) == (
        'lb.toml: [replicas] static: entries are only used with provider = "static" '
        '(set provider = "static", or remove the [[replicas.static]] entries)'
    )


# --- static replicas -----------------------------------------------------------------------------

STATIC = """
[replicas]
provider = "static"
start_timeout = 20

[[replicas.static]]
name = "Server1"
address = "10.0.0.1:8001"

[[replicas.static]]
name = "Server2"
address = "[::1]:8002"
weight = 3

[[replicas.static]]
name = "db-node.3"
address = "replica3.internal:80"
weight = 1
"""


def test_static_provider() -> None:
    replicas = parse(STATIC).replicas
    assert replicas == ReplicasConfig(
        provider="static",
        count=3,
        names=("Server1", "Server2", "db-node.3"),
        weights=(("Server2", 3),),
        static=(
            ReplicaSpec("Server1", "10.0.0.1", 8001, 1, "10.0.0.1:8001"),
            ReplicaSpec("Server2", "::1", 8002, 3, "[::1]:8002"),
            ReplicaSpec("db-node.3", "replica3.internal", 80, 1, "replica3.internal:80"),
        ),
        start_timeout=20.0,
    )


def test_static_provider_needs_entries() -> None:
    assert error('[replicas]\nprovider = "static"\n') == (
        'lb.toml: [replicas] static: missing: provider = "static" needs [[replicas.static]] '
        "entries with a name and an address"
    )
    assert error('[replicas]\nprovider = "static"\nstatic = []\n') == (
        "lb.toml: [replicas] static: expected 1 to 1000 [[replicas.static]] entries, got 0"
    )


def test_static_entries_must_be_an_array_of_tables() -> None:
    text = '[replicas]\nprovider = "static"\n[replicas.static]\nname = "a"\naddress = "h:1"\n'
    assert error(text) == (
        "lb.toml: [replicas] static: expected an array of tables, written [[replicas.static]], "
        'got {name = "a", address = "h:1"}'
    )
    assert "expected an array of tables" in error(
        '[replicas]\nprovider = "static"\nstatic = ["h:1"]\n'
    )


@pytest.mark.parametrize("key", ["count", "names", "weights", "latency_ms", "jitter_ms"])
def test_static_provider_refuses_local_keys(key: str) -> None:
    value = {
        "count": "3",
        "names": '["Server1"]',
        "weights": "{ Server1 = 2 }",
        "latency_ms": "0",
        "jitter_ms": "5",
    }[key]
    text = STATIC.replace("start_timeout = 20", f"{key} = {value}")
    assert error(text).startswith(f'lb.toml: [replicas] {key}: not used with provider = "static"')


ENTRY = '[replicas]\nprovider = "static"\n[[replicas.static]]\nname = "ok"\naddress = "h:1"\n'


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            'address = "h:2"',
            "lb.toml: [[replicas.static]] #2 name: missing: every [[replicas.static]] entry "
            "needs a name and an address",
        ),
        (
            'name = "b"',
            "lb.toml: [[replicas.static]] #2 address: missing: every [[replicas.static]] entry "
            "needs a name and an address",
        ),
        (
            'name = "b"\naddress = "h"',
            'lb.toml: [[replicas.static]] #2 address: expected "host:port" (or "[ipv6]:port"), '
            'got "h"',
        ),
        (
            'name = "b"\naddress = "h:0"',
            "lb.toml: [[replicas.static]] #2 address: expected a port from 1 to 65535 after the "
            'host, got "h:0"',
        ),
        (
            'name = "b c"\naddress = "h:2"',
            'lb.toml: [[replicas.static]] #2 name: expected a replica name (letters, digits, "_", '
            '"." or "-", starting with a letter or digit, at most 63 characters), got "b c"',
        ),
        (
            'name = "b"\naddress = "h:2"\nweight = 0',
            "lb.toml: [[replicas.static]] #2 weight: expected an integer from 1 to 256, got 0",
        ),
        (
            'name = "b"\naddress = "h:2"\nweight = true',
            "lb.toml: [[replicas.static]] #2 weight: expected an integer from 1 to 256, got true",
        ),
        (
            'name = "b"\naddress = "h:2"\nadress = "h:3"',
            "lb.toml: [[replicas.static]] #2 adress: unknown key (did you mean address?)",
        ),
        (
            'name = "ok"\naddress = "h:2"',
            'lb.toml: [[replicas.static]] #2 name: expected unique names, got "ok" again '
            "(already used by #1)",
        ),
    ],
)
def test_bad_static_entries(entry: str, message: str) -> None:
    assert error(f"{ENTRY}[[replicas.static]]\n{entry}\n") == message


def test_static_replicas_count_towards_the_maglev_size() -> None:
    text = ENTRY + '[[replicas.static]]\nname = "b"\naddress = "h:2"\n[routing]\nmaglev_size = 1\n'
    assert error(text).startswith("lb.toml: [routing] maglev_size: expected a prime number")
    text = text.replace("maglev_size = 1", "maglev_size = 2")
    assert parse(text).replicas.count == 2
    many = ENTRY + "".join(
        f'[[replicas.static]]\nname = "s{i}"\naddress = "h:{i}"\n' for i in range(1, 4)
    )
    assert error(many + "[routing]\nmaglev_size = 3\n") == (
        "lb.toml: [routing] maglev_size: expected at least one slot per replica (4), got 3"
    )


# --- docker replicas -----------------------------------------------------------------------------

DOCKER = """
[replicas]
provider = "docker"
count = 4
start_timeout = 30
weights = { Server2 = 2 }
image = "registry.example.com:5000/team/fastlb-replica:1.2"
cluster = "blue.prod"
network = "lb_net"
stop_on_exit = false
docker_url = "unix:///var/run/docker.sock"
"""


def test_docker_provider() -> None:
    replicas = parse(DOCKER).replicas
    assert replicas == ReplicasConfig(
        provider="docker",
        count=4,
        names=("Server1", "Server2", "Server3", "Server4"),
        weights=(("Server2", 2),),
        start_timeout=30.0,
        image="registry.example.com:5000/team/fastlb-replica:1.2",
        cluster="blue.prod",
        network="lb_net",
        stop_on_exit=False,
        docker_url="unix:///var/run/docker.sock",
    )


def test_docker_provider_alone_takes_the_defaults() -> None:
    cfg = parse('[replicas]\nprovider = "docker"\n')
    assert cfg.replicas == ReplicasConfig(provider="docker")
    assert cfg == replace(default(), replicas=ReplicasConfig(provider="docker"))


def test_docker_keys_set_to_their_defaults_change_nothing() -> None:
    text = (
        '[replicas]\nprovider = "docker"\nimage = "fastlb-replica:latest"\ncluster = "fastlb"\n'
        'network = ""\nstop_on_exit = true\ndocker_url = ""\n'
    )
    assert parse(text).replicas == ReplicasConfig(provider="docker")


def test_docker_replicas_are_named_and_counted_as_local_ones() -> None:
    replicas = parse('[replicas]\nprovider = "docker"\nnames = ["a", "b"]\n').replicas
    assert (replicas.count, replicas.names) == (2, ("a", "b"))
    assert error('[replicas]\nprovider = "docker"\nweights = { c = 2 }\n').startswith(
        "lb.toml: [replicas] weights.c: unknown replica"
    )
    assert error('[replicas]\nprovider = "docker"\ncount = 5\n[routing]\nmaglev_size = 3\n') == (
        "lb.toml: [routing] maglev_size: expected at least one slot per replica (5), got 3"
    )


# A good value for each docker key, so the refusal below is about the provider, not the value.
DOCKER_VALUES = {
    "image": '"fastlb-replica:latest"',
    "cluster": '"fastlb"',
    "network": '"lb_net"',
    "stop_on_exit": "false",
    "docker_url": '""',
    "port": "8000",
}


@pytest.mark.parametrize("provider", ["", 'provider = "local"\n', "static"])
@pytest.mark.parametrize("key", DOCKER_KEYS)
def test_docker_keys_need_the_docker_provider(key: str, provider: str) -> None:
    setting = f"{key} = {DOCKER_VALUES[key]}"
    if provider == "static":
        text = STATIC.replace("start_timeout = 20", setting)
    else:
        text = f"[replicas]\n{provider}{setting}\n"
    assert error(text) == f'lb.toml: [replicas] {key}: only used with provider = "docker" or "swarm"'


def test_docker_keys_are_refused_before_their_values_are_checked() -> None:
    """Without the docker provider the value does not matter: the key is the mistake."""
    assert error("[replicas]\nimage = 1\n") == (
        'lb.toml: [replicas] image: only used with provider = "docker" or "swarm"'
    )


def test_docker_provider_refuses_static_entries() -> None:
    text = DOCKER + '[[replicas.static]]\nname = "a"\naddress = "127.0.0.1:8001"\n'
    assert error(text) == (
        'lb.toml: [replicas] static: entries are only used with provider = "static" '
        '(set provider = "static", or remove the [[replicas.static]] entries)'
    )


@pytest.mark.parametrize(
    "image",
    [
        "fastlb-replica",
        "fastlb-replica:latest",
        "fastlb_replica:1.0.3",
        "team/fastlb-replica:2",
        "ghcr.io/team/fastlb-replica:v1.2.3",
        "localhost:5000/fastlb-replica",
        "fastlb-replica@sha256:" + "0123456789abcdef" * 4,
    ],
)
def test_docker_image_references(image: str) -> None:
    text = f'[replicas]\nprovider = "docker"\nimage = "{image}"\n'
    assert parse(text).replicas.image == image


@pytest.mark.parametrize("network", ["", "lb_net", "bridge", "net.1", "a" * 63])
def test_docker_networks(network: str) -> None:
    text = f'[replicas]\nprovider = "docker"\nnetwork = "{network}"\n'
    assert parse(text).replicas.network == network


# --- admin ---------------------------------------------------------------------------------------


def test_admin_off_the_data_port_needs_a_listener() -> None:
    assert error("[admin]\non_data_port = false\n") == (
        "lb.toml: [admin] listen: missing: on_data_port = false needs an admin address such as "
        '"127.0.0.1:5001" (otherwise the admin routes would be served nowhere)'
    )
    assert error('[admin]\non_data_port = false\nlisten = "127.0.0.1:0"\n').startswith(
        "lb.toml: [admin] listen: expected a port from 1 to 65535"
    )


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:5001", ("127.0.0.1", 5001)),
        ("[::1]:5001", ("::1", 5001)),
        ("admin.internal:80", ("admin.internal", 80)),
    ],
)
def test_admin_listener(listen: str, address: tuple[str, int]) -> None:
    admin = parse(f'[admin]\non_data_port = false\nlisten = "{listen}"\n').admin
    assert admin == AdminConfig(on_data_port=False, listen=address)


def test_admin_listener_alongside_the_data_port() -> None:
    """Accepted today: listen with on_data_port = true (admin served on both)."""
    admin = parse('[admin]\nlisten = "127.0.0.1:5001"\n').admin
    assert (admin.on_data_port, admin.listen) == (True, ("127.0.0.1", 5001))


def test_admin_token_and_socket_are_any_strings() -> None:
    admin = parse('[admin]\ntoken = "a b/c=="\nsocket = "relative/admin.sock"\n').admin
    assert (admin.token, admin.socket) == ("a b/c==", "relative/admin.sock")


@pytest.mark.parametrize(
    ("text", "max_replicas"),
    [
        ("", 100),
        ("[replicas]\ncount = 5\n", 100),
        ("[replicas]\ncount = 100\n", 100),
        ("[replicas]\ncount = 101\n", 101),
        ("[replicas]\ncount = 1000\n", 1000),
        ("[replicas]\nnames = " + json.dumps([f"S{i}" for i in range(150)]) + "\n", 150),
        ('[replicas]\nprovider = "docker"\ncount = 200\n', 200),
        (ENTRY, 100),
    ],
)
def test_max_replicas_defaults_to_at_least_the_replica_count(text: str, max_replicas: int) -> None:
    assert parse(text).admin.max_replicas == max_replicas


def test_max_replicas_must_cover_the_replica_count() -> None:
    assert error("[replicas]\ncount = 5\n[admin]\nmax_replicas = 4\n") == (
        "lb.toml: [admin] max_replicas: expected at least the configured replica count (5), got 4"
    )
    many = ENTRY + "".join(
        f'[[replicas.static]]\nname = "s{i}"\naddress = "h:{i}"\n' for i in range(1, 3)
    )
    assert error(many + "[admin]\nmax_replicas = 2\n").startswith(
        "lb.toml: [admin] max_replicas: expected at least the configured replica count (3)"
    )
    assert parse("[replicas]\ncount = 5\n[admin]\nmax_replicas = 5\n").admin.max_replicas == 5
    assert parse("[admin]\nmax_replicas = 1\n[replicas]\ncount = 1\n").admin.max_replicas == 1


def test_a_bad_replica_count_is_reported_before_max_replicas() -> None:
    message = error("[replicas]\ncount = 0\n[admin]\nmax_replicas = 5\n")
    assert message.startswith("lb.toml: [replicas] count: ")


# --- health --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "timeout"), [(0.5, 0.3), (0.1, 0.1), (0.3, 0.3), (0.25, 0.25), (2, 0.3)]
)
def test_timeout_defaults_to_at_most_the_interval(interval: float, timeout: float) -> None:
    health = parse(f"[health]\ninterval = {interval}\n").health
    assert (health.interval, health.timeout) == (interval, timeout)


def test_timeout_must_not_exceed_the_interval() -> None:
    assert error("[health]\ntimeout = 1\n") == (
        "lb.toml: [health] timeout: expected at most interval (0.5), got 1"
    )
    assert error("[health]\ninterval = 2\ntimeout = 2.5\n") == (
        "lb.toml: [health] timeout: expected at most interval (2), got 2.5"
    )
    # Values as written: rounded, both would read 0.3.
    assert error("[health]\ninterval = 0.3\ntimeout = 0.30000001\n") == (
        "lb.toml: [health] timeout: expected at most interval (0.3), got 0.30000001"
    )
    health = parse("[health]\ninterval = 0.3\ntimeout = 0.3\n").health
    assert (health.interval, health.timeout) == (0.3, 0.3)


@pytest.mark.parametrize(("backoff", "backoff_max"), [(1, 30), (0.1, 30), (30, 30), (60, 60)])
def test_backoff_max_defaults_to_at_least_the_backoff(backoff: float, backoff_max: float) -> None:
    health = parse(f"[health]\nbackoff = {backoff}\n").health
    assert (health.backoff, health.backoff_max) == (backoff, backoff_max)


def test_backoff_max_must_not_be_below_the_backoff() -> None:
    assert error("[health]\nbackoff_max = 0.5\n") == (
        "lb.toml: [health] backoff_max: expected at least backoff (1.0), got 0.5"
    )
    assert error("[health]\nbackoff = 10\nbackoff_max = 5\n") == (
        "lb.toml: [health] backoff_max: expected at least backoff (10), got 5"
    )
    health = parse("[health]\nbackoff = 5\nbackoff_max = 5\n").health
    assert (health.backoff, health.backoff_max) == (5.0, 5.0)


@pytest.mark.parametrize("key", ["rise", "fall"])
@pytest.mark.parametrize("count", [1, 2, 100])
def test_rise_and_fall_limits(key: str, count: int) -> None:
    assert getattr(parse(f"[health]\n{key} = {count}\n").health, key) == count


@pytest.mark.parametrize("how", ["same", "random"])
def test_replace_with(how: str) -> None:
    assert parse(f'[health]\nreplace_with = "{how}"\n').health.replace_with == how


def test_crash_window_may_be_zero_but_replace_after_may_not() -> None:
    assert parse("[health]\ncrash_window = 0\n").health.crash_window == 0.0
    assert error("[health]\nreplace_after = 0\n") == (
        "lb.toml: [health] replace_after: expected a positive number, got 0"
    )


# --- robustness ----------------------------------------------------------------------------------

ALL_KEYS = [(table, key) for table, keys in config._TABLES.items() for key in keys]

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=4))


def toml_literal(value: object) -> str:
    """TOML for a generated value (JSON's strings, ints and arrays are TOML too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    # TOML forbids a raw DEL in a string, which JSON leaves as is.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


@given(place=st.sampled_from(ALL_KEYS), value=toml_values)
@settings(max_examples=300, deadline=None)
def test_any_value_gives_a_config_or_a_config_error(place: tuple[str, str], value: object) -> None:
    """The error names the key set, or, when the value is good but needs another key (provider =
    "static" needs entries, on_data_port = false an admin listen), reports that one missing and
    says which setting needs it."""
    table, key = place
    # Docker keys are refused whatever their value without the docker provider: give them one,
    # so the values reach their checks.
    provider = 'provider = "docker"\n' if table == "replicas" and key in DOCKER_KEYS else ""
    try:
        cfg = parse(f"[{table}]\n{provider}{key} = {toml_literal(value)}\n")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"lb.toml: [{table}] {key}") or (
            message.startswith(f"lb.toml: [{table}] ") and f": missing: {key} = " in message
        ), message
    else:
        assert isinstance(cfg, Config)


# --- [proxy] tls_cert and tls_key (what is in the files: tests/test_tls.py) ---------------------


def test_tls_is_off_by_default_and_takes_both_paths() -> None:
    assert (default().proxy.tls_cert, default().proxy.tls_key) == ("", "")
    proxy = parse('[proxy]\ntls_cert = "certs/lb.pem"\ntls_key = "/etc/fastlb/lb.key"\n').proxy
    assert (proxy.tls_cert, proxy.tls_key) == ("certs/lb.pem", "/etc/fastlb/lb.key")
    # One file holding both, as HAProxy's crt takes it.
    proxy = parse('[proxy]\ntls_cert = "lb.pem"\ntls_key = "lb.pem"\n').proxy
    assert (proxy.tls_cert, proxy.tls_key) == ("lb.pem", "lb.pem")
    # Both empty is plain HTTP, as neither is.
    assert parse('[proxy]\ntls_cert = ""\ntls_key = ""\n') == default()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'tls_cert = "lb.pem"',
            'lb.toml: [proxy] tls_key: missing: tls_cert = "lb.pem" needs its private key '
            "(a PEM file)",
        ),
        (
            'tls_key = "lb.key"',
            'lb.toml: [proxy] tls_cert: missing: tls_key = "lb.key" needs its certificate '
            "(a PEM file)",
        ),
        (
            'tls_cert = "lb.pem"\ntls_key = ""',
            'lb.toml: [proxy] tls_key: missing: tls_cert = "lb.pem" needs its private key',
        ),
        ("tls_cert = 1", "lb.toml: [proxy] tls_cert: expected a path (a string), got 1"),
        (
            'tls_key = ["a", "b"]',
            'lb.toml: [proxy] tls_key: expected a path (a string), got ["a", "b"]',
        ),
        ('tls_crt = "lb.pem"', "lb.toml: [proxy] tls_crt: unknown key (did you mean tls_cert?)"),
    ],
)
def test_tls_keys_come_in_pairs_and_are_paths(text: str, message: str) -> None:
    assert error(f"[proxy]\n{text}\n").startswith(message)


def test_a_key_that_needs_another_names_the_missing_one() -> None:
    """The two cases test_any_value_gives_a_config_or_a_config_error allows for, pinned down."""
    assert error('[replicas]\nprovider = "static"\n').startswith(
        'lb.toml: [replicas] static: missing: provider = "static" needs '
    )
    assert error("[admin]\non_data_port = false\n").startswith(
        "lb.toml: [admin] listen: missing: on_data_port = false needs "
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[metrics]\nbuckets = []\n", "lb.toml: [metrics] buckets: expected at least one bucket bound"),
        ("[metrics]\nbuckets = [1, 0.5]\n", "lb.toml: [metrics] buckets: expected strictly increasing"),
        ("[metrics]\nbuckets = [0.1, 0.1]\n", "lb.toml: [metrics] buckets: expected strictly increasing"),
        ("[metrics]\nbuckets = [0, 1]\n", "lb.toml: [metrics] buckets[0]: expected a positive number"),
        ("[log]\naccess = 1\n", "lb.toml: [log] access: expected"),
        ("[log]\naccess_file = 3\n", "lb.toml: [log] access_file: expected a string"),
        (
            '[log]\naccess_format = "jsn"\n',
            'lb.toml: [log] access_format: expected "combined" or "json", got "jsn" (did you '
            'mean "json"?)',
        ),
        ("[log]\naccess_format = 1\n", 'lb.toml: [log] access_format: expected "combined" or'),
    ],
)
def test_metrics_and_log_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("prefix", ["", "/_fastlb", "/ops/lb", "/a.b~c:1@x"])
def test_admin_prefix_values(prefix: str) -> None:
    assert parse(f'[admin]\nprefix = "{prefix}"\n').admin.prefix == prefix


@pytest.mark.parametrize("prefix", ["/", "_fastlb", "/_fastlb/", "/a//b", "/a b", "/a?x", "/a#b", 1])
def test_admin_prefix_that_no_request_could_reach(prefix: object) -> None:
    shown = f'"{prefix}"' if isinstance(prefix, str) else str(prefix)
    with pytest.raises(ConfigError) as info:
        parse(f"[admin]\nprefix = {shown}\n")
    assert str(info.value) == (
        'lb.toml: [admin] prefix: expected "" or a path such as "/_fastlb" (no trailing "/", '
        f'no "?", no spaces), got {shown}'
    )


def test_access_log_defaults_to_nginx_combined() -> None:
    assert parse("[log]\naccess = true\n").log.access_format == "combined"


# --- your own app as replicas: command, env, cwd, log_dir; the heartbeat -------------------------


def test_replica_command() -> None:
    replicas = parse(
        '[replicas]\ncommand = ["uvicorn", "app:app", "--host", "{host}", "--port", "{port}"]\n'
        'env = { REPLICA_NAME = "{name}", LITERAL = "{{braces}}" }\ncwd = "/srv/app"\n'
        'log_dir = "/var/log/app"\n'
    ).replicas
    assert replicas.command == ("uvicorn", "app:app", "--host", "{host}", "--port", "{port}")
    assert replicas.env == (("REPLICA_NAME", "{name}"), ("LITERAL", "{{braces}}"))
    assert (replicas.cwd, replicas.log_dir) == ("/srv/app", "/var/log/app")
    # {port} in env alone is enough: the app reads its port from there.
    assert parse('[replicas]\ncommand = ["app"]\nenv = { PORT = "{port}" }\n').replicas.command
    assert parse('[replicas]\ncommand = ["app", "--fd={fd}"]\n').replicas.command


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'command = ["uvicorn", "app:app", "--port", "{prot}"]',
            "[replicas] command[3]: unknown placeholder {prot} in \"{prot}\" (did you mean "
            "{port}?); known: {host}, {port}, {name}, {fd}",
        ),
        (
            "command = []",
            '[replicas] command: expected a command line such as ["uvicorn", "app:app", '
            '"--fd", "{fd}"], got []',
        ),
        ('command = ["app", 8000]', "[replicas] command[1]: expected a string, got 8000"),
        ('command = "uvicorn app:app"', '[replicas] command: expected an array, got "uvicorn app:app"'),
        ('command = ["", "{port}"]', '[replicas] command[0]: expected a program name, got ""'),
        (
            'command = ["app", "--port={port"]',
            '[replicas] command[1]: expected placeholders in braces ({host}, {port}, {name}, {fd}; '
            'write "{{" and "}}" for a brace), got "--port={port"',
        ),
        (
            'command = ["app", "{port:d}"]',
            '[replicas] command[1]: expected a plain placeholder such as {port}, got "{port:d}"',
        ),
        (
            'command = ["app", "{0}"]',
            '[replicas] command[1]: unknown placeholder {0} in "{0}"; known: {host}, {port}, '
            "{name}, {fd}",
        ),
        (
            'command = ["uvicorn", "app:app"]',
            "[replicas] command: expected {fd} or {port} in command (or env): fastlb tells "
            "each replica where to listen, e.g. --port {port}, or --fd {fd} for a socket "
            'fastlb bound; got ["uvicorn", "app:app"]',
        ),
        ('env = { PORT = 8000 }', "[replicas] env.PORT: expected a string, got 8000"),
        (
            'env = { "MY-VAR" = "x" }',
            '[replicas] env.MY-VAR: expected a variable name (letters, digits and _, not '
            'starting with a digit), got "MY-VAR"',
        ),
        ('env = { A = "{nmae}" }', '[replicas] env.A: unknown placeholder {nmae} in "{nmae}" (did you mean {name}?); known: {host}, {port}, {name}, {fd}'),
        ('env = ["A=1"]', '[replicas] env: expected a table of NAME = "value", got ["A=1"]'),
        ("cwd = 1", "[replicas] cwd: expected a path (a string), got 1"),
        ("log_dir = false", "[replicas] log_dir: expected a path (a string), got false"),
    ],
)
def test_replica_command_errors(text: str, message: str) -> None:
    assert error(f"[replicas]\n{text}\n") == f"lb.toml: {message}"


def test_command_keys_by_provider() -> None:
    assert error('[replicas]\nprovider = "docker"\ncommand = ["app", "--fd", "{fd}"]\n') == (
        'lb.toml: [replicas] command[2]: unknown placeholder {fd} in "{fd}" (only with '
        'provider = "local": a container cannot inherit a socket); known: {host}, {port}, {name}'
    )
    # A container's app may listen on its fixed port: no placeholder needed.
    docker = parse('[replicas]\nprovider = "docker"\ncommand = ["gunicorn", "app:app"]\n')
    assert docker.replicas.command == ("gunicorn", "app:app")
    for key, value in (("cwd", '"/srv"'), ("log_dir", '"/var/log"')):
        assert error(f'[replicas]\nprovider = "docker"\n{key} = {value}\n') == (
            f'lb.toml: [replicas] {key}: only used with provider = "local"'
        )
    for key, value in (("command", '["app", "{port}"]'), ("env", "{}"), ("cwd", '"/srv"')):
        text = STATIC.replace("start_timeout = 20", f"{key} = {value}")
        assert error(text) == (
            f'lb.toml: [replicas] {key}: not used with provider = "static" '
            "(fastlb starts nothing there)"
        )
    assert error("[replicas]\nport = 8000\n") == (
        'lb.toml: [replicas] port: only used with provider = "docker" or "swarm"'
    )
    assert error('[replicas]\nprovider = "docker"\nport = 0\n') == (
        'lb.toml: [replicas] port: expected an integer from 1 to 65535, got 0'
    )


def test_heartbeat_settings() -> None:
    health = parse(
        '[health]\npath = "/healthz?full=1"\nmethod = "HEAD"\nexpect = "200-299"\n'
        'host = "app.example.com:8443"\n'
    ).health
    assert (health.path, health.method, health.expect, health.host) == (
        "/healthz?full=1", "HEAD", (200, 299), "app.example.com:8443",
    )
    assert parse("[health]\nexpect = 204\n").health.expect == (204, 204)
    assert parse('[health]\nexpect = "204"\n').health.expect == (204, 204)
    assert parse('[health]\nhost = "[::1]:80"\n').health.host == "[::1]:80"
    d = HealthConfig()
    assert (d.path, d.method, d.expect, d.host) == ("/heartbeat", "GET", (200, 399), "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('path = "healthz"', 'path: expected a path starting with "/" (no spaces), such as "/healthz", got "healthz"'),
        ('path = "/a b"', 'path: expected a path starting with "/" (no spaces), such as "/healthz", got "/a b"'),
        ('method = "POST"', 'method: expected "GET" or "HEAD", got "POST"'),
        ('method = "get"', 'method: expected "GET" or "HEAD", got "get"'),
        ("expect = 600", 'expect: expected a status from 100 to 599 or a range such as "200-399", got 600'),
        ("expect = true", 'expect: expected a status from 100 to 599 or a range such as "200-399", got true'),
        ('expect = "2xx"', 'expect: expected a status from 100 to 599 or a range such as "200-399", got "2xx"'),
        ('expect = "399-200"', 'expect: expected a status from 100 to 599 or a range such as "200-399" (low before high), got "399-200"'),
        ('host = "a b"', 'host: expected a host such as "app.example.com" or "localhost:8000" ("" = the replica\'s address), got "a b"'),
        ('host = "app:99999"', 'host: expected a host such as "app.example.com" or "localhost:8000" ("" = the replica\'s address), got "app:99999"'),
    ],
)
def test_heartbeat_setting_errors(text: str, message: str) -> None:
    assert error(f"[health]\n{text}\n") == f"lb.toml: [health] {message}"


# ------------------------------------------------------------------ table = "ketama"
def test_static_addresses_are_the_ketama_labels_as_written() -> None:
    cfg = parse('[routing]\ntable = "ketama"\n' + STATIC)
    assert cfg.routing.table == "ketama"
    # As written, brackets and all: nginx hashes the `server` line's address text.
    assert cfg.routing.labels == (
        ("Server1", "10.0.0.1:8001"),
        ("Server2", "[::1]:8002"),
        ("db-node.3", "replica3.internal:80"),
    )


def test_other_providers_have_no_labels() -> None:
    # Their replicas are hashed by name (fastlb picks their ports).
    assert parse('[routing]\ntable = "ketama"\n').routing.labels == ()
    assert parse('[routing]\ntable = "ketama"\n[replicas]\nprovider = "docker"\n').routing.labels == ()


def test_ketama_refuses_two_static_entries_of_one_address() -> None:
    text = (
        '[routing]\ntable = "ketama"\n[replicas]\nprovider = "static"\n'
        '[[replicas.static]]\nname = "a"\naddress = "127.0.0.1:8001"\n'
        '[[replicas.static]]\nname = "b"\naddress = "127.0.0.1:8002"\n'
        '[[replicas.static]]\nname = "c"\naddress = "127.0.0.1:8001"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == (
        'lb.toml: [[replicas.static]] #3 address: expected unique addresses with [routing] '
        'table = "ketama" (it hashes the address, as nginx does), got "127.0.0.1:8001" again '
        "(already used by #1)"
    )
    # Other tables hash names: the same text is accepted there.
    assert parse(text.replace('"ketama"', '"maglev"')).replicas.count == 3


def _heavy_static(table: str, count: int) -> str:
    entries = "".join(
        f'[[replicas.static]]\nname = "s{i}"\naddress = "127.0.0.1:{8000 + i}"\nweight = 256\n'
        for i in range(count)
    )
    return f'[routing]\ntable = "{table}"\n[replicas]\nprovider = "static"\n' + entries


def test_ketama_refuses_more_weight_than_its_points_allow() -> None:
    with pytest.raises(ConfigError) as info:
        parse(_heavy_static("ketama", 17))
    assert str(info.value) == (
        'lb.toml: [routing] table: "ketama" takes at most 4096 units of weight in all (160 '
        "points each), got 4352 from [replicas]"
    )
    # 16 of them are 4096 units: accepted; so are the 17 with another table.
    assert parse(_heavy_static("ketama", 16)).replicas.count == 16
    assert parse(_heavy_static("maglev", 17)).replicas.count == 17
    local = '[routing]\ntable = "ketama"\n[replicas]\ncount = 3\nweights = { Server1 = 256 }\n'
    assert parse(local).routing.table == "ketama"


def test_workers_default_count_and_auto() -> None:
    import os

    assert parse("").proxy.workers == 1
    assert parse("[proxy]\nworkers = 3\n").proxy.workers == 3
    assert parse('[proxy]\nworkers = "auto"\n').proxy.workers == len(os.sched_getaffinity(0))
