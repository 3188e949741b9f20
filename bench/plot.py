"""The picture of one benchmark run: ``run.py --plot FILE.svg`` (matplotlib).

Drawn from the report run.py writes with ``--json`` (the same dictionary), so a saved
run can be drawn again without measuring anything: ``run.py --from-json RUN.json
--plot FILE.svg``. Top row: the fan-out ladder of every target, delivered rate and
p99 latency against the offered rate. Bottom row: one bar per target for the
capacity and churn figures. Only the figures are drawn; which servers ran, where and
how is in the report's text.

matplotlib is needed only here, and imported only when a plot is asked for: it is
a benchmark requirement (bench/requirements.txt), never one of chatd's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# One colour per target, the same in every run, so two pictures compare at a glance.
COLOURS = {
    "chatd": "#1f77b4",
    "reference": "#7f7f7f",
    "ngircd": "#2ca02c",
    "inspircd": "#d62728",
    "cserver": "#9467bd",
}
OTHER_COLOUR = "#8c564b"


def colour(name: str) -> str:
    """The target's colour (a fixed one for targets not listed)."""
    return COLOURS.get(name, OTHER_COLOUR)


def write_svg(report: dict[str, Any], path: Path) -> None:
    """Draw ``report`` (run.py's JSON report) into an SVG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Text stays text and ids are stable, so the file diffs sensibly when redrawn.
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "chatd-bench", "font.size": 9})
    results: dict[str, Any] = report["results"]
    settings = report["settings"]
    figure = plt.figure(figsize=(12, 8.2), layout="constrained")
    grid = figure.add_gridspec(2, 4, height_ratios=[1.25, 1])
    delivered = figure.add_subplot(grid[0, :2])
    latency = figure.add_subplot(grid[0, 2:])
    bars = [figure.add_subplot(grid[1, i]) for i in range(4)]

    # Reports from before these were recorded ran with these values.
    fanout = {"clients": 200, "max_p99_ms": 200.0, **report.get("fanout", {})}
    draw_ladders(results, delivered, latency, fanout["clients"], fanout["max_p99_ms"], settings)
    draw_bars(
        bars[0],
        results,
        "capacity",
        "rss_per_conn_kib",
        "RSS per idle connection, KiB\n(lower is better)",
        lambda v: f"{v:.1f}",
    )
    draw_bars(
        bars[1],
        results,
        "capacity",
        "broadcast_all_ms",
        "one line to all idle users, ms\n(lower is better)",
        lambda v: f"{v:.0f}" if v >= 10 else f"{v:.1f}",
        show_n=True,
    )
    draw_bars(
        bars[2],
        results,
        "capacity",
        "join_drain_s",
        "joining all idle users, s\n(lower is better)",
        lambda v: f"{v:.2f}" if v < 1 else f"{v:.1f}" if v < 10 else f"{v:.0f}",
        show_n=True,
    )
    draw_bars(
        bars[3],
        results,
        "churn",
        "sessions_per_s",
        "churn: sessions/s\n(higher is better)",
        lambda v: f"{v:,.0f}",
    )
    env = report.get("environment", {})
    kind = "quick" if settings.get("quick") else "full"
    figure.suptitle(
        f"chatd benchmark ({kind} run, {env.get('date', '?')}; "
        f"{env.get('cpu', '?')}, server and load generator pinned to one core each)",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)


def draw_ladders(
    results: dict[str, Any],
    delivered: Any,
    latency: Any,
    members: int,
    limit: float,
    settings: dict[str, Any],
) -> None:
    """Delivered rate and p99 against offered rate, one line per target.

    A filled marker is a step that passed; an open one failed (too few delivered or p99
    over the limit) or was measured with the generator saturated (not counted).
    """
    highest = 0.0
    for name, res in results.items():
        steps = sorted(
            (s for s in (res.get("fanout") or {}).get("steps", []) if s.get("offered")),
            key=lambda s: s["offered"],
        )
        if not steps:
            continue
        offered = [s["offered"] for s in steps]
        highest = max(highest, *offered)
        ok = [bool(s.get("passed")) and not s.get("gen_bound") for s in steps]
        # The maximum goes into the legend: labels on the lines overlap where the
        # best servers end close together.
        best = (res.get("fanout") or {}).get("max_sustained_deliveries_per_s")
        labels = {
            "deliveries_per_s": f"{name} (max {best / 1e6:.2f} M/s)" if best else name,
            "lat_p99_ms": name,
        }
        for axes, key in ((delivered, "deliveries_per_s"), (latency, "lat_p99_ms")):
            values = [s.get(key) or float("nan") for s in steps]
            axes.plot(offered, values, "-", color=colour(name), label=labels[key], linewidth=1.4)
            for x, y, good in zip(offered, values, ok, strict=True):
                axes.plot(
                    x,
                    y,
                    "o",
                    color=colour(name),
                    markerfacecolor=colour(name) if good else "white",
                    markersize=4.5,
                )
    if highest:
        start = min(settings.get("ladder_start") or 100.0, highest)
        delivered.plot(
            [start, highest],
            [start * (members - 1), highest * (members - 1)],
            ":",
            color="black",
            linewidth=0.8,
            label=f"all delivered ({members - 1} per message)",
        )
    latency.axhline(
        limit, color="black", linestyle=":", linewidth=0.8, label=f"limit {limit:g} ms"
    )
    for axes in (delivered, latency):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(f"offered messages/s (into a room of {members})")
        axes.grid(True, which="major", linewidth=0.4, alpha=0.6)
        axes.legend(fontsize=8, loc="upper left")
    delivered.set_ylabel("deliveries/s")
    delivered.set_title("Fan-out: delivered (open marker: step failed or not counted)")
    latency.set_ylabel("p99 latency, ms")
    latency.set_title("Fan-out: p99 latency of every delivery")


def draw_bars(
    axes: Any,
    results: dict[str, Any],
    scenario: str,
    key: str,
    title: str,
    label: Callable[[float], str],
    *,
    show_n: bool = False,
) -> None:
    """One bar per target with the figure on it; ``show_n`` names the user count under
    each bar, since a target capped at fewer users is not like-for-like."""
    names, values = [], []
    for name, res in results.items():
        value = (res.get(scenario) or {}).get(key)
        if isinstance(value, (int, float)) and value >= 0:
            tick = name
            if show_n and (res[scenario].get("clients") is not None):
                tick += f"\nN={res[scenario]['clients']:,}"
            names.append(tick)
            values.append(float(value))
    axes.set_title(title, fontsize=9)
    if not values:
        axes.text(0.5, 0.5, "not measured", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
        return
    plain = [tick.split("\n")[0] for tick in names]
    drawn = axes.bar(range(len(values)), values, color=[colour(n) for n in plain])
    axes.bar_label(drawn, labels=[label(v) for v in values], fontsize=8, padding=2)
    axes.set_xticks(range(len(values)), names, fontsize=7.5, rotation=30, ha="right")
    axes.set_ylim(0, max(values) * 1.18)
    axes.grid(True, axis="y", linewidth=0.4, alpha=0.6)
