"""Every study's figure, one function each, named after the study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib import ticker

from cnn_cases.report import plotting

TRAIN_TEST = (("train_error", "--", "train"), ("test_error", "-", "test"))


def resnet_depth(
    results: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    title: str = "",
) -> None:
    """He et al. Figure 6 style: plain nets left, ResNets right; train dashed, test solid."""
    panels = []
    for residual in (False, True):
        names = sorted(
            (n for n, r in results.items() if bool(r["residual"]) == residual),
            key=lambda n: results[n]["depth"],
        )
        panels.append(
            (
                "ResNets" if residual else "plain nets",
                {n: curves.get(n, []) for n in names},
                TRAIN_TEST,
            )
        )
    plotting.panels_figure(panels, path, title=title, colormap="viridis", share_y=True)


def lenet5(
    curves: Mapping[str, Sequence[Mapping[str, float]]], path: str, *, title: str = ""
) -> None:
    """Train (dashed) and test (solid) error of both variants, log scale."""
    panels = [("LeNet-5: train (dashed) vs test (solid)", curves, TRAIN_TEST)]
    plotting.panels_figure(panels, path, title=title, log_y=True)


def googlenet_aux(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    aux_after: Sequence[str],
    title: str = "",
) -> None:
    """Left: the three heads of the run with them; right: train vs test of both runs."""
    heads = (
        ("test_error", "-", "main"),
        ("aux1_test_error", "--", f"aux1 ({aux_after[0]})"),
        ("aux2_test_error", ":", f"aux2 ({aux_after[1]})"),
    )
    panels = [
        (
            "heads of the run with aux classifiers: test error",
            {"with_aux": curves["with_aux"]},
            heads,
        ),
        ("main head: train (dashed) vs test (solid)", curves, TRAIN_TEST),
    ]
    plotting.panels_figure(panels, path, title=title)


def inception_bottleneck(
    results: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    title: str = "",
) -> None:
    """Left: final test error against multiply-adds per image (log scale), one point per run,
    labelled with its parameters; right: train (dashed) and test (solid) curves."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    colours = plotting.colours(len(results), "tab10")
    points = [
        (r["macs"], 100 * r["test_error"], f"{n}\n{r['params']:,} params")
        for n, r in results.items()
    ]
    left.scatter([p[0] for p in points], [p[1] for p in points], s=60, color=colours, zorder=3)
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(ticker.NullFormatter())  # crowded on 1 decade
    left.set_xlabel("multiply-adds per image")
    left.set_ylabel("final test error (%)")
    left.grid(alpha=0.3, which="both")
    left.margins(x=0.4, y=0.3)
    plotting.label_points(left, points, colours)
    left.set_title("cost vs accuracy", fontsize=10)
    plotting.plot_curves(right, curves, TRAIN_TEST)
    right.set_title("learning curves", fontsize=10)
    plotting.save(fig, path, title)


def why_resnets(
    results: Mapping[str, Any],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    title: str = "",
) -> None:
    """2x2: training on after deepening; He et al. Figure 7 by layer and sorted; |dL/dW|."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4))
    (cont, gnorm), (by_layer, ranked) = axes
    plotting.plot_curves(cont, curves, TRAIN_TEST)
    for name, r in results["identity"].items():
        cont.axhline(100 * r["deep_test_error"], color="grey", ls=":", lw=1)
        cont.annotate(f"{name} at the start", (0, 100 * r["deep_test_error"]), fontsize=7)
    cont.set_title("training on after appending W = 0, b = 0 blocks", fontsize=10)
    colours = plotting.colours(len(results["responses"]), "tab10")
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
                color=plotting.colours(2, "tab10")[i],
                label=f"{name} {when}",
            )
    gnorm.set_yscale("log", nonpositive="mask")
    gnorm.set_xlabel("conv layer (input to output)")
    gnorm.set_ylabel("|dL/dW|")
    gnorm.set_title("gradient norm per layer, one batch", fontsize=10)
    gnorm.grid(alpha=0.3, which="both")
    gnorm.legend(fontsize=8)
    plotting.save(fig, path, title, dpi=110)


def history(
    results: Mapping[str, Mapping[str, Any]],
    path: str,
    *,
    frontier: Sequence[str] = (),
    machine: str = "",
    title: str = "",
) -> None:
    """Test error against multiply-adds per image and against parameters (log x), one
    labelled point per net (± one standard deviation over the seeds where there are several),
    the nets of `frontier` joined on the first; then each net's measured seconds per step."""
    fig, (by_macs, by_params, speed) = plt.subplots(
        1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": (1, 1, 0.7)}
    )
    years = sorted({r["year"] for r in results.values()})
    cmap = plt.get_cmap("viridis")
    colours = [
        cmap(0.9 * years.index(r["year"]) / max(len(years) - 1, 1)) for r in results.values()
    ]
    for ax, key, xlabel in (
        (by_macs, "macs", "multiply-adds per image"),
        (by_params, "params", "parameters"),
    ):
        points = [(r[key], 100 * r["test_error"], r["net"]) for r in results.values()]
        for (x, y, _), r, c in zip(points, results.values(), colours, strict=True):
            err = 100 * r.get("test_error_std", 0.0)
            ax.errorbar(x, y, yerr=err or None, fmt="o", ms=6, capsize=3, color=c)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("final test error (%)")
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.2, y=0.12)
        plotting.label_points(ax, points, ["black"] * len(points), fontsize=7.5)
    if frontier:
        pts = [(results[n]["macs"], 100 * results[n]["test_error"]) for n in frontier]
        by_macs.step(*zip(*pts, strict=True), "--", where="post", color="grey", lw=1, zorder=0)
    by_macs.set_title("error against cost (dashed: the frontier)", fontsize=10)
    by_params.set_title("error against size", fontsize=10)
    names = list(results)
    seconds = [results[n]["step_seconds"] or 0.0 for n in names]
    speed.barh(range(len(names)), seconds, color=colours)
    speed.set_yticks(range(len(names)), [results[n]["net"] for n in names], fontsize=7.5)
    speed.invert_yaxis()
    speed.set_xlabel("seconds per train step (median)")
    speed.grid(alpha=0.3, axis="x")
    speed.set_title(f"measured on {machine}" if machine else "measured", fontsize=9)
    plotting.save(fig, path, title)
