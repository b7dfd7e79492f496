"""The admin command language: every command parsed, every bad form refused with a message an
operator can act on, and every answer, against an in-memory cluster (FakeCluster, also used by
the socket and ctl tests: it is this pure layer's collaborator, the real cluster is tested on
its own)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest

from fastlb.build import table_info
from fastlb.control.api import ControlError, EventInfo, ReplicaInfo
from fastlb.control.commands import (
    AddReplicas,
    Command,
    CommandError,
    DelReplicas,
    Disable,
    Drain,
    Enable,
    Help,
    Quit,
    Reload,
    SetWeight,
    ShowReplica,
    ShowReplicas,
    ShowTable,
    answer,
    changes_state,
    execute,
    help_text,
    parse_command,
)
from fastlb.limits import MAX_WEIGHT, REPLICA_NAME_RULE, is_replica_name
from fastlb.maglev import MaglevTable


@dataclass
class _Replica:
    address: str
    state: str = "up"
    weight: int = 1
    in_flight: int = 0
    requests: int = 0
    restarts: int = 0


class FakeCluster:
    """A ClusterControl in memory that keeps the contract: a refused call changes nothing.

    `gate`, when set, holds every `add` until it is set, so tests can catch a command mid-way;
    `broken` makes `reload` raise a non-ControlError, as a bug in the real cluster would.
    """

    def __init__(self, names: tuple[str, ...] = ("Server1", "Server2", "Server3")) -> None:
        self.members: dict[str, _Replica] = {}
        self.next_port = 40001
        for name in names:
            self._start(name)
        self.max_replicas = 5
        self.gate: asyncio.Event | None = None
        self.broken = False
        self.reloads = 0
        self.events: list[tuple[str, EventInfo]] = []

    def _start(self, name: str) -> None:
        self.members[name] = _Replica(f"127.0.0.1:{self.next_port}")
        self.next_port += 1

    def _known(self, name: str) -> _Replica:
        if name not in self.members:
            raise ControlError(f'no replica named "{name}"')
        return self.members[name]

    def replicas(self) -> list[ReplicaInfo]:
        shares = self.table_shares()
        return [
            ReplicaInfo(
                name=name,
                address=r.address,
                state=r.state,
                weight=r.weight,
                share=shares.get(name, 0.0),
                in_flight=r.in_flight,
                requests=r.requests,
                restarts=r.restarts,
            )
            for name, r in sorted(self.members.items())
        ]

    def history(self, name: str) -> list[EventInfo]:
        self._known(name)
        return [event for replica, event in self.events if replica == name]

    def table_shares(self) -> dict[str, float]:
        up = {name: r.weight for name, r in self.members.items() if r.state == "up"}
        total = sum(up.values())
        return {name: weight / total for name, weight in up.items()}

    def table_info(self) -> tuple[str, str] | None:
        # A real table of the members in the table, so the fingerprint follows them.
        up = [(name, r.weight) for name, r in self.members.items() if r.state == "up"]
        return table_info(MaglevTable(up, size=251)) if up else None

    async def add(self, names: list[str]) -> None:
        for name in names:
            if not is_replica_name(name):
                raise ControlError(f'expected {REPLICA_NAME_RULE}, got "{name}"')
            if name in self.members:
                raise ControlError(f'a replica named "{name}" already exists')
        if len(self.members) + len(names) > self.max_replicas:
            raise ControlError(f"that would make more than max_replicas ({self.max_replicas})")
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        for name in names:
            self._start(name)

    async def remove(self, names: list[str]) -> None:
        for name in names:
            self._known(name)
        await asyncio.sleep(0)
        for name in names:
            del self.members[name]

    async def drain(self, name: str) -> None:
        self._known(name).state = "draining"
        await asyncio.sleep(0)

    def enable(self, name: str) -> None:
        replica = self._known(name)
        if replica.state == "down":
            raise ControlError(f"{name} is down; it rejoins the table once healthy")
        replica.state = "up"

    def disable(self, name: str) -> None:
        self._known(name).state = "disabled"

    def set_weight(self, name: str, weight: int) -> None:
        self._known(name).weight = weight

    async def reload(self) -> str:
        if self.broken:
            raise RuntimeError("the reload machinery is broken")
        self.reloads += 1
        await asyncio.sleep(0)
        return "config unchanged"


def run(cmd: Command, cluster: FakeCluster) -> str:
    return asyncio.run(execute(cmd, cluster))


# -------------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("show replicas", ShowReplicas()),
        ("show table", ShowTable()),
        ("show replica Server2", ShowReplica("Server2")),
        ("SHOW REPLICA Server2", ShowReplica("Server2")),
        ("add replica Server4", AddReplicas(("Server4",))),
        ("add replica a b", AddReplicas(("a", "b"))),
        ("del replica Server1", DelReplicas(("Server1",))),
        ("drain Server1", Drain("Server1")),
        ("enable Server1", Enable("Server1")),
        ("disable Server1", Disable("Server1")),
        ("set weight Server1 3", SetWeight("Server1", 3)),
        ("set weight Server1 1", SetWeight("Server1", 1)),
        (f"set weight Server1 {MAX_WEIGHT}", SetWeight("Server1", MAX_WEIGHT)),
        ("reload", Reload()),
        ("help", Help()),
        ("quit", Quit()),
        # Keywords in any case and any spacing; names exactly as typed.
        ("  SHOW   Replicas \t", ShowReplicas()),
        ("Drain server1", Drain("server1")),
        ("SET WEIGHT Server1 007", SetWeight("Server1", 7)),
    ],
)
def test_every_command_parses(line: str, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", 'empty command; "help" lists the commands'),
        ("   ", 'empty command; "help" lists the commands'),
        ("shw", 'unknown command "shw"; did you mean "show replicas"?'),
        ("shw table", 'unknown command "shw"; did you mean "show table"?'),
        ("replicas", 'unknown command "replicas"; did you mean "show replicas"?'),
        ("relaod", 'unknown command "relaod"; did you mean "reload"?'),
        ("dran Server1", 'unknown command "dran"; did you mean "drain"? usage: drain NAME'),
        (
            "ad replica x",
            'unknown command "ad"; did you mean "add replica"? usage: add replica NAME...',
        ),
        ("rm x", 'unknown command "rm"; did you mean "del replica"? usage: del replica NAME...'),
        ("exit", 'unknown command "exit"; did you mean "quit"?'),
        ("frobnicate", 'unknown command "frobnicate"; "help" lists the commands'),
        (
            "show",
            'show: expected "replicas", "replica" or "table"; '
            "usage: show replicas | show replica NAME | show table",
        ),
        ("show tabel", 'show: unknown "tabel"; did you mean "show table"?'),
        (
            "show all",
            'show: unknown "all", expected "replicas", "replica" or "table"; '
            "usage: show replicas | show replica NAME | show table",
        ),
        ("add", 'add: expected "replica"; usage: add replica NAME...'),
        ("add server x", 'add: unknown "server", expected "replica"; usage: add replica NAME...'),
        ("del replicas x", 'del: unknown "replicas"; did you mean "del replica"? usage: del replica NAME...'),
        ("add replica", "add replica: expected at least one replica name; usage: add replica NAME..."),
        ("del replica", "del replica: expected at least one replica name; usage: del replica NAME..."),
        ("add replica a b a", 'add replica: "a" is given twice; usage: add replica NAME...'),
        ("drain", "drain: expected a replica name; usage: drain NAME"),
        ("enable", "enable: expected a replica name; usage: enable NAME"),
        ("disable", "disable: expected a replica name; usage: disable NAME"),
        ("drain a b", 'drain: expected one replica name, got 2: "a", "b"; usage: drain NAME'),
        (
            "disable a b c d e",
            'disable: expected one replica name, got 5: "a", "b", "c", "d", ... (5 in all); usage: disable NAME',
        ),
        ("set weight", "set weight: expected a replica name and a weight; usage: set weight NAME W"),
        ("set weight Server1", 'set weight: expected a weight after "Server1"; usage: set weight NAME W'),
        ("set weight Server1 x", 'set weight: expected an integer from 1 to 256, got "x"; usage: set weight NAME W'),
        ("set weight Server1 0", 'set weight: expected an integer from 1 to 256, got "0"; usage: set weight NAME W'),
        ("set weight Server1 257", 'set weight: expected an integer from 1 to 256, got "257"; usage: set weight NAME W'),
        ("set weight Server1 -1", 'set weight: expected an integer from 1 to 256, got "-1"; usage: set weight NAME W'),
        ("set weight Server1 +3", 'set weight: expected an integer from 1 to 256, got "+3"; usage: set weight NAME W'),
        ("set weight Server1 2.5", 'set weight: expected an integer from 1 to 256, got "2.5"; usage: set weight NAME W'),
        ("set weight Server1 ٣", 'set weight: expected an integer from 1 to 256, got "٣"; usage: set weight NAME W'),
        (
            "set weight Server1 3 4",
            'set weight: expected a replica name and a weight, got "Server1", "3", "4"; usage: set weight NAME W',
        ),
        ("show replicas now", 'show replicas: takes no arguments, got "now"; usage: show replicas'),
        ("reload please", 'reload: takes no arguments, got "please"; usage: reload'),
        ("help me", 'help: takes no arguments, got "me"; usage: help'),
        ("quit now", 'quit: takes no arguments, got "now"; usage: quit'),
    ],
)
def test_every_bad_form_says_why(line: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(line)
    assert str(caught.value) == message


def test_parse_errors_are_control_errors_with_the_usage() -> None:
    with pytest.raises(ControlError) as caught:
        parse_command("set weight Server1 x")
    assert isinstance(caught.value, CommandError)
    assert caught.value.usage == "set weight NAME W"


def test_long_and_odd_tokens_are_shown_escaped_and_cut() -> None:
    with pytest.raises(CommandError) as caught:
        parse_command("x" * 5000)
    assert str(caught.value) == 'unknown command "' + "x" * 35 + '..."; "help" lists the commands'
    with pytest.raises(CommandError) as caught:
        parse_command("set weight a \x1b[31m")
    assert 'got "\\u001b[31m"' in str(caught.value)


def test_a_huge_number_is_refused_without_converting_it() -> None:
    # int() of thousands of digits is refused by Python itself (and slow before that).
    with pytest.raises(CommandError, match=r"expected an integer from 1 to 256"):
        parse_command("set weight a " + "9" * 10000)


def test_only_state_changes_are_marked_as_such() -> None:
    read_only: list[Command] = [ShowReplicas(), ShowReplica("a"), ShowTable(), Help(), Quit()]
    changing: list[Command] = [
        AddReplicas(("a",)),
        DelReplicas(("a",)),
        Drain("a"),
        Enable("a"),
        Disable("a"),
        SetWeight("a", 2),
        Reload(),
    ]
    assert not any(changes_state(c) for c in read_only)
    assert all(changes_state(c) for c in changing)


# -------------------------------------------------------------------------------------------------
# Answers


def test_show_replicas_is_a_fixed_width_table() -> None:
    cluster = FakeCluster()
    cluster.members["Server1"].requests = 123456
    cluster.members["Server2"].in_flight = 7
    cluster.members["Server3"].restarts = 2
    cluster.set_weight("Server1", 2)
    assert run(ShowReplicas(), cluster) == (
        "NAME     ADDRESS          STATE  WEIGHT  SHARE  IN-FLIGHT  REQUESTS  RESTARTS\n"
        "Server1  127.0.0.1:40001  up          2  50.0%          0    123456         0\n"
        "Server2  127.0.0.1:40002  up          1  25.0%          7         0         0\n"
        "Server3  127.0.0.1:40003  up          1  25.0%          0         0         2"
    )


def test_show_replicas_of_an_empty_cluster_is_the_header() -> None:
    text = run(ShowReplicas(), FakeCluster(()))
    assert text == "NAME  ADDRESS  STATE  WEIGHT  SHARE  IN-FLIGHT  REQUESTS  RESTARTS"


def test_show_replica_is_its_row_and_its_events_with_a_detail_s_lines_indented() -> None:
    cluster = FakeCluster()
    at = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
    cluster.events += [
        ("Server2", EventInfo(at, "started", "127.0.0.1:40002")),
        ("Server1", EventInfo(at + 1, "started", "127.0.0.1:40001")),
        ("Server2", EventInfo(at + 5, "died", "exit code 1; its last output:\n  Traceback\n  Boom")),
        ("Server2", EventInfo(at + 6, "replaced", "")),
    ]
    assert run(ShowReplica("Server2"), cluster) == (
        "NAME     ADDRESS          STATE  WEIGHT  SHARE  IN-FLIGHT  REQUESTS  RESTARTS\n"
        "Server2  127.0.0.1:40002  up          1  33.3%          0         0         0\n"
        "\n"
        "2026-11-30 00:53:20  started  127.0.0.1:40002\n"
        "2026-11-30 00:53:25  died  exit code 1; its last output:\n"
        "      Traceback\n"
        "      Boom\n"
        "2026-11-30 00:53:26  replaced"
    )
    assert run(ShowReplica("Server3"), cluster).endswith("\n\nno events")
    assert run(ShowReplica("nosuch"), cluster) == 'error: no replica named "nosuch"'


def test_show_table_gives_each_member_its_share() -> None:
    cluster = FakeCluster()
    cluster.disable("Server2")
    fingerprint = MaglevTable([("Server1", 1), ("Server3", 1)], size=251).fingerprint()
    assert run(ShowTable(), cluster) == (
        "NAME     SHARE\nServer1  50.0%\nServer3  50.0%\n"
        f"table: maglev, fingerprint {fingerprint}"
    )


def test_show_table_fingerprint_follows_the_members() -> None:
    cluster = FakeCluster()
    before = run(ShowTable(), cluster).splitlines()[-1]
    cluster.set_weight("Server2", 2)
    after = run(ShowTable(), cluster).splitlines()[-1]
    assert before.startswith("table: maglev, fingerprint ") and after != before
    assert run(ShowTable(), FakeCluster(())) == "NAME  SHARE\ntable: none (no replica is in the table)"


@pytest.mark.parametrize(
    ("cmd", "reply", "state"),
    [
        (AddReplicas(("Server4",)), "ok: added Server4", {"Server4": "up"}),
        (AddReplicas(("a", "b")), "ok: added a, b", {"a": "up", "b": "up"}),
        (DelReplicas(("Server1", "Server2")), "ok: removed Server1, Server2", {}),
        (
            Drain("Server1"),
            "ok: Server1 draining (out of the table; enable Server1 brings it back)",
            {"Server1": "draining"},
        ),
        (Disable("Server1"), "ok: Server1 disabled", {"Server1": "disabled"}),
        (Reload(), "ok: config unchanged", {}),
    ],
)
def test_state_changes_answer_ok(cmd: Command, reply: str, state: dict[str, str]) -> None:
    cluster = FakeCluster()
    assert run(cmd, cluster) == reply
    for name, expected in state.items():
        assert cluster.members[name].state == expected
    if isinstance(cmd, DelReplicas):
        assert set(cluster.members) == {"Server3"}


def test_enable_brings_a_drained_replica_back() -> None:
    cluster = FakeCluster()
    run(Drain("Server2"), cluster)
    assert "Server2" not in cluster.table_shares()
    assert run(Enable("Server2"), cluster) == "ok: Server2 enabled"
    assert "Server2" in cluster.table_shares()


def test_set_weight_shows_the_change() -> None:
    cluster = FakeCluster()
    assert run(SetWeight("Server1", 3), cluster) == "ok: Server1 weight 1 -> 3"
    assert cluster.members["Server1"].weight == 3


@pytest.mark.parametrize(
    ("cmd", "reply"),
    [
        (AddReplicas(("Server1",)), 'error: a replica named "Server1" already exists'),
        (AddReplicas(("ok", "bad name!")), f'error: expected {REPLICA_NAME_RULE}, got "bad name!"'),
        (AddReplicas(("a", "b", "c")), "error: that would make more than max_replicas (5)"),
        (DelReplicas(("Server1", "nope")), 'error: no replica named "nope"'),
        (Drain("nope"), 'error: no replica named "nope"'),
        (Enable("nope"), 'error: no replica named "nope"'),
        (Disable("nope"), 'error: no replica named "nope"'),
        (SetWeight("nope", 2), 'error: no replica named "nope"'),
    ],
)
def test_a_refusal_is_an_error_answer_and_changes_nothing(cmd: Command, reply: str) -> None:
    cluster = FakeCluster()
    before = cluster.replicas()
    assert run(cmd, cluster) == reply
    assert cluster.replicas() == before


def test_enable_of_a_down_replica_is_refused() -> None:
    cluster = FakeCluster()
    cluster.members["Server1"].state = "down"
    before = cluster.replicas()
    assert run(Enable("Server1"), cluster) == (
        "error: Server1 is down; it rejoins the table once healthy"
    )
    assert cluster.replicas() == before


def test_help_has_one_line_per_command() -> None:
    lines = run(Help(), FakeCluster()).splitlines()
    assert lines == help_text().splitlines()
    usages = [
        "show replicas",
        "show replica NAME",
        "show table",
        "add replica NAME...",
        "del replica NAME...",
        "drain NAME",
        "enable NAME",
        "disable NAME",
        "set weight NAME W",
        "reload",
        "help",
        "quit",
    ]
    assert len(lines) == len(usages)
    for line, usage in zip(lines, usages, strict=True):
        assert line.startswith(usage + "  ")
        assert line[len(usage) :].strip()  # and says what it does


def test_answer_parses_and_runs_and_turns_parse_errors_into_answers() -> None:
    cluster = FakeCluster()
    assert asyncio.run(answer("disable Server3", cluster)) == "ok: Server3 disabled"
    assert asyncio.run(answer("set weight Server1 x", cluster)) == (
        'error: set weight: expected an integer from 1 to 256, got "x"; usage: set weight NAME W'
    )
    assert [r.state for r in cluster.replicas()] == ["up", "up", "disabled"]


def test_replica_info_is_what_the_table_shows() -> None:
    # The fake's own bookkeeping, checked once so the other tests can trust it.
    cluster = FakeCluster(("a",))
    (info,) = cluster.replicas()
    assert info == ReplicaInfo("a", "127.0.0.1:40001", "up", 1, 1.0, 0, 0, 0)
    assert replace(info, weight=2) != info
