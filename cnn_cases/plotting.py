"""Figures written next to the results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def depth_figure(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    info: Mapping[str, Mapping[str, Any]],
    path: str,
    *,
    title: str = "",
) -> None:
    """He et al. Figure 6 style: plain nets left, ResNets right; train dashed, test solid."""
    depths = sorted({int(v["depth"]) for v in info.values()})
    cmap = plt.get_cmap("viridis")
    colour = {d: cmap(i / max(len(depths) - 1, 1) * 0.85) for i, d in enumerate(depths)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, residual in zip(axes, (False, True), strict=True):
        for name, meta in sorted(info.items(), key=lambda kv: kv[1]["depth"]):
            if bool(meta["residual"]) != residual:
                continue
            rows = curves.get(name, [])
            steps = [r["step"] for r in rows]
            c = colour[int(meta["depth"])]
            ax.plot(steps, [100 * r["train_error"] for r in rows], "--", color=c, lw=1.5)
            ax.plot(
                steps, [100 * r["test_error"] for r in rows], "-", color=c, lw=2, label=f"{name}"
            )
        ax.set_title("ResNets" if residual else "plain nets")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(title="solid: test, dashed: train", fontsize=8, title_fontsize=8)
    axes[0].set_ylabel("error (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_figure(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    keys: Sequence[tuple[str, str]] = (("train_error", "--"), ("test_error", "-")),
    title: str = "",
    ylabel: str = "error (%)",
) -> None:
    """One line per run and key (e.g. train dashed, test solid) against steps."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, (name, rows) in enumerate(curves.items()):
        steps = [r["step"] for r in rows]
        for key, style in keys:
            if rows and key in rows[0]:
                ax.plot(
                    steps,
                    [100 * r[key] for r in rows],
                    style,
                    color=cmap(i % 10),
                    label=f"{name} {key.replace('_', ' ')}",
                )
    ax.set_xlabel("iterations")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
