"""The report's charts, drawn with matplotlib's Agg backend into PNG files.

Why Figure objects rather than pyplot: no global state and no GUI backend is ever touched, so the
charts draw the same on a headless machine, in a test, or next to a running event loop. matplotlib
is imported by this module only, and this module only when the report is drawn, so fastlb itself
does not need it (it is the `report` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastlb.analysis.distribution import Moves, spread
from fastlb.analysis.experiments import KillRun

__all__ = [
    "load_bars",
    "load_lines",
    "moves_chart",
    "save",
    "timeline",
]

DPI = 110
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
EVEN = "#333333"

# (N, replies per replica) for one replica count.
Series = Sequence[tuple[int, Mapping[str, int]]]


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def save(fig: Figure, path: Path) -> str:
    """Write `fig` as a PNG; the file name, for the report's links."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path.name


def _style(ax: Axes) -> None:
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def load_bars(
    ax: Axes, counts: Mapping[str, int], title: str, *, top: float | None = None
) -> None:
    """Requests per replica as bars, each labelled with its count and share, and the even share
    (total / N) as a dashed line: how far each bar is from it is the point of A-1."""
    names = list(counts)
    values = [counts[name] for name in names]
    total = sum(values)
    even = total / len(values) if values else 0.0
    bars = ax.bar(names, values, color=[_color(i) for i in range(len(names))], width=0.6)
    if top is None:
        top = max(values, default=0) * 1.3 + 1  # headroom above the tallest bar for the legend
    for bar, value in zip(bars, values, strict=True):
        share = value / total if total else 0.0
        # Halfway up a tall enough bar, where the even-share line (near the top of a fair bar)
        # does not cross it; above a short bar.
        inside = value > 0.15 * top
        ax.annotate(
            f"{value}\n{share:.1%}",
            (bar.get_x() + bar.get_width() / 2, value / 2 if inside else value),
            xytext=(0, 0 if inside else 3),
            textcoords="offset points",
            ha="center",
            va="center" if inside else "bottom",
            color="white" if inside else "black",
            fontsize=8,
            fontweight="bold" if inside else "normal",
        )
    ax.axhline(even, color=EVEN, linestyle="--", linewidth=1.2, label=f"even share ({even:.0f})")
    ax.set_ylim(0, top)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("requests served")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    _style(ax)


def load_lines(ax: Axes, series: Series, title: str, *, requests: int) -> None:
    """Average load per replica against N, with the min-max range as a band, ±1 std dev as error
    bars and every replica's own count as a dot: the average alone is always requests / N, the
    spread around it is what tells tables apart."""
    ns = [n for n, _ in series]
    stats = [spread(counts) for _, counts in series]
    ax.fill_between(
        ns, [s.low for s in stats], [s.high for s in stats],
        color=_color(0), alpha=0.15, label="min-max",
    )
    ax.errorbar(
        ns, [s.mean for s in stats], yerr=[s.std for s in stats],
        color=_color(0), marker="o", capsize=4, linewidth=1.8, label="average ± std dev",
    )
    for n, counts in series:
        ax.scatter([n] * len(counts), list(counts.values()), s=12, color="#555555", alpha=0.6,
                   zorder=3, label="one replica" if n == ns[0] else None)
    ax.set_xticks(ns)
    ax.set_xlabel("replicas (N)")
    ax.set_ylabel(f"requests per replica (of {requests})")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    _style(ax)


def a1_figure(counts: Mapping[str, int], title: str, path: Path) -> str:
    fig = Figure(figsize=(6.4, 4.2))
    load_bars(fig.add_subplot(), counts, title)
    return save(fig, path)


