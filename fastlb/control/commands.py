"""The admin socket's command language: parsing a line into a command, and running a command
against the cluster into the text an operator reads.

Pure (no sockets, no I/O but the cluster's own methods), so every command, every refusal and
every answer is unit-tested without a server; `adminsock` only moves lines in and answers out.

Grammar, in the spirit of HAProxy's runtime API: keywords are case-insensitive (an operator
typing `SHOW REPLICAS` means what they typed), replica names are not (they are names).
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import assert_never

from fastlb.control.api import ClusterControl, ControlError, EventInfo, ReplicaInfo
from fastlb.limits import MAX_WEIGHT, WEIGHT_RULE, is_weight

__all__ = [
    "AddReplicas",
    "Command",
    "CommandError",
    "DelReplicas",
    "Disable",
    "Drain",
    "Enable",
    "Help",
    "Quit",
    "Reload",
    "SetWeight",
    "ShowReplica",
    "ShowReplicas",
    "ShowTable",
    "answer",
    "changes_state",
    "execute",
    "help_text",
    "parse_command",
]



class CommandError(ControlError):
    """A line that is not a command. Nothing was sent to the cluster. The message says why and
    shows the usage of the command the operator most likely meant."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


# -------------------------------------------------------------------------------------------------
# Commands: one frozen dataclass each, so `execute` can match on them and mypy can check that
# every command is handled.


@dataclass(frozen=True, slots=True)
class ShowReplicas:
    pass


@dataclass(frozen=True, slots=True)
class ShowReplica:
    name: str


@dataclass(frozen=True, slots=True)
class ShowTable:
    pass


@dataclass(frozen=True, slots=True)
class AddReplicas:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DelReplicas:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Drain:
    name: str


@dataclass(frozen=True, slots=True)
class Enable:
    name: str


@dataclass(frozen=True, slots=True)
class Disable:
    name: str


@dataclass(frozen=True, slots=True)
class SetWeight:
    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class Reload:
    pass


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    """Ends the connection; the socket acts on it, there is nothing to run."""


Command = (
    ShowReplicas
    | ShowReplica
    | ShowTable
    | AddReplicas
    | DelReplicas
    | Drain
    | Enable
    | Disable
    | SetWeight
    | Reload
    | Help
    | Quit
)


def changes_state(cmd: Command) -> bool:
    """Whether the command asks the cluster to change something: those are the ones worth a line
    in the log, so that a change can be traced back to the operator who made it."""
    return not isinstance(cmd, ShowReplicas | ShowReplica | ShowTable | Help | Quit)


# -------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class _Syntax:
    """One command as the operator types it; the same entry drives parsing, `help` and the
    usage shown in every refusal, so the three cannot disagree."""

    words: tuple[str, ...]  # the keywords, lower case
    args: str  # the arguments as shown in usage ("" for none)
    summary: str
    build: Callable[[_Syntax, list[str]], Command]

    @property
    def phrase(self) -> str:
        return " ".join(self.words)

    @property
    def usage(self) -> str:
        return f"{self.phrase} {self.args}" if self.args else self.phrase

    def error(self, what: str) -> CommandError:
        return CommandError(f"{self.phrase}: {what}; usage: {self.usage}", self.usage)


def _no_args(command: Command) -> Callable[[_Syntax, list[str]], Command]:
    def build(syntax: _Syntax, args: list[str]) -> Command:
        if args:
            raise syntax.error(f"takes no arguments, got {_quoted(args)}")
        return command

    return build


def _one_name(make: Callable[[str], Command]) -> Callable[[_Syntax, list[str]], Command]:
    def build(syntax: _Syntax, args: list[str]) -> Command:
        if not args:
            raise syntax.error("expected a replica name")
        if len(args) > 1:
            raise syntax.error(f"expected one replica name, got {len(args)}: {_quoted(args)}")
        return make(args[0])

    return build


def _names(make: Callable[[tuple[str, ...]], Command]) -> Callable[[_Syntax, list[str]], Command]:
    def build(syntax: _Syntax, args: list[str]) -> Command:
        if not args:
            raise syntax.error("expected at least one replica name")
        seen: set[str] = set()
        for name in args:
            if name in seen:
                raise syntax.error(f"{_show(name)} is given twice")
            seen.add(name)
        return make(tuple(args))

    return build


_DECIMAL = re.compile(r"[0-9]+")


def _set_weight(syntax: _Syntax, args: list[str]) -> Command:
    if not args:
        raise syntax.error("expected a replica name and a weight")
    if len(args) == 1:
        raise syntax.error(f"expected a weight after {_show(args[0])}")
    if len(args) > 2:
        raise syntax.error(f"expected a replica name and a weight, got {_quoted(args)}")
    name, text = args
    # ASCII digits only: int() would also take "+3", " 3", "3_0" and other scripts' digits,
    # none of which an operator means as a weight.
    weight = int(text) if _DECIMAL.fullmatch(text) and len(text) <= 4 else 0
    if not is_weight(weight):
        raise syntax.error(f"expected {WEIGHT_RULE}, got {_show(text)}")
    return SetWeight(name, weight)


