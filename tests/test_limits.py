"""One home for each shared fact (fastlb.limits), checked where the facts are used.

The point of the module is that every entry point accepts and refuses the same replica names
and weights, in the same words: the config file, the admin socket (the command language and
then the real cluster), the classic POST /add, and the cluster's own guard. So each case below
goes through every one of those for real (a parsed file, a running fastlb with real replica
processes, a Cluster object) and the expected verdicts are written out by hand, not derived
from the predicate they test.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastlb.build import build_table, table_info
from fastlb.config import Config, ConfigError, RoutingConfig, parse
from fastlb.control.api import ControlError
from fastlb.control.cluster import Cluster
from fastlb.control.tables import TableBuilder
from fastlb.errors import TableError
from fastlb.limits import (
    CLASSIC_PROBES,
    DURATION_BUCKETS,
    MAGLEV_SIZE,
    REPLICA_NAME_RULE,
    TABLE_KINDS,
    WEIGHT_RULE,
    is_prime,
    is_replica_name,
    is_weight,
)
from fastlb.maglev import MaglevTable
from fastlb.proxy.upstream import Upstream
from fastlb.replicas import make_provider
from fastlb.replicas.base import Replica
from fastlb.ring import ClassicRing
from tests.conftest import Fastlb, free_port, http_get

StartFastlb = Callable[[str], Fastlb]

#: (name, valid?), the verdicts written out by hand: a container and host name, at most 63.
NAMES: list[tuple[str, bool]] = [
    ("a", True),
    ("0", True),
    ("9-", True),
    ("a.b_c-D", True),
    ("x" * 63, True),
    ("x" * 64, False),
    ("-lead", False),
    (".hidden", False),
    ("_lead", False),
    ("a/b", False),
    ("a:b", False),
    ("S\u00e9rver", False),  # not ASCII: no container or host name can carry it
    ("a b", False),
    ("", False),
    ("a\n", False),
]

#: (TOML value, what an operator types, the Python value, valid?).
WEIGHTS: list[tuple[str, str, object, bool]] = [
    ("1", "1", 1, True),
    ("256", "256", 256, True),
    ("0", "0", 0, False),
    ("257", "257", 257, False),
    ("-1", "-1", -1, False),
    ("1.5", "1.5", 1.5, False),
    ("true", "true", True, False),
]


def shown(name: str) -> str:
    """A name as every refusal quotes it: JSON, non-ASCII kept."""
    return json.dumps(name, ensure_ascii=False)


def config_error(text: str) -> str | None:
    try:
        parse(text)
    except ConfigError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------ the predicates alone
def test_the_predicates_give_the_verdicts_written_down() -> None:
    assert [name for name, _ in NAMES if is_replica_name(name)] == [n for n, ok in NAMES if ok]
    assert not is_replica_name(7) and not is_replica_name(None)
    assert [w for _, _, w, _ in WEIGHTS if is_weight(w)] == [w for _, _, w, ok in WEIGHTS if ok]


def test_is_prime_against_a_sieve() -> None:
    limit = 20_000
    sieve = bytearray([1]) * limit
    sieve[0] = sieve[1] = 0
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, limit, p)))
    assert [n for n in range(limit) if is_prime(n)] == [n for n in range(limit) if sieve[n]]
    assert is_prime(2**61 - 1) and is_prime(655373) and is_prime(65537)
    assert not any(is_prime(n) for n in (561, 41041, 3215031751, 2**61 + 1, 2**64))


# ------------------------------------------------------------------ the config file
@pytest.mark.parametrize(("name", "valid"), NAMES)
def test_the_config_takes_the_names_the_rule_takes(name: str, valid: bool) -> None:
    expected = None if valid else f"expected {REPLICA_NAME_RULE}, got {shown(name)}"
    for text, where in (
        (f"[replicas]\nnames = [{shown(name)}]\n", "[replicas] names[0]"),
        (
            f'[replicas]\nprovider = "static"\n[[replicas.static]]\nname = {shown(name)}\n'
            'address = "127.0.0.1:9"\n',
            "[[replicas.static]] #1 name",
        ),
    ):
        message = config_error(text)
        assert message == (None if expected is None else f"lb.toml: {where}: {expected}"), text
    if valid:
        assert parse(f"[replicas]\nnames = [{shown(name)}]\n").replicas.names == (name,)


@pytest.mark.parametrize(("toml", "typed", "value", "valid"), WEIGHTS)
def test_the_config_takes_the_weights_the_rule_takes(
    toml: str, typed: str, value: object, valid: bool
) -> None:
    expected = None if valid else f"expected {WEIGHT_RULE}, got {toml}"
    for text, where in (
        (f"[replicas]\nweights = {{ Server1 = {toml} }}\n", "[replicas] weights.Server1"),
        (
            '[replicas]\nprovider = "static"\n[[replicas.static]]\nname = "A"\n'
            f'address = "127.0.0.1:9"\nweight = {toml}\n',
            "[[replicas.static]] #1 weight",
        ),
    ):
        message = config_error(text)
        assert message == (None if expected is None else f"lb.toml: {where}: {expected}"), text
    if valid and value != 1:
        assert parse(f"[replicas]\nweights = {{ Server1 = {toml} }}\n").replicas.weights == (
            ("Server1", value),
        )


# ------------------------------------------------------------------ a running fastlb
class AdminClient:
    """The admin socket's line protocol: a command per line, an answer ends with a blank line."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.buffer = b""

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        while b"\n\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"the admin socket closed while answering {line!r}"
            self.buffer += chunk
        answer, _, self.buffer = self.buffer.partition(b"\n\n")
        return answer.decode()

    def close(self) -> None:
        self.sock.close()