def deviation_lines(ax: Axes, series: Series, title: str) -> None:
    """Each replica's load as a percentage off the even share, against N: the spread that is
    too small to see on the scale of the load itself when the table is even."""
    ns = [n for n, _ in series]
    offsets = []
    for n, counts in series:
        mean = sum(counts.values()) / len(counts) if counts else 0.0
        values = [(c / mean - 1) * 100 if mean else 0.0 for c in counts.values()]
        offsets.append(values)
        ax.scatter([n] * len(values), values, s=14, color="#555555", alpha=0.7, zorder=3,
                   label="one replica" if n == ns[0] else None)
    ax.fill_between(ns, [min(v) for v in offsets], [max(v) for v in offsets],
                    color=_color(1), alpha=0.2, label="min-max")
    ax.axhline(0, color=EVEN, linestyle="--", linewidth=1.2, label="even share")
    ax.set_xticks(ns)
    ax.set_xlabel("replicas (N)")
    ax.set_ylabel("load off the even share (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    _style(ax)


def a2_figure(series: Series, title: str, path: Path, *, requests: int) -> str:
    """A-2 as the spec asks (the average load per replica) and, beside it, how far each
    replica is from that average."""
    fig = Figure(figsize=(11.0, 4.4))
    left, right = fig.subplots(1, 2)
    load_lines(left, series, "average load per replica", requests=requests)
    deviation_lines(right, series, "each replica against the even share")
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def side_by_side_bars(
    panels: Sequence[tuple[str, Mapping[str, int]]], suptitle: str, path: Path
) -> str:
    """A-1 for each table, on one shared y axis so the bars compare across panels."""
    fig = Figure(figsize=(3.4 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    top = max((max(c.values(), default=0) for _, c in panels), default=0) * 1.3 + 1
    for ax, (title, counts) in zip(axes, panels, strict=True):
        load_bars(ax, counts, title, top=top)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.suptitle(suptitle, fontsize=11)
    return save(fig, path)


def side_by_side_lines(
    panels: Sequence[tuple[str, Series]], suptitle: str, path: Path, *, requests: int
) -> str:
    """A-2 for each table, on one shared y axis."""
    fig = Figure(figsize=(3.4 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels, strict=True):
        load_lines(ax, series, title, requests=requests)
    for ax in axes[1:]:
        ax.set_ylabel("")
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    fig.suptitle(suptitle, fontsize=11)
    return save(fig, path)


def moves_chart(panels: Sequence[tuple[str, Sequence[Moves]]], path: Path) -> str:
    """The share of keys that move when one replica is removed: for each table the mean over
    which replica goes (a dot) and the range from the best to the worst choice (a bar), against
    1/N. The means all sit near 1/N (see `Moves`); the ranges are what differ: a table with
    uneven shares moves far more than 1/N when its busiest replica goes."""
    fig = Figure(figsize=(7.6, 5.0))
    ax = fig.add_subplot()
    markers = ("s", "^", "v", "o", "D")
    dodge = 0.12
    for index, (label, rows) in enumerate(panels):
        offset = (index - (len(panels) - 1) / 2) * dodge
        xs = [m.n + offset for m in rows]
        means = [m.moved * 100 for m in rows]
        ax.errorbar(
            xs,
            means,
            yerr=[[(m.moved - m.best) * 100 for m in rows],
                  [(m.worst - m.moved) * 100 for m in rows]],
            color=_color(index), marker=markers[index % len(markers)], capsize=3,
            linestyle="none", linewidth=1.6, label=label,
        )
    if panels:
        ns = [m.n for m in panels[0][1]]
        ax.plot(ns, [100 / n for n in ns], color=EVEN, linestyle="--", linewidth=1.2,
                label="1/N (ideal)", zorder=0)
        ax.set_xticks(ns)
    ax.set_xlabel("replicas before the removal (N)")
    ax.set_ylabel("keys moved (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Keys that change replica when one of N is removed\n"
                 "(dot: mean over which replica is removed; bar: best to worst)", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
               frameon=False)
    _style(ax)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=DPI, format="png")
    return path.name


def _rates(
    ax: Axes,
    run: KillRun,
    start: float,
    width: float,
    per_replica: Mapping[str, Sequence[int]],
    failed: Sequence[int],
) -> None:
    """Replies per second per replica as steps, failures per second as red bars."""
    bins = len(failed)
    xs = [start + i * width for i in range(bins)]
    for index, (name, per_bin) in enumerate(per_replica.items()):
        rates = [count / width for count in per_bin]
        label = f"{name} (killed)" if name == run.victim else name
        # One more point, so that the last bin is drawn as wide as the others.
        ax.step([*xs, start + bins * width], rates + rates[-1:], where="post",
                color=_color(index), linewidth=1.5, label=label)
    ax.bar(xs, [count / width for count in failed], width=width, align="edge",
           color="#D62728", alpha=0.7, label=f"failed requests ({run.failed} in all)")
    marks = [
        (run.kill_at, "SIGKILL", "#000000", "-"),
        (run.died_at, "detected (died)", "#FF7F0E", "--"),
        (run.down_at, "down (heartbeats)", "#9467BD", "--"),
        (run.replaced_at, "replaced", "#2CA02C", "--"),
        (run.serving_at, "replacement serving", "#17BECF", ":"),
    ]
    for at, label, color, style in marks:
        if at is None:
            continue
        since = "" if label == "SIGKILL" else f" +{(at - run.kill_at) * 1e3:.0f} ms"
        ax.axvline(at, color=color, linestyle=style, linewidth=1.3, label=f"{label}{since}")
    ax.set_xlim(start, start + bins * width)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("replies per second")
    _style(ax)


def timeline(run: KillRun, path: Path) -> str:
    """The A-3 run: replies per second per replica over the whole run (left) and around the kill
    in finer bins (right), failures in red, and the kill, the balancer's detection and the
    replacement as vertical lines. The zoom exists because the replacement takes less than one
    of the left panel's bins, which alone would show only a dent."""
    fig = Figure(figsize=(12.0, 5.0))
    grid = fig.add_gridspec(1, 2, width_ratios=(2.0, 1.0))
    whole = fig.add_subplot(grid[0, 0])
    zoom = fig.add_subplot(grid[0, 1])
    _rates(whole, run, 0.0, run.bin_width, run.per_replica, run.failed_bins)
    whole.set_xlabel(f"seconds since the start of the run ({run.bin_width * 1e3:.0f} ms bins)")
    whole.set_title(f"the whole run ({run.concurrency} connections)", fontsize=10)
    _rates(zoom, run, run.zoom_start, run.zoom_width, run.zoom_per_replica, run.zoom_failed)
    zoom.set_xlabel(f"seconds ({run.zoom_width * 1e3:.0f} ms bins)")
    zoom.set_title("around the kill", fontsize=10)
    handles, labels = whole.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8,
               frameon=False)
    fig.suptitle(f"A-3: {run.victim} killed with SIGKILL at {run.kill_at:.2f} s under load",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=DPI, format="png")
    return path.name