_SYNTAXES: tuple[_Syntax, ...] = (
    _Syntax(
        ("show", "replicas"),
        "",
        "every replica: address, state, weight, share, load, restarts",
        _no_args(ShowReplicas()),
    ),
    _Syntax(
        ("show", "replica"),
        "NAME",
        "one replica's row and its recent events (a died one's last output lines)",
        _one_name(ShowReplica),
    ),
    _Syntax(
        ("show", "table"), "", "each replica's share of the routing table", _no_args(ShowTable())
    ),
    _Syntax(
        ("add", "replica"),
        "NAME...",
        "start replicas; ok once they answer and are in the table",
        _names(AddReplicas),
    ),
    _Syntax(
        ("del", "replica"),
        "NAME...",
        "take replicas out of the table, let their requests finish, stop them",
        _names(DelReplicas),
    ),
    _Syntax(
        ("drain",), "NAME", "out of the table for new requests; keeps running", _one_name(Drain)
    ),
    _Syntax(
        ("enable",),
        "NAME",
        "back into the table after drain or disable, if healthy",
        _one_name(Enable),
    ),
    _Syntax(
        ("disable",),
        "NAME",
        "out of the table at once; requests in flight finish",
        _one_name(Disable),
    ),
    _Syntax(
        ("set", "weight"),
        "NAME W",
        f"weight 1..{MAX_WEIGHT}: the replica's share of keys relative to the others",
        _set_weight,
    ),
    _Syntax(("reload",), "", "re-read the config file and apply it", _no_args(Reload())),
    _Syntax(("help",), "", "this list", _no_args(Help())),
    _Syntax(("quit",), "", "close this connection", _no_args(Quit())),
)

# Words from other tools that an operator may type by habit: suggested, never accepted, so the
# language stays small and each command has one spelling.
_HABITS: dict[str, str] = {
    "rm": "del replica",
    "remove": "del replica",
    "delete": "del replica",
    "list": "show replicas",
    "ls": "show replicas",
    "status": "show replicas",
    "stat": "show replicas",
    "weight": "set weight",
    "exit": "quit",
    "restart": "reload",
    "?": "help",
}


def parse_command(line: str) -> Command:
    """The command on `line`, or CommandError saying what is wrong with it."""
    tokens = line.split()
    if not tokens:
        raise CommandError('empty command; "help" lists the commands')
    for syntax in _SYNTAXES:
        n = len(syntax.words)
        if len(tokens) >= n and tuple(t.lower() for t in tokens[:n]) == syntax.words:
            return syntax.build(syntax, tokens[n:])
    raise _unknown(tokens)


def _unknown(tokens: list[str]) -> CommandError:
    """The refusal of a line no syntax matches, with the command most likely meant."""
    first = tokens[0].lower()
    family = [s for s in _SYNTAXES if len(s.words) > 1 and s.words[0] == first]
    if family:
        # The verb is right and what follows it is not ("show tabel", "add").
        options = [s.words[1] for s in family]
        usage = " | ".join(s.usage for s in family)
        if len(tokens) == 1:
            return CommandError(f"{first}: expected {_one_of(options)}; usage: {usage}", usage)
        close = difflib.get_close_matches(tokens[1].lower(), options, n=1)
        if close:
            meant = next(s for s in family if s.words[1] == close[0])
            return CommandError(
                f"{first}: unknown {_show(tokens[1])}; {_did_you_mean(meant)}", meant.usage
            )
        return CommandError(
            f"{first}: unknown {_show(tokens[1])}, expected {_one_of(options)}; usage: {usage}",
            usage,
        )
    closest = _closest(tokens)
    if closest is None:
        return CommandError(f'unknown command {_show(tokens[0])}; "help" lists the commands')
    return CommandError(
        f"unknown command {_show(tokens[0])}; {_did_you_mean(closest)}", closest.usage
    )


def _closest(tokens: list[str]) -> _Syntax | None:
    """The command a mistyped first word most likely stands for. Any keyword counts ("replicas"
    alone means "show replicas"), and a verb with several commands is settled by the next word."""
    by_word: dict[str, list[_Syntax]] = {}
    for syntax in _SYNTAXES:
        for word in syntax.words:
            by_word.setdefault(word, []).append(syntax)
    first = tokens[0].lower()
    if first in _HABITS:
        return next(s for s in _SYNTAXES if s.phrase == _HABITS[first])
    close = difflib.get_close_matches(first, list(by_word), n=1)
    if not close:
        return None
    candidates = by_word[close[0]]
    if len(candidates) > 1 and len(tokens) > 1:
        seconds = {s.words[-1]: s for s in candidates}
        best = difflib.get_close_matches(tokens[1].lower(), list(seconds), n=1, cutoff=0.0)
        if best:
            return seconds[best[0]]
    return candidates[0]


