"""Figures written next to the results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CurveKeys = Sequence[tuple[str, str, str]]  # (key in a curve row, line style, label)


def _colours(n: int, colormap: str) -> list[Any]:
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
    colours = _colours(len(curves), colormap)
    for colour, (name, rows) in zip(colours, curves.items(), strict=True):
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
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cost_error_figure(
    results: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    title: str = "",
) -> None:
    """Left: final test error against multiply-adds per image (log scale), one point per run,
    labelled with its parameters; right: train (dashed) and test (solid) curves."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    cmap = plt.get_cmap("tab10")
    placed: list[tuple[float, float]] = []
    for i, (name, r) in enumerate(results.items()):
        x, y = r["macs"], 100 * r["test_error"]
        left.scatter(x, y, s=60, color=cmap(i % 10), zorder=3)
        # Stack the labels of points that (nearly) coincide instead of printing them over
        # each other.
        near = sum(abs(math.log10(x / px)) < 0.2 and abs(y - py) < 2.0 for px, py in placed)
        placed.append((x, y))
        left.annotate(
            f"{name}\n{r['params']:,} params",
            (x, y),
            textcoords="offset points",
            xytext=(6, 6 - 24 * near),
            fontsize=8,
            color=cmap(i % 10),
        )
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # crowded on 1 decade
    left.set_xlabel("multiply-adds per image")
    left.set_ylabel("final test error (%)")
    left.grid(alpha=0.3, which="both")
    left.margins(x=0.4, y=0.3)
    left.set_title("cost vs accuracy", fontsize=10)
    plot_curves(right, curves, (("train_error", "--", "train"), ("test_error", "-", "test")))
    right.set_title("learning curves", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def why_resnets_figure(
    results: Mapping[str, Any],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    title: str = "",
) -> None:
    """2x2: training on after deepening; He et al. Figure 7 by layer and sorted; |dL/dW|."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4))
    (cont, gnorm), (by_layer, ranked) = axes
    plot_curves(cont, curves, (("train_error", "--", "train"), ("test_error", "-", "test")))
    for name, r in results["identity"].items():
        cont.axhline(100 * r["deep_test_error"], color="grey", ls=":", lw=1)
        cont.annotate(f"{name} at the start", (0, 100 * r["deep_test_error"]), fontsize=7)
    cont.set_title("training on after appending W = 0, b = 0 blocks", fontsize=10)
    colours = _colours(len(results["responses"]), "tab10")
    for colour, (name, stds) in zip(colours, results["responses"].items(), strict=True):
        style = "-" if name.startswith("resnet") else "--"
        by_layer.plot(range(1, len(stds) + 1), stds, style, color=colour, label=name)
        ranked.plot(
            range(1, len(stds) + 1), sorted(stds, reverse=True), style, color=colour, label=name
        )
    by_layer.set_xlabel("layer index (original order)")
    ranked.set_xlabel("layer index (sorted by magnitude)")
    for ax in (by_layer, ranked):
        ax.set_ylabel("std of the 3x3 layer's response")
        ax.set_title("He et al. Figure 7: plain dashed, ResNet solid", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for i, (name, g) in enumerate(results["gradients"].items()):
        for when, norms in g.items():
            style = "-" if when == "trained" else ":"
            gnorm.plot(
                range(1, len(norms) + 1),
                norms,
                style,
                color=_colours(2, "tab10")[i],
                label=f"{name} {when}",
            )
    gnorm.set_yscale("log", nonpositive="mask")
    gnorm.set_xlabel("conv layer (input to output)")
    gnorm.set_ylabel("|dL/dW|")
    gnorm.set_title("gradient norm per layer, one batch", fontsize=10)
    gnorm.grid(alpha=0.3, which="both")
    gnorm.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
