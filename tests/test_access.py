"""The access log's formats (fastlb/observe/access.py), on entries as the data path records
them; tests/test_proxy.py reads the lines a real fastlb writes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastlb.http.head import RequestHead
from fastlb.observe.access import AccessLog, Entry

RAW = (
    b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nuser-agent:  bot \"1\"\r\n"
    b"REFERER: http://r/\xe9\x1b[31m\r\n\r\n"
)
HEAD = RequestHead(RAW, b"GET", b"/a?b=1", True, True, 0, False, None)


def written(tmp_path: Path, fmt: str, entries: list[Entry]) -> list[str]:
    path = tmp_path / f"{fmt}.log"

    async def run() -> None:
        access = AccessLog(str(path), fmt)
        for entry in entries:
            access.add(entry)
        access.close()

    asyncio.run(run())
    return path.read_text().splitlines()


def test_combined_escapes_what_could_forge_a_line(tmp_path: Path) -> None:
    now = time.monotonic()
    ok: Entry = (now, b"10.0.0.1", HEAD, b"S1", 200, 42, 0.0012345, b"-")
    refused: Entry = (now, b"10.0.0.2", None, b"-", 400, -1, 0.0, b"refused")
    first, second = written(tmp_path, "combined", [ok, refused])
    stamp = time.strftime("%d/%b/%Y:%H:%M", time.localtime())
    assert first.startswith(f"10.0.0.1 - - [{stamp}"), first
    # A quote, a high byte, an escape sequence: \xHH (nginx's), so no field can end early.
    assert first.endswith(
        '"GET /a?b=1 HTTP/1.1" 200 42 "http://r/\\xE9\\x1B[31m" "bot \\x221\\x22" S1 1.234 -'
    ), first
    assert second.endswith('] "-" 400 - "-" "-" - 0.000 refused'), second


def test_json_has_nulls_for_what_is_not_known(tmp_path: Path) -> None:
    now = time.monotonic()
    entries: list[Entry] = [
        (now, b"10.0.0.1", HEAD, b"S1", 200, 42, 0.0012345, b"-"),
        (now, b"10.0.0.2", None, b"-", 0, -1, 0.0, b"client-aborted"),
    ]
    first, second = (json.loads(line) for line in written(tmp_path, "json", entries))
    assert first["time"].endswith("Z") and abs(
        time.mktime(time.strptime(first["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
            time.gmtime()
        )
    ) < 5
    assert {k: v for k, v in first.items() if k != "time"} == {
        "client": "10.0.0.1", "method": "GET", "target": "/a?b=1", "status": 200, "bytes": 42,
        "duration": 1.234, "replica": "S1", "code": None,
    }
    assert {k: v for k, v in second.items() if k != "time"} == {
        "client": "10.0.0.2", "method": None, "target": None, "status": None, "bytes": None,
        "duration": 0.0, "replica": None, "code": "client-aborted",
    }


def test_reopen_keeps_the_old_file_when_the_new_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "a.log"

    async def run() -> None:
        access = AccessLog(str(path))
        access.reopen(str(tmp_path / "missing-dir" / "b.log"))
        access.add((time.monotonic(), b"1.2.3.4", None, b"-", 400, -1, 0.0, b"refused"))
        access.close()

    asyncio.run(run())
    assert path.read_text().startswith("1.2.3.4 - - [")