def _did_you_mean(syntax: _Syntax) -> str:
    text = f'did you mean "{syntax.phrase}"?'
    return f"{text} usage: {syntax.usage}" if syntax.args else text


_SHOW_LIMIT = 40


def _show(token: str) -> str:
    """A token as typed, quoted (control characters escaped) and cut short, so a message can
    be matched against the line by eye and a pasted megabyte does not come back."""
    text = json.dumps(token, ensure_ascii=False)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 4] + '..."'


def _quoted(tokens: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(_show(t) for t in tokens[:limit])
    return shown + (f", ... ({len(tokens)} in all)" if len(tokens) > limit else "")


def _one_of(options: Sequence[str]) -> str:
    quoted = [f'"{option}"' for option in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def help_text() -> str:
    width = max(len(s.usage) for s in _SYNTAXES) + 2
    return "\n".join(f"{s.usage:<{width}}{s.summary}" for s in _SYNTAXES)


# -------------------------------------------------------------------------------------------------
# Running


async def answer(line: str, cluster: ClusterControl) -> str:
    """Parse and run one line: what a client of the socket reads back, refusals included."""
    try:
        cmd = parse_command(line)
    except CommandError as exc:
        return f"error: {exc}"
    return await execute(cmd, cluster)


async def execute(cmd: Command, cluster: ClusterControl) -> str:
    """Run `cmd`; a refusal by the cluster (which then changed nothing) is answered as
    `error: ...`, never raised, because to the operator it is an answer like any other."""
    try:
        return await _run(cmd, cluster)
    except ControlError as exc:
        return f"error: {exc}"


async def _run(cmd: Command, cluster: ClusterControl) -> str:
    match cmd:
        case ShowReplicas():
            return _replica_table(cluster.replicas())
        case ShowReplica(name):
            events = cluster.history(name)
            row = [r for r in cluster.replicas() if r.name == name]
            return _replica_table(row) + "\n\n" + _event_lines(events)
        case ShowTable():
            return _share_table(cluster.table_shares(), cluster.table_info())
        case AddReplicas(names):
            await cluster.add(list(names))
            return f"ok: added {', '.join(names)}"
        case DelReplicas(names):
            await cluster.remove(list(names))
            return f"ok: removed {', '.join(names)}"
        case Drain(name):
            await cluster.drain(name)
            return f"ok: {name} draining (out of the table; enable {name} brings it back)"
        case Enable(name):
            cluster.enable(name)
            return f"ok: {name} enabled"
        case Disable(name):
            cluster.disable(name)
            return f"ok: {name} disabled"
        case SetWeight(name, weight):
            before = next((r.weight for r in cluster.replicas() if r.name == name), None)
            cluster.set_weight(name, weight)
            change = f"{before} -> {weight}" if before is not None else str(weight)
            return f"ok: {name} weight {change}"
        case Reload():
            summary = await cluster.reload()
            return f"ok: {summary}"
        case Help():
            return help_text()
        case Quit():
            return "ok: bye"
        case _:
            assert_never(cmd)


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def _replica_table(replicas: Sequence[ReplicaInfo]) -> str:
    rows = [
        (
            r.name,
            r.address,
            r.state,
            str(r.weight),
            _percent(r.share),
            str(r.in_flight),
            str(r.requests),
            str(r.restarts),
        )
        for r in replicas
    ]
    header = ("NAME", "ADDRESS", "STATE", "WEIGHT", "SHARE", "IN-FLIGHT", "REQUESTS", "RESTARTS")
    return _columns(header, rows, numeric=3)


def _event_lines(events: Sequence[EventInfo]) -> str:
    """One line per event, oldest first, in UTC; a detail's own lines (a died replica's last
    output) follow it, indented."""
    if not events:
        return "no events"
    lines = []
    for event in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.at))
        first, *rest = event.detail.split("\n") if event.detail else [""]
        lines.append(f"{when}  {event.kind}" + (f"  {first}" if first else ""))
        lines.extend(f"    {line}" for line in rest)
    return "\n".join(lines)


def _share_table(shares: dict[str, float], info: tuple[str, str] | None) -> str:
    """The shares, then the table's kind and fingerprint on a line of their own (compare it
    across balancers: equal fingerprints route every key alike)."""
    rows = [(name, _percent(shares[name])) for name in sorted(shares)]
    out = _columns(("NAME", "SHARE"), rows, numeric=1)
    if info is None:
        return out + "\ntable: none (no replica is in the table)"
    kind, fingerprint = info
    return f"{out}\ntable: {kind}, fingerprint {fingerprint}"


def _columns(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], numeric: int) -> str:
    """Fixed-width columns, text left and numbers right (columns from `numeric` on), so the
    table reads by eye and splits on whitespace for scripts (no cell holds a space)."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            cell.rjust(width) if i >= numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join(line(cells) for cells in (header, *rows))