def post(port: int, path: str, document: object) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(document))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def listed(port: int) -> list[str]:
    status, _, body = http_get(port, "/rep")
    assert status == 200
    names: list[str] = json.loads(body)["message"]["replicas"]
    return names


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # A unix socket path holds at most 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="fastlb-limits-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def running(start_fastlb: StartFastlb, socket_dir: Path) -> Iterator[tuple[Fastlb, AdminClient]]:
    sock = socket_dir / "admin.sock"
    lb = start_fastlb(
        '[proxy]\nlisten = "127.0.0.1:{port}"\n'
        f'[admin]\nsocket = "{sock}"\nmax_replicas = 12\ndrain_timeout = 1\n'
    )
    admin = AdminClient(str(sock))
    yield lb, admin
    admin.close()


def test_the_socket_and_post_add_take_and_refuse_the_names_the_config_does(
    running: tuple[Fastlb, AdminClient],
) -> None:
    lb, admin = running
    good = [name for name, valid in NAMES if valid]
    for name, valid in NAMES:
        if valid:
            continue
        refusal = f"expected {REPLICA_NAME_RULE}, got {shown(name)}"
        if name and not any(c.isspace() for c in name):  # one token on a command line
            assert admin.ask(f"add replica {name}") == f"error: {refusal}", name
        status, answer = post(lb.port, "/add", {"n": 1, "hostnames": [name]})
        assert (status, answer["message"]) == (400, f"<Error> {refusal}"), name
    assert listed(lb.port) == ["Server1", "Server2", "Server3"]  # the refusals changed nothing

    # Every name the rule takes is taken by both, as a real replica that joins.
    assert admin.ask("add replica " + " ".join(good)) == f"ok: added {', '.join(good)}"
    assert listed(lb.port) == ["Server1", "Server2", "Server3", *good]
    assert admin.ask("del replica " + " ".join(good)) == f"ok: removed {', '.join(good)}"
    status, answer = post(lb.port, "/add", {"n": len(good), "hostnames": good})
    assert status == 200, answer
    assert listed(lb.port) == ["Server1", "Server2", "Server3", *good]


