"""Inception modules with and without 1x1 bottlenecks (Szegedy et al. 2015, Figure 2).

`run(config, workdir)` prints the lecture's module arithmetic (28x28x192 -> 5x5/32 with and
without a 16-filter bottleneck; inception (3a) naive vs with reductions), then trains one
CIFAR-scale Inception network twice from the same module widths, naive modules vs bottleneck
modules, with the same recipe (plus, with `equal_macs`, the bottleneck network widened to the
naive network's multiply-adds). Writes results.json (per variant: width, params, macs,
step_seconds, errors, steps, seconds), module_arithmetic.json, curves.csv and
inception_bottleneck.png.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from cnn_cases.analysis import costs, lecture
from cnn_cases.engine import launch, rundir
from cnn_cases.models import inception
from cnn_cases.report import plotting, tables
from cnn_cases.studies import common

NAME = "inception_bottleneck"
PRESETS = launch.PRESETS
VARIANTS = ("naive", "bottleneck")
EQUAL_MACS_VARIANT = "bottleneck_equal_macs"


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    Knobs: `width_multiplier` (of GoogLeNet's widths, both networks); `equal_macs` adds the
    third network (see `equal_macs_width`).

    full: the CIFAR-10 recipe of He et al. (batch 128, SGD momentum 0.9, weight decay 1e-4,
        lr 0.1 divided by 10 at 32k and 48k, 64k iterations, pad-4 crop + flip, per-pixel
        mean) for both networks at 1/4 of GoogLeNet's widths (bottleneck 121,962 parameters,
        15.5M multiply-adds per image; naive 1,052,170 and 93.9M). Expected: the bottleneck
        net about 6x cheaper for a test error within a couple of points. Cost: 2 x 64k steps;
        not measured on an accelerator here.
    colab: one Colab session on its T4: half of GoogLeNet's widths (naive 373.0M
        multiply-adds per image, bottleneck 59.3M; at full width the naive net alone costs
        1.49G, and 15 minutes would buy about 1,000 steps), 4,000 steps of 128, lr 0.1 /10 at
        2,000 and 3,000. About 14 minutes by an estimate from multiply-adds
        (`common.estimate_minutes`), twice that with `equal_macs`; not measured.
    cpu: the same comparison at 1/8 width and 700 steps of 128 (lr 0.1, /10 at 550, weight
        decay 5e-4) on cifar10, for 2 CPU cores. Measured on a 2-core CPU (cifar10_jpeg):
        naive 265,562 parameters, 23.8M multiply-adds; bottleneck 31,534, 4.2M (5.7x fewer
        multiply-adds); with `equal_macs` the bottleneck net at width 0.313: 189,927
        parameters, 23.8M multiply-adds. See the README for errors and times.
    smoke: seconds; for tests and notebooks (1/16 width, modules (3a) and (4a) only, 3 steps
        of 16).
    """
    c = common.base_config(width_multiplier=0.25, equal_macs=False)
    c.preset = common.check_preset(preset, PRESETS)
    if c.preset == launch.ACCELERATOR_PRESET:
        c.update(common.FULL_CADENCE)
        c.expected_minutes = 2 * 20.0
    elif c.preset == launch.COLAB_PRESET:
        c.update(common.COLAB_CADENCE)
        c.update(width_multiplier=0.5, num_steps=4_000, lr_boundaries=(2_000, 3_000))
        c.expected_minutes = 14.0
    elif c.preset == "smoke":
        common.smoke(c).width_multiplier = 0.0625
        c.model_kwargs.stages = inception.SMOKE_STAGES
    else:
        c.update(common.CPU_CADENCE)
        c.update(width_multiplier=0.125, num_steps=700, lr_boundaries=(550,), expected_minutes=7.5)
    return c


def expected_minutes(config: ml_collections.ConfigDict) -> float:
    """The preset's time; the third net costs the naive net's multiply-adds and runs slower
    than it on a CPU (more, thinner convolutions): the cpu preset took twice as long with it."""
    return config.expected_minutes * (2 if config.equal_macs else 1)


def validate(config: ml_collections.ConfigDict) -> None:
    if not config.width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, not {config.width_multiplier}")


def variant_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """naive and bottleneck: the same InceptionCifar widths, the same recipe (plus
    `bottleneck_equal_macs` at its own width when `config.equal_macs`)."""
    validate(config)
    widths = {v: config.width_multiplier for v in VARIANTS}
    if config.equal_macs:
        widths[EQUAL_MACS_VARIANT] = equal_macs_width(config)
    return {v: _net(config, v != "naive", width) for v, width in widths.items()}


def _net(config: ml_collections.ConfigDict, bottleneck: bool, width: float) -> Any:
    return common.variant_config(
        config, "inception_cifar", bottleneck=bottleneck, width_multiplier=width
    )


