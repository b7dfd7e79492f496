"""The pure parts of running any app as a replica: output lines, the heartbeat check and its
verdict, and what the Docker provider asks the engine for (no engine needed)."""

from __future__ import annotations

import asyncio

import pytest

from fastlb.config import HealthConfig, ReplicasConfig, parse
from fastlb.replicas.base import DEFAULT_CHECK, HeartbeatCheck, judge, probe
from fastlb.replicas.docker import (
    CLUSTER_LABEL,
    REPLICA_LABEL,
    command_of,
    container_name,
    create_options,
)
from fastlb.replicas.local import LocalProvider, how_it_ended, uses_placeholder
from fastlb.replicas.output import MAX_LINE, TAIL_LINES, Lines, last_words

# --- output lines -------------------------------------------------------------------------------


def test_lines_come_out_whole_whatever_the_reads() -> None:
    lines = Lines()
    assert lines.feed(b"Traceback (most") == []
    assert lines.feed(b" recent call last):\r\n  File \"app.py\"\nValueEr") == [
        "Traceback (most recent call last):",
        '  File "app.py"',
    ]
    assert lines.feed(b"ror: bad\n") == ["ValueError: bad"]
    assert lines.feed(b"no newline at the end") == []
    assert lines.flush() == ["no newline at the end"]
    assert lines.flush() == []


def test_only_the_last_lines_are_kept() -> None:
    lines = Lines()
    for i in range(100):
        lines.feed(f"line {i}\n".encode())
    assert list(lines.tail) == [f"line {i}" for i in range(100 - TAIL_LINES, 100)]


def test_a_line_without_end_is_cut_not_grown() -> None:
    lines = Lines()
    out = lines.feed(b"x" * (MAX_LINE * 2 + 5))
    assert out == ["x" * MAX_LINE, "x" * MAX_LINE]
    assert lines.flush() == ["x" * 5]


def test_undecodable_output_is_replaced_not_fatal() -> None:
    assert Lines().feed(b"caf\xe9\n") == ["caf\ufffd"]


def test_last_words() -> None:
    assert last_words([]) == ""
    assert last_words(["a", "b"]) == "; its last output:\n  a\n  b"


def test_how_it_ended() -> None:
    assert how_it_ended(0) == "exit code 0"
    assert how_it_ended(3) == "exit code 3"
    assert how_it_ended(-9) == "killed by SIGKILL"
    assert how_it_ended(None) == "still running"


# --- the heartbeat ------------------------------------------------------------------------------


def head(status: bytes, *fields: bytes) -> bytes:
    return b"\r\n".join((status, *fields)) + b"\r\n\r\n"


def test_the_default_check_is_the_demo_replicas() -> None:
    assert HeartbeatCheck.of(HealthConfig()) == DEFAULT_CHECK
    assert DEFAULT_CHECK.request("127.0.0.1", 8000) == (
        b"GET /heartbeat HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: fastlb-heartbeat\r\n"
        b"Connection: close\r\n\r\n"
    )
    assert DEFAULT_CHECK.request("::1", 80).startswith(b"GET /heartbeat HTTP/1.1\r\nHost: [::1]:80\r\n")


def test_a_configured_check_asks_what_it_says() -> None:
    health = parse('[health]\npath = "/healthz?deep=1"\nmethod = "HEAD"\nhost = "app.local"\n'
                   "expect = 204\n").health
    check = HeartbeatCheck.of(health)
    assert check.request("127.0.0.1", 1).split(b"\r\n")[:2] == [
        b"HEAD /healthz?deep=1 HTTP/1.1",
        b"Host: app.local",
    ]
    assert (check.describe(), check.wanted()) == ("HEAD /healthz?deep=1", "204")


@pytest.mark.parametrize(
    ("status", "expect", "ok"),
    [
        (b"HTTP/1.1 200 OK", (200, 399), True),
        (b"HTTP/1.1 204 No Content", (200, 399), True),
        (b"HTTP/1.0 302 Found", (200, 399), True),
        (b"HTTP/1.1 399 X", (200, 399), True),
        (b"HTTP/1.1 400 Bad Request", (200, 399), False),
        (b"HTTP/1.1 503 Service Unavailable", (200, 399), False),
        (b"HTTP/1.1 199 X", (200, 399), False),
        (b"HTTP/1.1 204 No Content", (200, 200), False),
        (b"HTTP/1.1 503 Down for maintenance", (503, 503), True),
        (b"HTTP/1.1 200 ", (200, 200), True),  # the reason phrase may be empty
        (b"HTTP/1.1 2000 OK", (200, 399), False),
        (b"HTTP/1.1 20 OK", (200, 399), False),
        (b"HTTP/2 200 OK", (200, 399), False),
        (b"ICY 200 OK", (200, 399), False),
    ],
)
def test_the_status_is_judged_against_expect(
    status: bytes, expect: tuple[int, int], ok: bool
) -> None:
    beat = judge(head(status), None, expect)
    assert beat.ok is ok, beat
    if not ok:
        wanted = str(expect[0]) if expect[0] == expect[1] else f"{expect[0]}-{expect[1]}"
        assert beat.reason.endswith(f", not {wanted}"), beat.reason