def test_set_weight_takes_and_refuses_the_weights_the_config_does(
    running: tuple[Fastlb, AdminClient],
) -> None:
    lb, admin = running
    before = 1
    for _, typed, value, valid in WEIGHTS:
        answer = admin.ask(f"set weight Server1 {typed}")
        if valid:
            assert answer == f"ok: Server1 weight {before} -> {value}"
            before = int(typed)
        else:
            assert answer == (
                f'error: set weight: expected {WEIGHT_RULE}, got "{typed}"; '
                "usage: set weight NAME W"
            )
    row = next(line for line in admin.ask("show replicas").splitlines() if "Server1" in line)
    assert f" {before} " in f" {row} ", row  # the last weight accepted is the one in force

    # The default histogram buckets are the ones a running fastlb exports.
    status, _, body = http_get(lb.port, "/metrics")
    assert status == 200
    (duration,) = [
        f
        for f in text_string_to_metric_families(body.decode())
        if f.name == "fastlb_request_duration_seconds"
    ]
    bounds = sorted(
        {float(s.labels["le"]) for s in duration.samples if s.name.endswith("_bucket")}
    )
    assert bounds == [*DURATION_BUCKETS, float("inf")]


def test_the_clusters_own_guard_words_a_weight_as_the_file_does() -> None:
    # The command language refuses a bad weight before the cluster sees it; the cluster's
    # guard is for every other caller of the control contract. A real Cluster over a static
    # replica that nothing answers for (it stays "starting": nothing is routed or started).
    config = parse(
        '[replicas]\nprovider = "static"\n[[replicas.static]]\nname = "A"\n'
        f'address = "127.0.0.1:{free_port()}"\n'
    )

    def upstream(replica: Replica) -> Upstream:
        return Upstream(replica.name, replica.host, replica.port, weight=replica.weight)

    async def scenario() -> list[str | None]:
        cluster = Cluster(config, make_provider(config.replicas), TableBuilder(config.routing), upstream)
        await cluster.start()
        said: list[str | None] = []
        try:
            for _, _, value, _ in WEIGHTS:
                try:
                    cluster.set_weight("A", value)  # type: ignore[arg-type]
                except ControlError as exc:
                    said.append(str(exc))
                else:
                    said.append(None)
                    assert [r.weight for r in cluster.replicas()] == [value]
        finally:
            await cluster.close()
        return said

    said = asyncio.run(scenario())
    assert said == [
        None if valid else f"weight: expected {WEIGHT_RULE}, got {toml}"
        for toml, _, _, valid in WEIGHTS
    ]
    # The file words each refusal the same way, after its own position.
    for (toml, _, _, valid), message in zip(WEIGHTS, said, strict=True):
        in_file = config_error(f"[replicas]\nweights = {{ Server1 = {toml} }}\n")
        assert (in_file is None) == valid
        if message is not None and in_file is not None:
            assert in_file.endswith(message.removeprefix("weight: "))


# ------------------------------------------------------------------ tables
MEMBERS = [("a", 1), ("b", 2), ("c", 1)]


@pytest.mark.parametrize("kind", TABLE_KINDS)
def test_every_table_kind_the_file_takes_is_built(kind: str) -> None:
    table = build_table(parse(f'[routing]\ntable = "{kind}"\n').routing, MEMBERS)
    assert table_info(table)[0] == kind
    assert table.names == ("a", "b", "c")


@pytest.mark.parametrize("probe", CLASSIC_PROBES)
def test_every_classic_probe_the_file_takes_is_built(probe: str) -> None:
    routing = parse(f'[routing]\ntable = "classic"\nclassic_probe = "{probe}"\n').routing
    table = build_table(routing, MEMBERS)
    assert isinstance(table, ClassicRing) and table.probe == probe


def test_an_unknown_kind_is_refused_by_the_file_and_the_factory_alike() -> None:
    message = config_error('[routing]\ntable = "rendezvous"\n')
    assert message is not None and all(f'"{kind}"' in message for kind in TABLE_KINDS)
    with pytest.raises(TableError, match=", ".join(TABLE_KINDS)):
        build_table(RoutingConfig(table="rendezvous"), MEMBERS)


def test_the_default_routing_is_a_maglev_table_of_the_default_size() -> None:
    table = build_table(Config().routing, MEMBERS)
    assert isinstance(table, MaglevTable) and table.size == MAGLEV_SIZE
    assert is_prime(MAGLEV_SIZE)