def variant_cost(
    config: ml_collections.ConfigDict, variant: ml_collections.ConfigDict
) -> costs.ModelCost:
    """Parameters and multiply-adds of one variant on the study's images and classes."""
    return costs.model_cost(common.create_model(config, variant), common.image_shape(config))


def macs(config: ml_collections.ConfigDict, bottleneck: bool, width: float) -> int:
    """Multiply-adds per image of the naive or bottleneck network at `width`."""
    return variant_cost(config, _net(config, bottleneck, width)).macs


def equal_macs_width(config: ml_collections.ConfigDict, iterations: int = 12) -> float:
    """The smallest width multiplier (to 3 decimals) at which the bottleneck network costs at
    least the naive network's multiply-adds at `config.width_multiplier` (bisection; widths
    are rounded to whole channels, so the costs match to within a channel's worth)."""
    target = macs(config, False, config.width_multiplier)
    lo, hi = config.width_multiplier, 2 * config.width_multiplier
    while macs(config, True, hi) < target:
        lo, hi = hi, 2 * hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(config, True, mid) < target else (lo, mid)
    return math.ceil(hi * 1000) / 1000


def module_arithmetic() -> dict[str, dict[str, int]]:
    """The lecture's 5x5 example and inception (3a), naive vs with reductions, on 28x28x192."""
    ex = lecture.bottleneck_example()
    out = {
        "5x5/32 on 28x28x192": {"params": ex.direct.params, "macs": ex.direct.macs},
        "1x1/16 then 5x5/32 on 28x28x192": {
            "params": ex.bottleneck.params,
            "macs": ex.bottleneck.macs,
        },
    }
    widths = inception.GOOGLENET_STAGES[0][0]
    for bottleneck in (False, True):
        cost = costs.model_cost(
            inception.InceptionModule(*widths, bottleneck=bottleneck), (28, 28, 192)
        )
        name = "inception(3a) " + ("with 1x1 reductions" if bottleneck else "naive")
        out[name] = {"params": cost.params, "macs": cost.macs}
    return out


def arithmetic_text(arith: Mapping[str, Mapping[str, int]]) -> str:
    rows = [(k, f"{v['params']:,}", f"{v['macs']:,}") for k, v in arith.items()]
    return tables.format_table(("module (per image)", "parameters", "multiply-adds"), rows)


def run(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> common.Results | None:
    """Trains the networks; writes results.json, module_arithmetic.json, curves.csv, figure."""
    say = common.say(config)
    arith = module_arithmetic()
    say(arithmetic_text(arith))
    configs = variant_configs(config)
    model_costs = {v: variant_cost(config, c) for v, c in configs.items()}
    for v, cost in model_costs.items():
        say(f"{v}: {cost.params:,} parameters, {cost.macs:,} multiply-adds per image")
    runs = common.run_variants(configs, workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {
        v: {
            "width_multiplier": configs[v].model_kwargs.width_multiplier,
            "macs": model_costs[v].macs,
            "step_seconds": common.median_step_seconds(
                common.net_dir(workdir, v), config.batch_size
            ),
            **common.base_row(rs),
        }
        for v, rs in runs.items()
    }
    curves = {v: common.seed_curves(rs) for v, rs in runs.items()}
    title = common.title(config, f", width x{config.width_multiplier:g}")
    rundir.write_json(os.path.join(workdir, "module_arithmetic.json"), arith)
    common.write_outputs(
        workdir,
        results,
        curves,
        lambda path: plotting.cost_error_figure(results, curves, path, title=title),
        f"{NAME}.png",
    )
    return results


COLUMNS = (
    ("width_multiplier", "width"),
    ("params", "params"),
    ("macs", "mult-adds"),
    ("step_seconds", "s/step"),
    *common.RUN_COLUMNS,
)


def summary(results: common.Results, workdir: str) -> str:
    """The table, how many times cheaper the bottleneck net is, and the test error difference."""
    del workdir  # every number is in `results`
    n, b = results["naive"], results["bottleneck"]
    text = (
        f"{common.table(results, COLUMNS)}\n"
        f"bottleneck vs naive: {n['macs'] / b['macs']:.1f}x fewer multiply-adds, "
        f"{n['params'] / b['params']:.1f}x fewer parameters, test error "
        f"{100 * (b['test_error'] - n['test_error']):+.2f} points"
    )
    if EQUAL_MACS_VARIANT in results:
        e = results[EQUAL_MACS_VARIANT]
        text += (
            f"\nbottleneck at equal multiply-adds vs naive: {e['macs'] / n['macs']:.2f}x the "
            f"multiply-adds, {n['params'] / e['params']:.1f}x fewer parameters, test error "
            f"{100 * (e['test_error'] - n['test_error']):+.2f} points"
        )
    return text
