"""Results of the benchmark: per-run records, medians, ratios to HAProxy, the markdown table.

Why pure: the table is what people read and quote, so how it is computed (medians over the
repeats, ratio = proxy median / HAProxy median at the same connection count, the round-by-round
ratios, the spread rule) is unit-tested without running any server.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = [
    "REFERENCE",
    "TLS_SUFFIX",
    "RunResult",
    "SummaryRow",
    "cpu_us_per_request",
    "noise_note",
    "paired_table",
    "reference_of",
    "render_markdown",
    "spread_ok",
    "summarize",
]

REFERENCE = "haproxy"
#: The HTTPS round's proxies are named NAME+tls, and compared with HAProxy over TLS (with the
#: same certificate): a ratio of an HTTPS run to a plain one would measure TLS, not the proxy.
TLS_SUFFIX = "+tls"


def reference_of(proxy: str) -> str:
    """Whom `proxy`'s ratios divide by: HAProxy, over TLS for the HTTPS round."""
    return REFERENCE + TLS_SUFFIX if proxy.endswith(TLS_SUFFIX) else REFERENCE


def _is_reference(proxy: str) -> bool:
    return proxy == reference_of(proxy)
# A skip reason ends with the useful part (the exception, the ALERT line): keep the end.
SKIP_REASON_MAX = 300


def cpu_us_per_request(ticks: int, clk_tck: int, requests: int) -> float:
    """Proxy CPU microseconds per request from a /proc tick delta; NaN with no requests."""
    if requests <= 0:
        return math.nan
    return ticks / clk_tck * 1e6 / requests


def spread_ok(counts: Mapping[str, int], min_share: float) -> bool:
    """Did every backend get at least min_share of the requests (and some requests at all)?

    Consistent hashing is not an even split (HAProxy and nginx place a few points per server
    on a ring), so the rule is "all backends used, none starved", not "equal thirds".
    """
    total = sum(counts.values())
    if total <= 0 or not counts:
        return False
    return all(c >= min_share * total and c > 0 for c in counts.values())


@dataclass(slots=True)
class RunResult:
    """One measured wrk run against one freshly started proxy."""

    proxy: str
    connections: int
    round: int
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    cpu_ticks: int = 0
    cpu_us_per_req: float = math.nan
    # The part of cpu_us_per_req spent in the kernel (system time).
    sys_us_per_req: float = math.nan
    cpu_percent: float = math.nan
    # CPU other processes on the machine used during the run (% of one core): noise gauge.
    other_cpu_percent: float = math.nan
    errors: dict[str, int] = field(default_factory=dict)
    spread: dict[str, int] = field(default_factory=dict)
    spread_ok: bool = False
    failure: str | None = None  # set when the run itself broke (proxy died, wrk failed)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON has no NaN: write null.
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """Medians over the repeats for one proxy at one connection count."""

    proxy: str
    connections: int
    runs: int
    rps: float
    p99_ms: float
    cpu_us_per_req: float
    cpu_percent: float
    errors: int
    spread: dict[str, int]
    spread_ok: bool
    failures: tuple[str, ...] = ()
    sys_us_per_req: float = math.nan
    rps_ratio: float = math.nan
    p99_ratio: float = math.nan
    cpu_ratio: float = math.nan


