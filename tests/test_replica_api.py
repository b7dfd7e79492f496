"""The replica's dataset, routes and protocol without sockets: fast, and property-tested.

The socket-level behaviour is in test_replica.py; here are the things best checked over many
inputs (every date, arbitrary queries, arbitrary splits of a byte stream) and the dataset's
determinism, which the shipped files depend on.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replica import data
from replica.api import CLOSE, KEEP_ALIVE, KEEP_ALIVE_10, Api, check_name
from replica.server import Replica, ReplicaProtocol

REPO = Path(__file__).resolve().parents[1]
DATASET = data.load()
API = Api("Unit", DATASET, "replica.test:5000")

neo_dates = st.dates(min_value=DATASET.neo_first, max_value=DATASET.neo_last)
apod_dates = st.dates(min_value=DATASET.apod_first, max_value=DATASET.apod_last)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


# -- the dataset ---------------------------------------------------------------------------------


def test_regenerating_gives_the_shipped_bytes() -> None:
    generated = data.generate()
    assert set(generated) == {data.NEO_FILE, data.APOD_FILE}
    for filename, blob in generated.items():
        assert (data.DATA_DIR / filename).read_bytes() == blob, f"{filename} is stale"
    assert generated == data.generate()


def test_shipped_dataset_is_small() -> None:
    total = sum((data.DATA_DIR / name).stat().st_size for name in (data.NEO_FILE, data.APOD_FILE))
    assert total < 2 * 1024 * 1024


def test_generator_cli_writes_and_checks(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "replica.data", *args, "--dir", str(tmp_path)],
            cwd=REPO, capture_output=True, timeout=30, check=False,
        )

    assert run("--check").returncode == 1  # nothing there yet
    assert run("--write").returncode == 0
    for filename in (data.NEO_FILE, data.APOD_FILE):
        assert (tmp_path / filename).read_bytes() == (data.DATA_DIR / filename).read_bytes()
    assert run("--check").returncode == 0
    (tmp_path / data.APOD_FILE).write_bytes(b"stale")
    assert run("--check").returncode == 1


def test_loading_is_fast_in_a_fresh_process() -> None:
    code = (
        "import time; t = time.perf_counter(); from replica.data import load; load(); "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          timeout=30, check=True)
    assert float(done.stdout) < 0.2


def test_missing_dataset_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(data.DatasetError, match=re.escape("python -m replica.data --write")):
        data.load(tmp_path)


def test_pool_ids_and_names_are_unique() -> None:
    document = json.loads(gzip.decompress(data.generate()[data.NEO_FILE]))
    objects = document["objects"]
    assert len(objects) == data.POOL_SIZE
    assert len({o[0] for o in objects}) == len({o[1] for o in objects}) == len(objects)


@settings(max_examples=60, deadline=None)
@given(neo_dates)
def test_each_day_has_3_to_12_approaches_derived_from_the_date_alone(day: date) -> None:
    objects = DATASET.neo_day(day)
    assert 3 <= len(objects) <= 12
    assert all(o["close_approach_data"][0]["close_approach_date"] == day.isoformat()
               for o in objects)
    fresh = data.load()  # a new process's view: no shared cache, same answer
    assert json.dumps(fresh.neo_day(day)) == json.dumps(objects)


@settings(max_examples=60, deadline=None)
@given(apod_dates)
def test_apod_entry_is_well_formed_and_deterministic(day: date) -> None:
    entry = DATASET.apod(day)
    assert entry["date"] == day.isoformat()
    assert "{" not in entry["title"] + entry["explanation"]  # every placeholder was filled
    assert ("hdurl" in entry) == (entry["media_type"] == "image")
    assert list(entry) == sorted(entry)  # NASA's key order
    assert data.load().apod(day) == entry


# -- routes --------------------------------------------------------------------------------------


def respond(target: str | bytes, method: bytes = b"GET", host: bytes | None = None,
            mode: int = KEEP_ALIVE) -> tuple[int, dict[str, str], bytes]:
    raw = target.encode() if isinstance(target, str) else target
    return split_response(API.respond(method, raw, host, mode))


def body_json(target: str) -> Any:
    status, _, body = respond(target)
    assert status == 200
    return json.loads(body)


@pytest.mark.parametrize("mode", [KEEP_ALIVE, CLOSE, KEEP_ALIVE_10])
@pytest.mark.parametrize("path", ["/home", "/heartbeat"])
def test_prebuilt_answers_equal_the_general_path(path: str, mode: int) -> None:
    fast = API.respond(b"GET", path.encode(), None, mode)
    assert fast is API.static_get[path.encode()][mode]
    assert API.respond(b"GET", f"{path}?via=slow".encode(), None, mode) == fast
    head = API.respond(b"HEAD", path.encode(), None, mode)
    assert API.respond(b"HEAD", f"{path}?x".encode(), None, mode) == head
    assert fast.startswith(head) and len(fast) - len(head) == len(split_response(fast)[2])


def test_connection_header_per_mode() -> None:
    assert "connection" not in respond("/home", mode=KEEP_ALIVE)[1]
    assert respond("/home", mode=CLOSE)[1]["connection"] == "close"
    assert respond("/home", mode=KEEP_ALIVE_10)[1]["connection"] == "keep-alive"


def test_links_follow_the_host_header_when_it_is_sane() -> None:
    _, _, body = respond("/neo?start_date=2020-01-01&end_date=2020-01-01", host=b"lb:8080")
    assert json.loads(body)["links"]["self"] == (
        "http://lb:8080/neo?start_date=2020-01-01&end_date=2020-01-01"
    )
    _, _, body = respond("/neo?start_date=2020-01-01&end_date=2020-01-01", host=b"evil/\"x")
    assert json.loads(body)["links"]["self"].startswith("http://replica.test:5000/neo?")


def test_absolute_form_target() -> None:
    assert respond("http://lb:5000/home?x=1")[2] == respond("/home")[2]
    assert respond("http://lb:5000/other")[0] == 404


def test_feed_of_a_single_day_steps_one_day() -> None:
    links = body_json("/neo?start_date=2020-03-01&end_date=2020-03-01")["links"]
    assert links["next"].endswith("start_date=2020-03-02&end_date=2020-03-02")
    assert links["previous"].endswith("start_date=2020-02-29&end_date=2020-02-29")


def test_feed_of_seven_days_steps_a_week() -> None:
    links = body_json("/neo?start_date=2020-03-01")["links"]
    assert links["next"].endswith("start_date=2020-03-08&end_date=2020-03-15")


def test_repeated_parameters_take_the_first() -> None:
    feed = body_json("/neo?start_date=2020-03-01&start_date=garbage&end_date=2020-03-02")
    assert list(feed["near_earth_objects"]) == ["2020-03-01", "2020-03-02"]


def test_neo_range_edges() -> None:
    last = DATASET.neo_last
    assert list(body_json(f"/neo?start_date={last}")["near_earth_objects"]) == [last.isoformat()]
    before = DATASET.neo_first - timedelta(days=1)
    status, _, body = respond(f"/neo?start_date={before}")
    assert status == 400 and "between" in json.loads(body)["error_message"]


def test_neo_percent_encoded_dates() -> None:
    assert "2020-01-01" in body_json("/neo?start_date=2020%2D01%2D01&end_date=2020-01-01")[
        "near_earth_objects"
    ]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"/neo", b"/apod"]), st.binary(max_size=80))
def test_any_query_is_answered_200_or_400_with_json(path: bytes, query: bytes) -> None:
    status, headers, body = respond(path + b"?" + query)
    assert status in (200, 400)
    assert headers["content-length"] == str(len(body))
    document = json.loads(body)
    if status == 400:
        assert document["code"] == 400


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_any_target_gets_an_answer(target: bytes) -> None:
    status, headers, _ = respond(target)
    assert status in (200, 400, 404)
    assert headers["x-served-by"] == "Unit"


@pytest.mark.parametrize(
    ("name", "ok"),
    [("Server1", True), ("Server 1", True), ("", False), (" lead", False), ("a\r\nb", False),
     ("é", False), ("x" * 65, False)],
)
def test_check_name(name: str, ok: bool) -> None:
    assert (check_name(name) is None) == ok


# -- the protocol, fed by hand ---------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.sent += data

    def writelines(self, list_of_data: Any) -> None:
        for chunk in list_of_data:
            self.write(chunk)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    loop = asyncio.new_event_loop()
    try:
        yield Replica(API, loop)
    finally:
        loop.close()


def feed(replica: Replica, chunks: list[bytes]) -> FakeTransport:
    transport = FakeTransport()
    protocol = ReplicaProtocol(replica)
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
    return transport


STREAM = (
    b"GET /home HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /home HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    b"GET /neo?start_date=2020-01-01&end_date=2020-01-02 HTTP/1.1\r\nHost: lb\r\n\r\n"
    b"HEAD /apod HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy"
    b"GET /heartbeat HTTP/1.1\r\nConnection: close\r\n\r\n"
    b"GET /home HTTP/1.1\r\n\r\n"  # after the close: must not be answered
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_a_stream_split_anywhere_gets_the_same_bytes(replica: Replica, cuts: list[int]) -> None:
    whole = feed(replica, [STREAM])
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = feed(replica, [STREAM[a:b] for a, b in itertools.pairwise(bounds)])
    assert pieces.sent == whole.sent
    assert whole.closed and pieces.closed
    assert whole.sent.count(b"HTTP/1.1 ") == 5
    assert whole.sent.endswith(b"Connection: close\r\n\r\n")


def test_closing_stops_reading(replica: Replica) -> None:
    transport = feed(replica, [b"GET /home HTTP/1.0\r\n\r\n"])
    assert transport.closed and not transport.reading


def test_upgrade_is_answered_with_close(replica: Replica) -> None:
    transport = feed(replica, [b"GET /home HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                               b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
    status, headers, _ = split_response(bytes(transport.sent))
    assert (status, headers["connection"]) == (200, "close")
    assert transport.closed


def test_huge_head_is_refused(replica: Replica) -> None:
    chunk = b"X-Filler: " + b"a" * 65_536 + b"\r\n"
    transport = feed(replica, [b"GET /home HTTP/1.1\r\n", *[chunk] * 20])
    assert split_response(bytes(transport.sent))[0] == 431
    assert transport.closed


def test_a_handler_bug_is_a_500_not_a_dropped_connection(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> bytes:
        raise RuntimeError("bug")

    monkeypatch.setattr(Api, "respond", broken)
    transport = feed(replica, [b"GET /apod HTTP/1.1\r\n\r\n"])
    assert split_response(bytes(transport.sent))[0] == 500
    assert transport.closed


def test_delays_are_within_latency_and_jitter() -> None:
    loop = asyncio.new_event_loop()
    try:
        replica = Replica(API, loop, latency=0.05, jitter=0.02)
        delays = [replica.delay() for _ in range(2000)]
        assert 0.03 <= min(delays) < 0.035 and 0.065 < max(delays) <= 0.07
        assert Replica(API, loop, latency=0.0, jitter=0.05).delay() >= 0.0
        assert not Replica(API, loop).delayed
        started = time.perf_counter()
        assert Replica(API, loop).delay() == 0.0
        assert time.perf_counter() - started < 0.01
    finally:
        loop.close()
