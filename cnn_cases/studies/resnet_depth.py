"""Plain nets vs ResNets at several depths (He et al. 2016, section 4.2, Figure 6).

`run(config, workdir)` trains `plainD` and `resnetD` for each depth D, then writes
`results.json`, `curves.csv` and `resnet_depth.png`. A plain net's training error rises with
depth (an optimisation problem, not overfitting); a ResNet's does not.
"""

from __future__ import annotations

import statistics
from typing import Any

import ml_collections

from cnn_cases.engine import launch
from cnn_cases.models import resnet
from cnn_cases.report import plotting
from cnn_cases.studies import common

NAME = "resnet_depth"
PRESETS = launch.PRESETS


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    full: He et al. section 4.2 exactly: widths 16/32/64, batch 128, SGD momentum 0.9,
        weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k, 64k iterations (ResNet-110
        warms up at lr 0.01 for 400 iterations), pad-4 crop + flip, per-pixel mean.
        `--config.train_split="train[:45000]"` trains on the 45k split of the paper's schedule
        search. Expected: train error falls with depth for ResNets, rises for plain nets;
        ResNet-110 test error about 6.4 % (Table 6). Cost: 8 nets x 64k steps; on one
        H100-class GPU about 10-20 minutes per net (not measured here).
    cpu: the same comparison shrunk to a 2-core CPU: widths 8/16/32, CIFAR averaged down
        to 16x16 (pad-2 crop + flip), batch 128, 900 steps (lr 0.1, 0.01 from step 720,
        weight decay 5e-4), ResNet branches' last BN scale initialised to 0
        (`common.CPU_CIFAR`). Measured on a 2-core CPU (cifar10_jpeg): about 8 minutes a
        seed; over seeds 0-4 plain56's training error is 27.3 +- 4.2 points above
        plain20's and resnet56's 1.3 +- 0.9 points below resnet20's (below it in every seed).
    colab: one Colab session on its T4: He et al.'s nets at full width and resolution, lr
        0.1 for 3,000 steps of 128, /10 at 1,500 and 2,250 (`common.COLAB_CIFAR`). About 16
        minutes by an estimate from multiply-adds (`common.estimate_minutes`); not measured.
    smoke: seconds; for tests and notebooks (depths 8 and 14, width 4, 3 steps).
    """
    c = common.base_config(
        depths=(20, 32, 44, 56),
        width=16,
        zero_init_residual=False,
        shortcut="A",
        warmup_from_depth=110,  # He et al.: ResNet-110 warms up at lr 0.01
    )
    c.preset = common.check_preset(preset, PRESETS)
    c.dataset = "cifar10"
    if c.preset == launch.ACCELERATOR_PRESET:
        c.num_steps = 64_000
        c.lr_boundaries = (32_000, 48_000)
        c.warmup_steps = 400
        c.update(common.FULL_CADENCE)
        c.expected_minutes = 8 * 15.0
    elif c.preset == launch.COLAB_PRESET:
        c.update(common.COLAB_CIFAR)
        c.expected_minutes = 16.0
    elif c.preset == "smoke":
        common.smoke(c)
        c.depths = (8, 14)
        c.width = 4
    else:  # cpu, also the stand-in until the backend picks
        c.update(common.CPU_CADENCE)
        c.update(common.CPU_CIFAR)  # 16x16 images: 4x fewer multiply-adds per step
        c.expected_minutes = 9.0
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """One-line ValueError for a depth that is not 6n+2 or an unknown shortcut."""
    for d in config.depths:
        resnet.cifar_depth_to_blocks(d)
    if config.shortcut not in ("A", "B"):
        raise ValueError(f"shortcut={config.shortcut!r} (valid: A, B)")


def net_names(depths: Any) -> list[str]:
    return [f"{kind}{d}" for kind in ("plain", "resnet") for d in depths]


def variant_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """plainD and resnetD for every depth: same widths, recipe and shortcut option."""
    validate(config)
    return {name: common.cifar_net_config(config, name) for name in net_names(config.depths)}


def run(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> common.Results | None:
    """Trains every net, writes the study's files and returns `results` (None if stopped)."""
    runs = common.run_variants(variant_configs(config), workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {
        name: {
            "depth": common.cifar_depth(name),
            "residual": name.startswith("resnet"),
            **common.base_row(rs),
        }
        for name, rs in runs.items()
    }
    curves = {n: common.seed_curves(rs) for n, rs in runs.items()}
    title = common.title(config, f", width {config.width}")
    common.write_outputs(
        workdir,
        results,
        curves,
        lambda path: figure(results, curves, path, title=title),
        f"{NAME}.png",
    )
    return results


def verdict(results: common.Results, *, tolerance: float = 0.005) -> tuple[bool, str]:
    """Deepest plain net trains worse than the shallowest; deepest ResNet not worse.

    One seed: "worse" and "not worse" allow `tolerance` (0.5 point by default), about what
    one short CPU run's training error moves from seed to seed. Several seeds: the gaps are
    taken seed by seed; the plain gap's mean must exceed twice its standard deviation over the
    seeds (and the tolerance), the ResNet gap's mean must not.
    """
    ends = {}
    for residual in (False, True):
        rows = sorted(
            ((v["depth"], v) for v in results.values() if v["residual"] == residual),
            key=lambda row: row[0],
        )
        if len(rows) < 2:
            return False, "degradation not tested: need at least two depths"
        ends[residual] = rows[0], rows[-1]
    seeds = "train_errors" in next(iter(results.values()))
    parts, ok = [], True
    for residual, must_rise in ((False, True), (True, False)):
        (d0, shallow), (d1, deep) = ends[residual]
        kind = "resnet" if residual else "plain"
        if seeds:
            gaps = [
                a - b for a, b in zip(deep["train_errors"], shallow["train_errors"], strict=True)
            ]
            mean, std = statistics.fmean(gaps), statistics.stdev(gaps)
            bar = max(2 * std, tolerance)
            what = f"{mean * 100:+.2f} ± {std * 100:.2f} points"
        else:
            mean, bar = deep["train_error"] - shallow["train_error"], tolerance
            what = f"{mean * 100:+.2f} points"
        rises = mean > bar
        ok &= rises == must_rise
        parts.append(f"{kind}{d1} train error {what} vs {kind}{d0}")
    n = len(next(iter(results.values())).get("train_errors", [0]))
    rule = (
        f"over {n} seeds; a rise counts above 2 std of the seeds' gaps, at least "
        f"{tolerance * 100:.1f} point"
        if seeds
        else f"tolerance {tolerance * 100:.1f} point"
    )
    what = "REPRODUCED" if ok else "NOT reproduced"
    return ok, f"degradation {what}: {parts[0]}; {parts[1]} ({rule})"


COLUMNS = (("params", "params"), *common.RUN_COLUMNS)


def summary(results: common.Results, workdir: str) -> str:
    """The final table and the verdict."""
    del workdir  # every number is in `results`
    columns = COLUMNS
    if any("train_errors" in r for r in results.values()):
        columns = (*COLUMNS, ("train_errors", "train err per seed"))
    return f"{common.table(results, columns)}\n{verdict(results)[1]}"


def figure(results: common.Results, curves: common.Curves, path: str, *, title: str = "") -> None:
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
                (("train_error", "--", "train"), ("test_error", "-", "test")),
            )
        )
    plotting.panels_figure(panels, path, title=title, colormap="viridis", share_y=True)