def _median(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def _ratio(value: float, ref: float) -> float:
    if math.isnan(value) or math.isnan(ref) or ref == 0:
        return math.nan
    return value / ref


def summarize(runs: Sequence[RunResult], proxy_order: Sequence[str]) -> list[SummaryRow]:
    """One row per (proxy, connections), medians over good runs, ratios to HAProxy's medians
(HAProxy over TLS's, for the HTTPS round).

    Spread counts are summed over the repeats; the spread check passes only if it passed in
    every run. A run that broke counts as a failure and is kept out of the medians.
    """
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.proxy, run.connections), []).append(run)
    order = {name: i for i, name in enumerate(proxy_order)}
    rows: list[SummaryRow] = []
    for (proxy, conns), group in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1])
    ):
        good = [r for r in group if r.failure is None]
        spread: dict[str, int] = {}
        for r in good:
            for name, count in r.spread.items():
                spread[name] = spread.get(name, 0) + count
        rows.append(
            SummaryRow(
                proxy=proxy,
                connections=conns,
                runs=len(good),
                rps=_median(r.rps for r in good),
                p99_ms=_median(r.p99_ms for r in good),
                cpu_us_per_req=_median(r.cpu_us_per_req for r in good),
                sys_us_per_req=_median(r.sys_us_per_req for r in good),
                cpu_percent=_median(r.cpu_percent for r in good),
                errors=sum(sum(r.errors.values()) for r in good),
                spread=dict(sorted(spread.items())),
                spread_ok=bool(good) and all(r.spread_ok for r in good),
                failures=tuple(r.failure for r in group if r.failure is not None),
            )
        )
    refs = {(row.proxy, row.connections): row for row in rows if _is_reference(row.proxy)}
    out: list[SummaryRow] = []
    for row in rows:
        ref = refs.get((reference_of(row.proxy), row.connections))
        if ref is None:
            out.append(row)
            continue
        out.append(
            replace(
                row,
                rps_ratio=_ratio(row.rps, ref.rps),
                p99_ratio=_ratio(row.p99_ms, ref.p99_ms),
                cpu_ratio=_ratio(row.cpu_us_per_req, ref.cpu_us_per_req),
            )
        )
    return out


def _num(value: float, fmt: str) -> str:
    return "—" if math.isnan(value) else format(value, fmt)


def _ratio_cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}x"


def _cell(text: str) -> str:
    """Make text safe for one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _spread_cell(row: SummaryRow) -> str:
    total = sum(row.spread.values())
    if total:
        shares = "/".join(f"{100 * c / total:.0f}" for c in row.spread.values())
        counts = ", ".join(f"{k} {v}" for k, v in row.spread.items())
        detail = f"{shares}% ({counts})"
    else:
        detail = "no requests reached a backend"
    status = "ok" if row.spread_ok else "FAILED"
    text = f"{status} {detail}"
    if row.failures:
        text += f"; {len(row.failures)} run(s) failed: {row.failures[0]}"
    return _cell(text)


def _row_line(row: SummaryRow) -> str:
    cpu_share = "—" if math.isnan(row.cpu_percent) else f"{row.cpu_percent:.0f}%"
    cells = [
        row.proxy,
        str(row.connections),
        _num(row.rps, ",.0f"),
        _ratio_cell(row.rps_ratio),
        _num(row.p99_ms, ".2f"),
        _ratio_cell(row.p99_ratio),
        _num(row.cpu_us_per_req, ".1f"),
        _ratio_cell(row.cpu_ratio),
        _num(row.sys_us_per_req, ".1f"),
        cpu_share,
        str(row.errors),
        _spread_cell(row),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| proxy | conns | req/s | ÷ HAProxy | p99 ms | ÷ HAProxy | CPU µs/req | ÷ HAProxy "
    "| of which kernel | proxy CPU | errors | spread b1/b2/b3 |"
)
RULE = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"


def render_markdown(
    rows: Sequence[SummaryRow],
    skipped: Mapping[str, str],
    connections: Sequence[int],
    *,
    proxy_order: Sequence[str] = (),
    preamble: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The results table (plus a preamble of context lines) as markdown, proxies in run order.

    A proxy that could not be started gets a row saying so, so it is never silently absent.
    """
    lines = [*preamble]
    if preamble:
        lines.append("")
    lines += [HEADER, RULE]
    order = list(proxy_order)
    order += [r.proxy for r in rows if r.proxy not in order]
    order += [p for p in skipped if p not in order]
    conns = ",".join(str(c) for c in connections)
    for proxy in dict.fromkeys(order):
        for row in rows:
            if row.proxy == proxy:
                lines.append(_row_line(row))
        if proxy in skipped:
            reason = _cell(skipped[proxy])
            if len(reason) > SKIP_REASON_MAX:
                reason = "…" + reason[-SKIP_REASON_MAX:]
            lines.append(
                f"| {proxy} | {conns} | — | — | — | — | — | — | — | — | — | SKIPPED: {reason} |"
            )
    lines += [
        "",
        "Medians over the repeats; ÷ HAProxy = this proxy's median / HAProxy's median at the same "
        "connection count (req/s: higher is better; p99 and CPU µs/req: lower is better); "
        f"rows named NAME{TLS_SUFFIX} are the HTTPS round, divided by haproxy{TLS_SUFFIX} (one "
        "certificate for both, keep-alive connections: one handshake per connection). "
        "CPU µs/req = proxy utime+stime (all its processes) during the wrk run / requests, "
        "of which kernel = its stime part; proxy CPU = share of one core it used meanwhile. "
        "Spread = requests each backend served (summed over repeats), ok if every backend got "
        "a fair share.",
    ]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# Above this share of a core used by other processes during a run, say the numbers are noisy.
