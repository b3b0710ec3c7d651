"""LeNet-5 (LeCun et al. 1998): the classic variant (tanh, average pooling) vs the modern one
(ReLU, max pooling), on mnist (default) or fashion_mnist.

`run(config, workdir)` prints the per-layer shape table, trains both variants and writes
results.json (per variant: activation, pool, errors, params, steps, seconds), curves.csv and
lenet5.png.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.engine import launch
from cnn_cases.report import plotting
from cnn_cases.studies import common

NAME = "lenet5"
PRESETS = launch.PRESETS
VARIANTS: dict[str, dict[str, str]] = {
    "classic": {"activation": "tanh", "pool": "avg"},
    "modern": {"activation": "relu", "pool": "max"},
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (all: mnist, per-pixel mean, no augmentation).

    full: 20 epochs of 60k at batch 128 (9,400 steps), SGD momentum 0.9, lr 0.05 divided by
        10 at 60 % and 85 %, weight decay 5e-4. Expected: modern about 0.7-0.9 % test error
        on mnist; not measured on an accelerator here.
    colab: the full preset: LeNet-5's 0.4M multiply-adds per image leave a Colab T4 idle
        (the estimate from multiply-adds is under a minute; launch overheads set the time).
    cpu: the same recipe for 4,000 steps of 128 (8.5 epochs), lr divided by 10 at 2,800 and
        3,600. Measured on 2 CPU cores: mnist classic 1.14 % test error, modern 0.69 %
        (LeCun et al.: 0.95 %); about 1.5 minutes for both variants.
    smoke: seconds; for tests and notebooks (3 steps of 16).
    """
    c = common.base_config()
    c.preset = common.check_preset(preset, PRESETS)
    c.dataset = "mnist"
    c.augment = False
    c.weight_decay = 5e-4
    c.learning_rate = 0.05
    if c.preset in (launch.ACCELERATOR_PRESET, launch.COLAB_PRESET):
        c.num_steps = 9_400
        c.lr_boundaries = (5_600, 8_000)
        c.update(eval_every=470, curve_eval_examples=10_000, checkpoint_every=1_000, log_every=470)
        c.expected_minutes = 2 * 2.0
    elif c.preset == "smoke":
        common.smoke(c)
    else:
        c.num_steps = 4_000
        c.lr_boundaries = (2_800, 3_600)
        c.update(eval_every=500, curve_eval_examples=2_000, checkpoint_every=1_000, log_every=500)
        c.final_train_eval_examples = 10_000
        c.expected_minutes = 1.5
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """LeNet-5 takes 28x28 images (padded to 32x32 inside the model) or 32x32 and larger."""
    h, w, _ = common.image_shape(config)
    if (h, w) != (28, 28) and min(h, w) < 32:
        raise ValueError(
            f"LeNet-5 needs 28x28 or at least 32x32 images; {config.dataset} gives {h}x{w} "
            f"(downsample={config.downsample})"
        )


def variant_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """classic and modern: LeNet-5 with the activation and pooling of each."""
    return {v: common.variant_config(config, "lenet5", **kw) for v, kw in VARIANTS.items()}


def shape_table(config: ml_collections.ConfigDict) -> str:
    """Per-layer output shapes, parameters and multiply-adds of LeNet-5 on the study's images."""
    variant = variant_configs(config)["classic"]
    cost = costs.model_cost(common.create_model(config, variant), common.image_shape(config))
    return cost.table()


def run(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> common.Results | None:
    """Trains classic and modern LeNet-5; writes results.json, curves.csv and lenet5.png."""
    validate(config)
    say = common.say(config)
    say("LeNet-5 (28x28 digits are zero-padded to 32x32 inside the model; both variants have")
    say("the same shapes; pooling has no parameters):")
    say(shape_table(config))
    runs = common.run_variants(variant_configs(config), workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {v: {**VARIANTS[v], **common.base_row(rs)} for v, rs in runs.items()}
    curves = {v: common.seed_curves(rs) for v, rs in runs.items()}
    title = common.title(config)
    common.write_outputs(
        workdir,
        results,
        curves,
        lambda path: figure(curves, path, title=title),
        f"{NAME}.png",
    )
    return results


def figure(curves: common.Curves, path: str, *, title: str = "") -> None:
    """Train (dashed) and test (solid) error of both variants, log scale."""
    plotting.panels_figure(
        [
            (
                "LeNet-5: train (dashed) vs test (solid)",
                curves,
                (("train_error", "--", "train"), ("test_error", "-", "test")),
            )
        ],
        path,
        title=title,
        log_y=True,
    )


COLUMNS = (
    ("activation", "activation"),
    ("pool", "pool"),
    ("params", "params"),
    *common.RUN_COLUMNS,
)


def summary(results: common.Results, workdir: str) -> str:
    del workdir  # every number is in `results`
    return common.table(results, COLUMNS)
