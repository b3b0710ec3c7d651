"""Trains any registry model on any TFDS image dataset with the engine (no study around it).

    python -m experiments.train --config.model=resnet20 --config.dataset=cifar10 \\
        --config.num_steps=2000 --workdir=runs/train_resnet20
    python -m experiments.train --config.model=lenet5 --config.dataset=fashion_mnist \\
        --config.augment=False --config.data_dir=../shared/tfds --workdir=runs/lenet5_fashion
    python -m experiments.train --config=experiments/train.py:smoke --config.dataset=synthetic

    python -m experiments.train --config.model=resnet18 --config.dataset=oxford_flowers102 \
        --config.image_size=128 --config.preprocess=imagenet --config.num_steps=5000

Every key of `cnn_cases.engine.defaults.default_config` is a --config.KEY=VALUE flag; a model's
constructor options (`model_kwargs`, empty here) go in a config file of your own whose
get_config starts from this one. Any TFDS image-classification dataset trains: fixed-size
images that fit in memory (mnist, fashion_mnist, cifar10, cifar100, svhn_cropped, ...) are
decoded once into host memory; larger ones, and images of varying size (resized to
--config.image_size), are streamed from disk (`--config.pipeline`, auto by default).
Writes the run directory (`cnn_cases.engine.rundir`) to --workdir; rerunning resumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
from absl import app, flags

from cnn_cases.engine import defaults, rundir, train
from cnn_cases.report import tables
from experiments import common, presets

PRESETS = ("default", "smoke")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """`default`: the engine's defaults (He et al.'s CIFAR recipe, 64k steps); `smoke`: 3 steps."""
    c = defaults.default_config()
    c.preset = presets.check_preset(preset, PRESETS) or "default"
    if c.preset == "smoke":
        smoke = presets.smoke(presets.base_config())
        c.update({k: v for k, v in smoke.items() if k in c and k != "preset"})
    return c


def run(config: ml_collections.ConfigDict, workdir: str) -> rundir.RunResult | None:
    """Trains `config.model` on `config.dataset` into `workdir`; prints the final errors."""
    results = train.train(config, workdir)
    result = None if results is None else results[0]
    if result is not None and jax.process_index() == 0:
        errors = [("train err", result.train_error), ("test err", result.test_error)]
        if result.test_top5_error is not None:
            errors.append(("test top-5 err", result.test_top5_error))
        rows = [(config.model, config.dataset, f"{result.params:,}", result.steps)]
        rows[0] += tuple(f"{100 * e:.2f}%" for _, e in errors)
        header = ("model", "dataset", "params", "steps", *(name for name, _ in errors))
        print(tables.format_table(header, rows, align="<<>>" + ">" * len(errors)))
    return result


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.show_progress()
    common.initialize_distributed()
    run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    _, parse = common.define_flags(__file__, get_config, "runs/train")
    common.run(main, flags_parser=parse)
