"""The analysis results and their report: report.md (for people) and results.json (for tools).

Why kept apart from running the experiments: the wording and the arithmetic of the report are
then a pure function of the results, tested without starting a balancer, and the same results
can be re-rendered when the wording changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from fastlb.analysis.distribution import TABLES, Moves, spread
from fastlb.analysis.experiments import Exchange, KillRun, LoadRun

__all__ = ["Params", "Results", "render_json", "render_markdown"]


@dataclass(frozen=True, slots=True)
class Params:
    """How big the experiments are; `--quick` shrinks them for the tests."""

    requests: int = 10000
    concurrency: int = 64
    seed: int = 1
    quick: bool = False
    ns: tuple[int, ...] = (2, 3, 4, 5, 6)
    a1_n: int = 3
    kill_duration: float = 8.0  # seconds of load in A-3 (longer if the replacement is late)
    kill_at: float = 2.0
    kill_bin: float = 0.25
    kill_concurrency: int = 32
    victim: str = "Server2"


@dataclass(slots=True)
class Results:
    params: Params
    generated: str  # UTC time the run started, ISO 8601
    runtime: float = 0.0  # seconds for the whole report
    environment: dict[str, str] = field(default_factory=dict)
    a1: dict[str, LoadRun] = field(default_factory=dict)  # by table key, N = a1_n
    a2: list[LoadRun] = field(default_factory=list)  # maglev through balancers, N in ns
    a2_pure: dict[str, list[tuple[int, dict[str, int]]]] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)
    kill: KillRun | None = None
    moves: dict[str, list[Moves]] = field(default_factory=dict)
    charts: dict[str, str] = field(default_factory=dict)  # role -> PNG file name
    log: str = ""  # the file with the replicas' and fastlb's output, if kept
    log_errors: int = 0  # error tracebacks in it


def render_json(results: Results) -> str:
    return json.dumps(asdict(results), indent=1, ensure_ascii=False, default=str) + "\n"


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _signed_pct(value: float) -> str:
    return f"{value:+.2%}"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _image(results: Results, role: str, alt: str) -> list[str]:
    name = results.charts.get(role)
    return [f"![{alt}]({name})", ""] if name else []


def _failures(failures: Mapping[str, int]) -> str:
    if not failures:
        return "none"
    return ", ".join(f"{count} x {reason}" for reason, count in failures.items())


def _section_a1(results: Results) -> list[str]:
    p = results.params
    run = results.a1.get("maglev")
    if run is None:
        return []
    s = spread(run.counts)
    answered = sum(run.counts.values())
    lines = [
        f"## A-1: {p.requests} requests on N = {p.a1_n}",
        "",
        f"Through a fresh balancer with fastlb's default table (Maglev), {run.concurrency} "
        "keep-alive connections kept busy.",
        "",
        f"Requests sent: {run.sent}; answered: {answered}; failed: {run.failed}.",
        f"Wall time {run.wall:.2f} s, throughput {run.throughput:.0f} requests/s, "
        f"latency p50 {_ms(run.p50_ms)} ms, p99 {_ms(run.p99_ms)} ms "
        "(client, balancer and replicas on the same 2-core machine).",
        "",
        *_image(results, "a1", "A-1: requests per replica"),
        "| replica | requests | share | vs even share |",
        "|---|--:|--:|--:|",
    ]
    even = 1 / len(run.counts)
    for name, count in run.counts.items():
        share = count / answered if answered else 0.0
        lines.append(f"| {name} | {count} | {_pct(share)} | {_signed_pct(share - even)} |")
    lines += [
        f"| total | {answered} | 100% | |",
        "",
        f"The busiest replica got {s.peak:.3f}x the even share ({s.mean:.0f}); the standard "
        f"deviation of the counts is {s.std:.1f} (coefficient of variation {s.cv:.2%}). "
        f"These counts are exactly the ones the pure table gives for the same ids: "
        f"{'yes' if run.matches_table else 'NO (see the failures)'}.",
        "",
    ]
    return lines


def _section_a2(results: Results) -> list[str]:
    p = results.params
    if not results.a2:
        return []
    ns = ", ".join(str(run.n) for run in results.a2)
    lines = [
        f"## A-2: N = {ns}, {p.requests} requests each",
        "",
        "One fresh balancer (Maglev, the default) per N, the same request ids each time. The "
        "average load per replica is requests / N by definition; the band and the dots show "
        "how far the replicas are from it.",
        "",
        *_image(results, "a2", "A-2: load per replica against N"),
        "| N | average | min | max | std dev | max/average | failed | wall s | requests/s "
        "| = pure table |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for run in results.a2:
        s = spread(run.counts)
        lines.append(
            f"| {run.n} | {s.mean:.1f} | {s.low} | {s.high} | {s.std:.1f} | {s.peak:.3f} | "
            f"{run.failed} | {run.wall:.2f} | {run.throughput:.0f} | "
            f"{'yes' if run.matches_table else 'no'} |"
        )
    lines.append("")
    return lines


def _section_endpoints(exchanges: Sequence[Exchange]) -> list[str]:
    lines = [
        "### Every endpoint",
        "",
        "Sent in this order through the balancer (the ones that change the replica set put it "
        "back as it was):",
        "",
    ]
    pad = "    "  # list item content, whether the number has one digit or two
    for number, ex in enumerate(exchanges, start=1):
        served = f", served by {ex.served_by}" if ex.served_by else ""
        lines.append(f"{number}. `{ex.method} {ex.target}` → **{ex.status}**{served}: {ex.why}")
        if ex.sent:
            lines += ["", f"{pad}request body:", "", f"{pad}```json", f"{pad}{ex.sent}",
                      f"{pad}```"]
        if ex.body:
            lines += ["", f"{pad}response body:", "", f"{pad}```json", f"{pad}{ex.body}",
                      f"{pad}```", ""]
        else:
            lines += ["", f"{pad}response body: empty", ""]
    return lines


def _section_kill(results: Results) -> list[str]:
    run = results.kill
    if run is None:
        return []

    def since(at: float | None) -> str:
        return "-" if at is None else f"{(at - run.kill_at) * 1e3:.0f}"

    def at_s(at: float | None) -> str:
        return "not seen" if at is None else f"{at:.3f}"

    share = run.failed / run.sent if run.sent else 0.0
    lines = [
        "### A replica killed under load",
        "",
        f"{run.concurrency} connections sent /home requests with random ids for "
        f"{run.duration:.1f} s; at {run.kill_at:.2f} s {run.victim} (pid {run.pid}) was killed "
        "with SIGKILL. The times below are the balancer's own events (its `cluster.events`), "
        "relative to the start of the run. The chart's left panel is the whole run in "
        f"{run.bin_width * 1e3:.0f} ms bins; the right one the moments around the kill in "
        f"{run.zoom_width * 1e3:.0f} ms bins.",
        "",
        *_image(results, "a3", "A-3: replies per second per replica, a replica killed"),
        "| what | at (s) | after the kill (ms) |",
        "|---|--:|--:|",
        f"| SIGKILL sent to {run.victim} | {at_s(run.kill_at)} | 0 |",
        f"| detected: the `died` event (process exit seen) | {at_s(run.died_at)} | "
        f"{since(run.died_at)} |",
    ]
    if run.down_at is not None:
        lines.append(
            f"| `down` event (heartbeats failed) | {at_s(run.down_at)} | {since(run.down_at)} |"
        )
    lines += [
        f"| `replaced` event (new process, same name, in the table) | {at_s(run.replaced_at)} | "
        f"{since(run.replaced_at)} |",
        f"| first reply from the replacement | {at_s(run.serving_at)} | "
        f"{since(run.serving_at)} |",
        "",
        f"Failed requests: {run.failed} of {run.sent} ({share:.3%}); reasons: "
        f"{_failures(run.failures)}.",
        "",
        "Replies per replica over the run: "
        + ", ".join(f"{name} {count}" for name, count in run.counts.items())
        + ".",
        "",
        "The balancer's events during the run:",
        "",
        "| at (s) | event | replica | detail |",
        "|--:|---|---|---|",
    ]
    lines += [
        f"| {e.at:.3f} | {e.kind} | {e.replica} | {e.detail} |" for e in run.events
    ]
    lines.append("")
    return lines


def _section_a4(results: Results) -> list[str]:
    p = results.params
    lines = [
        "## A-4: other hash functions, A-1 and A-2 again",
        "",
        "Four routing tables:",
        "",
    ]
    lines += [f"- **{kind.key}**: {kind.description}." for kind in TABLES]
    lines += [
        "",
        f"A-1 is measured through a fresh balancer configured with each table ({p.requests} "
        "requests, the same ids). A-2 is computed by routing the same request ids through the "
        "pure tables (`fastlb.build.build_table`), which is exactly what the balancer does with "
        "them: every balancer run of this report checks that its counts equal the pure table's.",
        "",
        f"### A-1 for each table (N = {p.a1_n}, through the balancer)",
        "",
        *_image(results, "a4_a1", "A-4: A-1 for each table"),
    ]
    names = [f"Server{i}" for i in range(1, p.a1_n + 1)]
    lines += [
        "| table | " + " | ".join(names) + " | max/even | CV | failed | requests/s "
        "| = pure table |",
        "|---|" + "--:|" * len(names) + "--:|--:|--:|--:|:-:|",
    ]
    for kind in TABLES:
        run = results.a1.get(kind.key)
        if run is None:
            continue
        s = spread(run.counts)
        row = " | ".join(str(run.counts.get(name, 0)) for name in names)
        lines.append(
            f"| {kind.key} | {row} | {s.peak:.3f} | {s.cv:.1%} | {run.failed} | "
            f"{run.throughput:.0f} | {'yes' if run.matches_table else 'no'} |"
        )
    ns = list(p.ns)
    lines += [
        "",
        f"### A-2 for each table (N = {ns[0]}..{ns[-1]}, pure tables)",
        "",
        *_image(results, "a4_a2", "A-4: A-2 for each table"),
        "The busiest replica's load over the even share (1.000 is a perfect split), and in "
        "brackets the least loaded replica's:",
        "",
        "| table | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|" + "--:|" * len(ns),
    ]
    for kind in TABLES:
        series = dict(results.a2_pure.get(kind.key, []))
        cells = []
        for n in ns:
            counts = series.get(n)
            if counts is None:
                cells.append("-")
                continue
            s = spread(counts)
            low = s.low / s.mean if s.mean else 0.0
            cells.append(f"{s.peak:.2f} ({low:.2f})")
        lines.append(f"| {kind.key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Keys that move when one replica is removed (pure tables)",
        "",
        f"For each N, each of Server1..ServerN is removed in turn and the {p.requests} ids are "
        "routed again. A perfect consistent hash with an even split moves 1/N of the keys "
        "whichever replica goes: only that replica's keys. The mean over the N choices is "
        "about 1/N for every table that moves only the removed replica's keys (their shares "
        "add up to 1), so the cells give the mean and, in brackets, the best and the worst "
        "choice: a table with uneven shares moves far more than 1/N when its busiest replica "
        "goes.",
        "",
        *_image(results, "a4_moves", "A-4: keys moved when a replica is removed"),
        "| table | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|" + "--:|" * len(ns),
        "| ideal (1/N) | " + " | ".join(_pct(1 / n) for n in ns) + " |",
    ]
    for kind in TABLES:
        rows = {m.n: m for m in results.moves.get(kind.key, [])}
        lines.append(
            f"| {kind.key} | "
            + " | ".join(
                f"{_pct(rows[n].moved)} ({_pct(rows[n].best)}-{_pct(rows[n].worst)})"
                if n in rows
                else "-"
                for n in ns
            )
            + " |"
        )
    lines += [
        "",
        "Of those, the share that moved between replicas that stayed (keys a perfect consistent "
        "hash would not move):",
        "",
        "| table | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|" + "--:|" * len(ns),
    ]
    for kind in TABLES:
        rows = {m.n: m for m in results.moves.get(kind.key, [])}
        lines.append(
            f"| {kind.key} | "
            + " | ".join(
                _pct(rows[n].moved - rows[n].removed_share) if n in rows else "-" for n in ns
            )
            + " |"
        )
    lines.append("")
    lines += _conclusions(results)
    return lines


def _conclusions(results: Results) -> list[str]:
    p = results.params
    lines = ["### What it shows", ""]
    peaks = {
        key: spread(run.counts).peak for key, run in results.a1.items() if sum(run.counts.values())
    }
    if peaks:
        worst = max(peaks, key=lambda key: peaks[key])
        best = min(peaks, key=lambda key: peaks[key])
        lines.append(
            f"- At N = {p.a1_n} the busiest replica gets {peaks[worst]:.2f}x its share with "
            f"{worst} and {peaks[best]:.3f}x with {best}."
        )
    spec = results.a2_pure.get("classic-spec")
    if spec:
        empty = [n for n, counts in spec if min(counts.values()) == 0]
        if empty:
            lines.append(
                "- The spec's H(i) = i² + 2i + 17 is a quadratic mod 512: it reaches few of the "
                "slots, so some replicas get nothing at all "
                f"(N = {', '.join(map(str, empty))})."
            )
    if results.moves:
        ns = ", ".join(str(n) for n in p.ns)
        lines.append(
            "- Keys moved when one replica is removed, at worst (the busiest one), in units of "
            f"1/N for N = {ns}:"
        )
        for key, rows in results.moves.items():
            worst = ", ".join(f"{m.worst * m.n:.2f}" for m in rows)
            lines.append(f"  - {key}: {worst}")
    lines.append("")
    return lines


def render_markdown(results: Results) -> str:
    p = results.params
    env = results.environment
    lines = [
        "# fastlb analysis report",
        "",
        f"Generated {results.generated} by `python -m fastlb.analyze"
        f"{' --quick' if p.quick else ''}` in {results.runtime:.0f} s"
        + (f" on {env['machine']}" if "machine" in env else "")
        + ".",
        "",
        "How: every experiment starts fresh fastlb balancers in the analysing process (uvloop), "
        "with local replica processes on loopback ports. An asyncio client sends GET /home over "
        f"{p.concurrency} keep-alive connections to 127.0.0.1, each request with a random 6-digit "
        f"id in X-Request-ID (the key fastlb hashes; ids drawn from random.Random({p.seed}), so "
        "every run sends the same ids), and counts the replies per replica from the "
        '"Hello from Server: X" in their bodies, as the spec\'s clients do.',
        "",
    ]
    if results.log:
        errors = (
            f"it holds {results.log_errors} error traceback(s), worth a look"
            if results.log_errors
            else "no error tracebacks"
        )
        lines += [
            f"What the replicas and fastlb wrote during the run is in [{results.log}]"
            f"({results.log}): {errors}.",
            "",
        ]
    if env:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in env.items()]
        lines.append("")
    lines += _section_a1(results)
    lines += _section_a2(results)
    if results.exchanges or results.kill is not None:
        lines += ["## A-3: every endpoint, and a failed replica replaced", ""]
        lines += _section_endpoints(results.exchanges)
        lines += _section_kill(results)
    lines += _section_a4(results)
    return "\n".join(lines).rstrip() + "\n"
