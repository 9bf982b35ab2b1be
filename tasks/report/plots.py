"""Figures of the report: each takes its data from ``derive.derive_figures`` and returns a PNG as base64.

Uses matplotlib's object API on the Agg canvas, never pyplot: no global figure state, no display needed.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BLUE, ORANGE, GREY, RED, GREEN = "#3b6ea8", "#e08a2c", "#9aa4ae", "#c0392b", "#2e8b57"


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 8.0, height: float = 4.0, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height))
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def plot_variants(data: dict) -> str:
    """Latency and throughput against quality; the Pareto front joined by a line, the selected variant starred."""
    fig, (lat_ax, thr_ax) = _figure(10.0, 4.2, ncols=2)
    points = data["points"]
    metric = data["quality_metric"]
    for ax, key, label in ((lat_ax, "latency_p50_ms", "latency p50 (ms, lower is better)"),
                           (thr_ax, "throughput_per_s", "throughput (items/s, higher is better)")):
        shown = [p for p in points if isinstance(p.get(key), (int, float))]
        front = sorted((p for p in shown if p["pareto"]), key=lambda p: p[key])
        ax.scatter([p[key] for p in shown], [p["quality"] for p in shown],
                   c=[BLUE if p["pareto"] else GREY for p in shown], s=40, zorder=3)
        if len(front) > 1:
            ax.plot([p[key] for p in front], [p["quality"] for p in front], color=BLUE, lw=1, ls="--",
                    label="Pareto front", zorder=2)
        for p in shown:
            ax.annotate(p["name"], (p[key], p["quality"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
            if p["selected"]:
                ax.scatter([p[key]], [p["quality"]], marker="*", s=300, c=ORANGE, edgecolors="black",
                           zorder=4, label="selected")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_stages(data: dict) -> str:
    """Waterfall: each stage a bar starting where the previous one ended."""
    bars = data["bars"]
    fig, (ax,) = _figure(8.0, 0.45 * len(bars) + 1.2)
    y = np.arange(len(bars))
    ax.barh(y, [b["seconds"] for b in bars], left=[b["start"] for b in bars], color=BLUE)
    for i, b in enumerate(bars):
        ax.text(b["start"] + b["seconds"], i, f" {b['seconds']:.2f} s", va="center", fontsize=8)
    ax.set_yticks(y, [b["stage"] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since start (total {data['total_s']:.1f} s)")
    ax.set_xlim(0, data["total_s"] * 1.15 or 1)
    return _png(fig)


def plot_throughput(data: dict) -> str:
    fig, (ax,) = _figure(8.0, 3.5)
    ax.plot([0.0, *data["t"]], [0, *data["files"]], marker="o", ms=3, color=BLUE)
    if data["t"] and data["t"][-1]:
        ax.set_title(f"{data['files'][-1] / data['t'][-1]:.1f} files/s while inferring", fontsize=10)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("files done (cumulative)")
    return _png(fig)


def plot_confidence(data: dict) -> str:
    """Histogram of final confidences (outline) over the pre-refinement one (grey bars) when refinement ran."""
    fig, (ax,) = _figure(8.0, 3.5)
    edges = np.asarray(data["bin_edges"])
    if data["before"] is not None:
        ax.bar(edges[:-1], data["before"], width=np.diff(edges), align="edge", color=GREY, alpha=0.6,
               label="before refinement (infer)")
    ax.stairs(data["after"], edges, color=BLUE, lw=2,
              label="after refinement (final)" if data["before"] is not None else "final")
    ax.set_xlabel("confidence")
    ax.set_ylabel("files")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _grouped_bars(ax, groups: list[str], series: dict[str, list], colors: list[str]) -> None:
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, ((name, values), color) in enumerate(zip(series.items(), colors)):
        heights = [v if isinstance(v, (int, float)) else 0.0 for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width=width, label=name, color=color)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0)
    ax.legend(fontsize=8)


def plot_refine_gains(data: dict) -> str:
    """Accuracy before/after per method when labels exist, else how many items each method touched/changed."""
    fig, (ax,) = _figure(8.0, 3.5)
    if any(isinstance(v, (int, float)) for v in data["accuracy_after"]):
        _grouped_bars(ax, data["methods"], {"accuracy before": data["accuracy_before"],
                                            "accuracy after": data["accuracy_after"]}, [GREY, GREEN])
        ax.set_ylabel("accuracy")
    else:
        _grouped_bars(ax, data["methods"], {"touched": data["touched"], "changed": data["changed"]}, [GREY, BLUE])
        ax.set_ylabel("items")
    return _png(fig)


def plot_refine_per_corruption(data: dict) -> str:
    fig, (ax,) = _figure(9.0, 3.8)
    palette = [GREY, BLUE, GREEN, ORANGE, RED, "#7d5ba6"]
    series = dict(zip(data["methods"], data["error_rate"]))
    _grouped_bars(ax, data["corruptions"], series, [palette[i % len(palette)] for i in range(len(series))])
    ax.set_ylabel("error rate (lower is better)")
    return _png(fig)


def plot_review_verdicts(data: dict) -> str:
    fig, (ax,) = _figure(6.0, 3.0)
    colors = {"agree": GREEN, "disagree": RED, "unsure": GREY}
    names = list(data["verdicts"])
    ax.bar(names, [data["verdicts"][n] for n in names], color=[colors.get(n, BLUE) for n in names])
    ax.set_ylabel("items")
    return _png(fig)


PLOTTERS: dict[str, Callable[[dict], str]] = {
    "variants": plot_variants,
    "stages": plot_stages,
    "throughput": plot_throughput,
    "confidence": plot_confidence,
    "refine_gains": plot_refine_gains,
    "refine_per_corruption": plot_refine_per_corruption,
    "review_verdicts": plot_review_verdicts,
}


def render_figures(figures: dict[str, dict]) -> dict[str, str]:
    """Base64 PNG of each figure, by name."""
    return {name: PLOTTERS[name](data) for name, data in figures.items()}
