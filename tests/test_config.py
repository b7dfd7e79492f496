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
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlb import config
from fastlb.config import (
    Config,
    ConfigError,
    ProxyConfig,
    ReplicasConfig,
    ReplicaSpec,
    RoutingConfig,
    default,
    load,
    parse,
)

CONF = Path(__file__).resolve().parent.parent / "conf" / "lb.toml"


def error(text: str, source: str = "lb.toml") -> str:
    """The message `parse` fails with (the test fails if it succeeds)."""
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------------


def test_empty_file_is_the_default() -> None:
    assert parse("") == default()


def test_empty_tables_are_the_default() -> None:
    assert parse("[proxy]\n[routing]\n[replicas]\n") == default()


def test_default_matches_the_dataclass_defaults() -> None:
    cfg = default()
    assert cfg.proxy == ProxyConfig()
    assert cfg.routing == RoutingConfig()
    assert cfg.replicas == ReplicasConfig()
    assert cfg.source == "<default>"
    assert cfg.replicas.count == len(cfg.replicas.names)


def test_shipped_conf_is_exactly_the_default() -> None:
    cfg = load(str(CONF))
    assert cfg == default()
    for part in ("proxy", "routing", "replicas"):
        assert getattr(cfg, part) == getattr(default(), part)
    assert cfg.source == str(CONF)


def test_shipped_conf_sets_every_key_but_the_derived_ones() -> None:
    """conf/lb.toml documents every key. `names` (derived from count) and the static entries are
    there commented out, because setting them would change what the defaults mean."""
    text = CONF.read_text()
    document = tomllib.loads(text)
    derived = {"names", "static"}
    assert set(document) == set(config._TABLES)
    for table, keys in config._TABLES.items():
        assert set(document[table]) == set(keys) - derived, table
    assert "\n# names = [" in text
    assert "\n# [[replicas.static]]\n# name = " in text


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

        [routing]
        table = "classic"
        key = "header:X-User"
        maglev_size = 101
        classic_probe = "quadratic"
        classic_hash = "xxhash"

        [replicas]
        provider = "local"
        count = 2
        names = ["a", "b"]
        start_timeout = 3
        latency_ms = 5
        jitter_ms = 1.5
        weights = { b = 3 }
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
        ),
        routing=RoutingConfig(
            table="classic",
            key="header:X-User",
            maglev_size=101,
            classic_probe="quadratic",
            classic_hash="xxhash",
        ),
        replicas=ReplicasConfig(
            provider="local",
            count=2,
            names=("a", "b"),
            weights=(("b", 3),),
            start_timeout=3.0,
            latency_ms=5.0,
            jitter_ms=1.5,
        ),
    )
    defaults = default()
    for part in ("proxy", "routing", "replicas"):
        for f in fields(getattr(cfg, part)):
            if f.name in ("provider", "static"):  # local-only here; static is tested below
                continue
            assert getattr(getattr(cfg, part), f.name) != getattr(getattr(defaults, part), f.name)


def test_numbers_come_out_as_floats_and_ints() -> None:
    proxy = parse("[proxy]\nconnect_timeout = 3\n").proxy
    assert isinstance(proxy.connect_timeout, float)
    assert isinstance(proxy.max_header_bytes, int)


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
    ("routing", "table", '"ring"', '"maglev" or "classic"'),
    ("routing", "table", '"Maglev"', '"maglev" or "classic"'),
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
    ("routing", "classic_probe", '"cubic"', '"linear" or "quadratic"'),
    ("routing", "classic_hash", '"md5"', '"spec", "xxhash" or "fnv1a"'),
    ("routing", "classic_hash", "0", '"spec", "xxhash" or "fnv1a"'),
    ("replicas", "provider", '"docker"', '"local" or "static"'),
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
    ("replicas", "weights.Server1", "{ Server1 = 0 }", "a positive integer"),
    ("replicas", "weights.Server1", "{ Server1 = 1.5 }", "a positive integer"),
    ("replicas", "weights.Server1", "{ Server1 = true }", "a positive integer"),
    ("replicas", "weights.Server2", "{ Server1 = 2, Server2 = -1 }", "a positive integer"),
]


@pytest.mark.parametrize(("table", "key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_file_table_and_key(
    table: str, key: str, value: str, expected: str
) -> None:
    bare_key = key.split("[")[0].split(".")[0]
    message = error(f"[{table}]\n{bare_key} = {value}\n")
    assert message.startswith(f"lb.toml: [{table}] {key}: expected {expected}"), message
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
            'lb.toml: [routing] table: expected "maglev" or "classic", got "maglve" '
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
            "lb.toml: [replicas] weights.Server1: expected a positive integer, got 0",
        ),
        (
            '[replicas]\nweights = { "my server" = 0 }\n',
            'lb.toml: [replicas] weights."my server": expected a positive integer, got 0',
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
            "lb.toml: [tls]: unknown table (tables are proxy, routing, replicas)",
        ),
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
        "(known keys: table, key, maglev_size, classic_probe, classic_hash)"
    )


def test_a_sub_table_of_a_table_is_an_unknown_key() -> None:
    assert error("[proxy.tls]\ncert = 1\n").startswith("lb.toml: [proxy] tls: unknown key")


def test_unknown_key_is_reported_before_the_values_it_affects() -> None:
    """A typo in high_water leaves the default in place; the message must be about the typo,
    not about low_water then being too large."""
    message = error("[proxy]\nhigh_wter = 1048576\nlow_water = 524288\n")
    assert message == "lb.toml: [proxy] high_wter: unknown key (did you mean high_water?)"


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
            ReplicaSpec("Server1", "10.0.0.1", 8001, 1),
            ReplicaSpec("Server2", "::1", 8002, 3),
            ReplicaSpec("db-node.3", "replica3.internal", 80, 1),
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
            "lb.toml: [[replicas.static]] #2 weight: expected a positive integer, got 0",
        ),
        (
            'name = "b"\naddress = "h:2"\nweight = true',
            "lb.toml: [[replicas.static]] #2 weight: expected a positive integer, got true",
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
    table, key = place
    try:
        cfg = parse(f"[{table}]\n{key} = {toml_literal(value)}\n")
    except ConfigError as exc:
        assert str(exc).startswith(f"lb.toml: [{table}] {key}")
    else:
        assert isinstance(cfg, Config)
