"""Curves and panels of curves, the pieces of every figure (matplotlib, Agg backend: no
display needed); the studies' figures are in `cnn_cases.report.figures`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.transforms import Bbox

CurveKeys = Sequence[tuple[str, str, str]]  # (key in a curve row, line style, label)


def colours(n: int, colormap: str) -> list[Any]:
    """`n` colours: tab10's in turn, or evenly spaced along a sequential map (e.g. viridis)."""
    cmap = plt.get_cmap(colormap)
    if colormap == "tab10":
        return [cmap(i % 10) for i in range(n)]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def plot_curves(
    ax: Any,
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    keys: CurveKeys,
    *,
    colormap: str = "tab10",
) -> None:
    """On `ax`: one colour per run, one line style per key, errors in % against steps.

    Rows with `<key>_std` (means over seeds) get a band of ± one standard deviation."""
    for colour, (name, rows) in zip(colours(len(curves), colormap), curves.items(), strict=True):
        for key, style, label in keys:
            pts = [
                (r["step"], 100 * r[key], 100 * r.get(f"{key}_std", 0)) for r in rows if key in r
            ]
            if pts:
                xs, ys, sds = map(np.asarray, zip(*pts, strict=True))
                ax.plot(xs, ys, style, color=colour, marker=".", label=f"{name} {label}")
                if any(f"{key}_std" in r for r in rows):
                    ax.fill_between(xs, ys - sds, ys + sds, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def label_points(
    ax: Any,
    points: Sequence[tuple[float, float, str]],
    colours: Sequence[Any],
    *,
    fontsize: float = 8,
) -> None:
    """Labels each (x, y, text) point beside it: above right, else below right, above left or
    below left, the first place that covers no other point and no earlier label. Call it once
    the axes' scales and limits are set."""
    ax.autoscale_view()
    renderer = ax.figure.canvas.get_renderer()
    to_points = 72 / ax.figure.dpi
    centres = ax.transData.transform([(x, y) for x, y, _ in points])
    marks = [Bbox.from_bounds(cx - 4, cy - 4, 8, 8) for cx, cy in centres]
    taken = list(marks)
    for (x, y, text), colour, mark in zip(points, colours, marks, strict=True):
        label = ax.annotate(
            text, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=fontsize, color=colour
        )
        w, h = (d * to_points for d in label.get_window_extent(renderer).size)
        for offset in ((5, 3), (5, -3 - h), (-5 - w, 3), (-5 - w, -3 - h), (5, 3)):
            label.xyann = offset
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in taken if b is not mark):
                break
        taken.append(box)


def panels_figure(
    panels: Sequence[tuple[str, Mapping[str, Sequence[Mapping[str, float]]], CurveKeys]],
    path: str,
    *,
    title: str = "",
    log_y: bool = False,
    colormap: str = "tab10",
    share_y: bool = False,
) -> None:
    """Side-by-side panels of `plot_curves`, each given as (panel title, curves, keys)."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.8 * len(panels), 4.2), squeeze=False, sharey=share_y
    )
    for ax, (panel_title, curves, keys) in zip(axes[0], panels, strict=True):
        plot_curves(ax, curves, keys, colormap=colormap)
        ax.set_title(panel_title, fontsize=10)
        if log_y:
            ax.set_yscale("log")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(matplotlib.ticker.FormatStrFormatter("%g"))
    save(fig, path, title)


def save(fig: Any, path: str, title: str = "", dpi: int = 120) -> None:
    """Titles, lays out, writes and closes `fig`."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
