"""The outbox: writes queued during a loop round and made when it turns, in order."""

from __future__ import annotations

import asyncio

import uvloop

from fastlb.proxy.outbox import MAX_QUEUED, Outbox


class Sink:
    """A transport's write, recording what reached it and when."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.log = log

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))


def run_round(steps: list[str]) -> list[list[tuple[str, bytes]]]:
    """Run the outbox on a real loop; return what was written after each step."""

    async def main() -> list[list[tuple[str, bytes]]]:
        log: list[tuple[str, bytes]] = []
        a, b = Sink("a", log), Sink("b", log)
        out = Outbox(asyncio.get_running_loop())
        seen = []
        for step in steps:
            if step == "turn":
                await asyncio.sleep(0)
            elif step == "flush":
                out.flush()
            elif step == "big":
                out.send(a.write, b"x" * (MAX_QUEUED + 1))
            else:
                sink = a if step[0] == "a" else b
                out.send(sink.write, step.encode())
            seen.append(list(log))
        return seen

    return uvloop.run(main())


def test_writes_wait_for_the_loop_to_turn_then_leave_in_order() -> None:
    seen = run_round(["a1", "b1", "a2", "turn"])
    assert seen[2] == []  # nothing written while the round's events are handled
    assert seen[3] == [("a", b"a1"), ("b", b"b1"), ("a", b"a2")]


def test_each_round_is_flushed_on_its_own() -> None:
    seen = run_round(["a1", "turn", "b1", "turn", "turn"])
    assert seen[1] == [("a", b"a1")]
    assert seen[2] == [("a", b"a1")]
    assert seen[4] == [("a", b"a1"), ("b", b"b1")]


def test_flush_writes_now_and_the_scheduled_turn_adds_nothing() -> None:
    # As before a connection closes: what it queued must leave first.
    seen = run_round(["a1", "b1", "flush", "turn"])
    assert seen[2] == [("a", b"a1"), ("b", b"b1")]
    assert seen[3] == seen[2]


def test_a_large_write_goes_at_once_after_what_was_queued_before_it() -> None:
    # Flow control must see a bulk transfer's bytes at once; order still holds.
    seen = run_round(["b1", "big", "a2", "turn"])
    assert [name for name, _ in seen[1]] == ["b", "a"]
    assert seen[1][1][1] == b"x" * (MAX_QUEUED + 1)
    assert seen[3][-1] == ("a", b"a2")
