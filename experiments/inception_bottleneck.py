"""Inception modules with and without 1x1 bottlenecks (Szegedy et al. 2015, Figure 2).

    python -m experiments.inception_bottleneck                 # preset from the backend
    python -m experiments.inception_bottleneck --preset=cpu --dataset=cifar10_jpeg \\
        --data_dir=../shared/tfds --workdir=runs/inception_bottleneck

Prints the lecture's module arithmetic (28x28x192 -> 5x5/32 with and without a 16-filter
bottleneck; inception (3a) naive vs with reductions), then trains one CIFAR-scale Inception
network twice from the same module widths, naive modules vs bottleneck modules, with the
same recipe. Writes results.json (per variant: params, macs, step_seconds, train_error,
test_error, steps, seconds), module_arithmetic.json, curves.csv and inception_bottleneck.png
to --workdir; rerunning resumes. See `get_config` for the presets.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
from absl import flags

from cnn_cases import studies
from experiments import common

PRESETS = ("full", "cpu", "smoke")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """The study's config for `preset`.

    full: the CIFAR-10 recipe of He et al. (batch 128, SGD momentum 0.9, weight decay 1e-4,
        lr 0.1 divided by 10 at 32k and 48k, 64k iterations, pad-4 crop + flip, per-pixel
        mean) for both networks at 1/4 of GoogLeNet's widths (bottleneck 121,962 parameters,
        15.5M multiply-adds per image; naive 1,052,170 and 93.9M). Expected: the bottleneck
        net about 6x cheaper for a test error within a couple of points. Cost: 2 x 64k steps;
        not measured on an accelerator here.
    cpu: the same comparison at 1/8 width and 700 steps of 128 (lr 0.1, /10 at 550, weight
        decay 5e-4) on cifar10, for 2 CPU cores. Measured on cifar10_jpeg, idle cores: naive
        265,562 parameters, 23.8M multiply-adds, 28.32 % test error; bottleneck 31,534, 4.2M,
        35.71 % (5.7x fewer multiply-adds, 7.4 points worse this early at this width); with
        --equal_macs, the bottleneck net at width 0.313: 189,927 parameters, 23.8M
        multiply-adds, 29.23 %. 0.39 / 0.20 / 0.62 s per step; 7.5 minutes for two nets, 16
        with the third. Command:
        python -m experiments.inception_bottleneck --preset=cpu --dataset=cifar10_jpeg \\
            --data_dir=../shared/tfds --workdir=runs/inception_bottleneck [--equal_macs]
    smoke: seconds; for tests and notebooks (1/16 width, modules (3a) and (4a) only, 3 steps
        of 16).
    """
    c = studies.inception_config()
    c.preset = preset
    c.dataset = "cifar10"
    if preset == "full":
        c.width_multiplier = 0.25
        c.eval_every = 2_000
        c.curve_eval_examples = 10_000
        c.checkpoint_every = 2_000
        c.log_every = 500
        c.expected_minutes = 2 * 20.0
    elif preset == "cpu":
        c.width_multiplier = 0.125
        c.num_steps = 700
        c.lr_boundaries = (550,)
        c.weight_decay = 5e-4
        c.eval_every = 100
        c.curve_eval_examples = 1_000
        c.final_train_eval_examples = 5_000
        c.checkpoint_every = 100
        c.log_every = 50
        c.expected_minutes = 7.5
    elif preset == "smoke":
        studies.smoke(c)
        c.width_multiplier = 0.0625
        c.model_kwargs.stages = studies.SMOKE_STAGES
    else:
        raise ValueError(f"unknown preset {preset!r} (valid: {', '.join(PRESETS)})")
    return c


def define_flags() -> None:
    common.define_flags(PRESETS, "runs/inception_bottleneck", "TFDS name (default cifar10).")
    flags.DEFINE_float("width_multiplier", None, "Fraction of GoogLeNet's module widths.")
    flags.DEFINE_bool(
        "equal_macs",
        None,
        "Also train the bottleneck net widened to the naive net's multiply-adds.",
    )


def main(argv: Sequence[str]) -> None:
    FLAGS = flags.FLAGS
    config = common.prepare(
        argv,
        get_config,
        accelerator="full",
        width_multiplier=FLAGS.width_multiplier,
        equal_macs=FLAGS.equal_macs,
    )
    if config.equal_macs:
        # The third net costs the naive net's multiply-adds and runs slower than it on a CPU
        # (more, thinner convolutions): the cpu preset took twice as long with it.
        config.expected_minutes *= 2
    common.announce(config)
    results = studies.run_inception(config, FLAGS.workdir)
    if results is not None and jax.process_index() == 0:
        print()
        print(studies.table(results, studies.INCEPTION_COLUMNS))
        print(studies.inception_summary(results))
        print(f"wrote results.json, curves.csv, inception_bottleneck.png to {FLAGS.workdir}")


if __name__ == "__main__":
    define_flags()
    common.run(main)