def test_identity_is_checked_only_when_the_answer_names_one() -> None:
    """A third-party app sends no X-Served-By: accepted on its status. One that names
    another replica is that replica, not this one: a failure, as before."""
    assert judge(head(b"HTTP/1.1 200 OK"), "App1").ok
    assert judge(head(b"HTTP/1.1 200 OK", b"x-served-by: App1"), "App1").ok
    other = judge(head(b"HTTP/1.1 200 OK", b"X-Served-By: App2"), "App1")
    assert not other.ok and other.served_by == "App2"
    assert other.reason == "answered as 'App2', not 'App1'"


def test_probe_sends_the_configured_request_to_a_real_server() -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[bool, bool]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            head_check = HeartbeatCheck("HEAD", "/healthz", "app.local", (204, 204))
            good = await probe("127.0.0.1", port, 2.0, "App1", head_check)
            strict = HeartbeatCheck("GET", "/healthz", "", (200, 200))
            bad = await probe("127.0.0.1", port, 2.0, "App1", strict)
            return good.ok, bad.ok
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == (True, False)
    assert seen[0].startswith(b"HEAD /healthz HTTP/1.1\r\nHost: app.local\r\n")
    assert seen[1].startswith(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:")


# --- the local command --------------------------------------------------------------------------


def test_the_command_template_is_filled_in() -> None:
    config = parse(
        '[replicas]\ncommand = ["gunicorn", "--bind", "fd://{fd}", "-n", "{name}", "app:app"]\n'
        'env = { PORT = "{port}", LITERAL = "{{port}}" }\n'
    ).replicas
    provider = LocalProvider(config)
    assert provider.command("App1", fd=7, port=8001) == [
        "gunicorn", "--bind", "fd://7", "-n", "App1", "app:app",
    ]
    env = provider._environment("App1", 7, 8001)
    assert (env["PORT"], env["LITERAL"], env["PYTHONUNBUFFERED"]) == ("8001", "{port}", "1")
    assert uses_placeholder(config, "fd") and uses_placeholder(config, "port")
    assert not uses_placeholder(config, "host")
    literal = ReplicasConfig(command=("app", "--x={{fd}}", "{port}"))
    assert not uses_placeholder(literal, "fd")


def test_the_demo_replica_stays_the_default() -> None:
    provider = LocalProvider(ReplicasConfig(), python="/usr/bin/python3")
    assert provider.command("Server1", fd=5) == [
        "/usr/bin/python3", "-m", "replica", "--name", "Server1", "--host", "127.0.0.1",
        "--fd", "5",
    ]


# --- docker: names and the engine's arguments ---------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "name", "container"),
    [
        ("fastlb", "Server1", "fastlb-Server1"),
        ("blue.prod", "Server1", "fastlb-blue.prod-Server1"),
        ("fastlb-compose", "Server1", "fastlb-compose-Server1"),
        ("t1234", "t1234-1", "t1234-1"),  # already carries its cluster
        ("blue", "fastlb-blue-Server1", "fastlb-blue-Server1"),
    ],
)
def test_container_names_carry_the_cluster(cluster: str, name: str, container: str) -> None:
    assert container_name(cluster, name) == container


def test_two_clusters_never_share_a_container_name() -> None:
    names = {container_name(cluster, "Server1") for cluster in ("fastlb", "blue", "green")}
    assert len(names) == 3


def test_docker_options_for_the_demo_replica() -> None:
    options = create_options(ReplicasConfig(provider="docker", cluster="blue"), "Server1")
    assert options == {
        "name": "fastlb-blue-Server1",
        "command": [
            "python3", "-m", "replica", "--name", "Server1", "--host", "0.0.0.0", "--port",
            "5000",
        ],
        "labels": {CLUSTER_LABEL: "blue", REPLICA_LABEL: "Server1"},
        "environment": {"REPLICA_NAME": "Server1"},
        "detach": True,
        "ports": {"5000/tcp": ("127.0.0.1", None)},
    }


def test_docker_options_for_an_image_of_ones_own() -> None:
    config = parse(
        '[replicas]\nprovider = "docker"\nimage = "team/app:1.2"\nport = 8000\n'
        'network = "net1"\ncommand = ["gunicorn", "--bind", "{host}:{port}", "app:app"]\n'
        'env = { APP_NAME = "{name}", WORKERS = "2" }\n'
    ).replicas
    options = create_options(config, "App1")
    assert options["name"] == "fastlb-App1"
    assert options["command"] == ["gunicorn", "--bind", "0.0.0.0:8000", "app:app"]
    assert options["environment"] == {"REPLICA_NAME": "App1", "APP_NAME": "App1", "WORKERS": "2"}
    assert options["network"] == "net1" and "ports" not in options
    assert command_of(config, "App1") == options["command"]
    published = create_options(parse('[replicas]\nprovider = "docker"\nport = 8000\n').replicas, "a")
    assert published["ports"] == {"8000/tcp": ("127.0.0.1", None)}
    assert published["command"][-2:] == ["--port", "8000"]