NOISE_WARN_PERCENT = 10.0


def noise_note(runs: Sequence[RunResult], warn_percent: float = NOISE_WARN_PERCENT) -> str:
    """One line on how busy the rest of the machine was during the measured runs.

    The box has 2 cores and the benchmark uses both, so anything else running (a test suite,
    a build) takes time from the proxy or the client and skews the comparison.
    """
    values = [r.other_cpu_percent for r in runs if not math.isnan(r.other_cpu_percent)]
    if not values:
        return "Other processes' CPU during the runs: not measured."
    med, top = statistics.median(values), max(values)
    busy = [r for r in runs if r.other_cpu_percent > warn_percent]
    text = (
        f"Other processes on the machine used a median {med:.0f}% (max {top:.0f}%) of a core "
        "during the measured runs."
    )
    if busy:
        text += (
            f" WARNING: {len(busy)} of {len(values)} run(s) shared the machine with more than "
            f"{warn_percent:.0f}% of a core of other work; rerun on a quiet machine before "
            "trusting the ratios."
        )
    return text


def _paired(runs: Sequence[RunResult], proxy: str, conns: int, attr: str) -> list[float]:
    """`attr` of each good run of `proxy` ÷ that of HAProxy's good run in the same round
    (over TLS for the HTTPS round)."""
    reference = reference_of(proxy)
    ref = {
        r.round: getattr(r, attr)
        for r in runs
        if r.proxy == reference and r.connections == conns and r.failure is None
    }
    ratios = []
    for r in sorted(runs, key=lambda r: r.round):
        if r.proxy == proxy and r.connections == conns and r.failure is None and r.round in ref:
            ratio = _ratio(getattr(r, attr), ref[r.round])
            if not math.isnan(ratio):
                ratios.append(ratio)
    return ratios


def _paired_cell(ratios: Sequence[float]) -> str:
    if not ratios:
        return "—"
    rounds = ", ".join(f"{x:.2f}" for x in ratios)
    return f"{statistics.median(ratios):.2f}x ({rounds})"


def paired_table(runs: Sequence[RunResult], proxy_order: Sequence[str]) -> str:
    """Each proxy against HAProxy round by round: every run ÷ HAProxy's run of the same round,
    then the median over the rounds; "" without HAProxy runs.

    Why, beside the ratio of medians: this machine's speed drifts by up to 20% within minutes,
    and a proxy's median and HAProxy's can come from different rounds, one slow and one fast.
    A round's two runs are a minute apart at most, so their ratio carries less of the drift;
    the per-round values show how far the rounds agree.
    """
    if not any(_is_reference(r.proxy) for r in runs):
        return ""
    lines = [
        "Round by round against HAProxy (each run ÷ HAProxy's run in the same round; the median, "
        "then each round's value):",
        "",
        "| proxy | conns | req/s ÷ HAProxy | CPU µs/req ÷ HAProxy |",
        "|---|--:|--:|--:|",
    ]
    order = list(dict.fromkeys([*proxy_order, *(r.proxy for r in runs)]))
    for proxy in order:
        if _is_reference(proxy):
            continue
        for conns in sorted({r.connections for r in runs if r.proxy == proxy}):
            rps = _paired(runs, proxy, conns, "rps")
            cpu = _paired(runs, proxy, conns, "cpu_us_per_req")
            if rps or cpu:
                lines.append(
                    f"| {proxy} | {conns} | {_paired_cell(rps)} | {_paired_cell(cpu)} |"
                )
    return "\n".join(lines)
