"""GoogLeNet's auxiliary classifiers: trained with and without them (Szegedy et al. 2015).

    python -m experiments.googlenet_aux                        # preset from the backend
    python -m experiments.googlenet_aux --preset=cpu --dataset=cifar10_jpeg \\
        --data_dir=../shared/tfds --workdir=runs/googlenet_aux

Trains a CIFAR-scale GoogLeNet (nine inception modules, side heads on (4a) and (4d)) with
the heads (loss weight --aux_loss_weight, 0.3 as in the paper) and without them. Reports
each head's test error during training (do intermediate layers already predict well?), the
main head's final test error and the train/test gap. Writes results.json, curves.csv and
googlenet_aux.png to --workdir; rerunning resumes. See `get_config` for the presets.
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
        lr 0.1 divided by 10 at 32k and 48k, 64k iterations, pad-4 crop + flip) for
        GoogLeNetCifar at 1/4 width (372,578 parameters at inference, 452,214 with the
        heads), aux loss weight 0.3. Cost: 2 x 64k steps; not measured on an accelerator here.
    cpu: 1/8 width, 500 steps of 128 (lr 0.1, /10 at 400, weight decay 5e-4) on cifar10, for
        2 CPU cores. Measured on cifar10_jpeg, idle cores: with heads 42.0 % test error
        (heads 46.8 % and 43.8 %), without 42.9 %; about 0.31 s per step, 6.3 minutes for
        the command. Command:
        python -m experiments.googlenet_aux --preset=cpu --dataset=cifar10_jpeg \\
            --data_dir=../shared/tfds --workdir=runs/googlenet_aux
    smoke: seconds; for tests and notebooks (1/16 width, modules (3a) and (4a) only with a
        head on each, 3 steps of 16).
    """
    c = studies.aux_config()
    c.preset = preset
    c.dataset = "cifar10"
    if preset == "full":
        c.width_multiplier = 0.25
        c.eval_every = 2_000
        c.curve_eval_examples = 10_000
        c.checkpoint_every = 2_000
        c.log_every = 500
        c.expected_minutes = 2 * 25.0
    elif preset == "cpu":
        c.width_multiplier = 0.125
        c.num_steps = 500
        c.lr_boundaries = (400,)
        c.weight_decay = 5e-4
        c.eval_every = 100
        c.curve_eval_examples = 1_000
        c.final_train_eval_examples = 5_000
        c.checkpoint_every = 100
        c.log_every = 50
        c.expected_minutes = 6.5
    elif preset == "smoke":
        studies.smoke(c)
        c.width_multiplier = 0.0625
        c.model_kwargs.stages = studies.SMOKE_STAGES
        c.model_kwargs.aux_after = ("3a", "4a")
    else:
        raise ValueError(f"unknown preset {preset!r} (valid: {', '.join(PRESETS)})")
    return c


def define_flags() -> None:
    common.define_flags(PRESETS, "runs/googlenet_aux", "TFDS name (default cifar10).")
    flags.DEFINE_float("aux_loss_weight", None, "Weight of each side head's loss.")
    flags.DEFINE_enum(
        "without",
        None,
        list(studies.WITHOUT_MODES),
        "How the run without heads is made: no_heads (aux_logits=False, default) or zero_weight.",
    )


def main(argv: Sequence[str]) -> None:
    FLAGS = flags.FLAGS
    config = common.prepare(
        argv,
        get_config,
        accelerator="full",
        aux_loss_weight=FLAGS.aux_loss_weight,
        without=FLAGS.without,
    )
    studies.aux_variant_configs(config)  # fail before any training on a bad setting
    common.announce(config)
    results = studies.run_aux(config, FLAGS.workdir)
    if results is not None and jax.process_index() == 0:
        curves = {v: studies.read_curves(FLAGS.workdir, v) for v in results}
        print()
        print(studies.aux_curve_text(curves))
        print()
        print(studies.table(results, studies.AUX_COLUMNS))
        print(f"wrote results.json, curves.csv, googlenet_aux.png to {FLAGS.workdir}")


if __name__ == "__main__":
    define_flags()
    common.run(main)
