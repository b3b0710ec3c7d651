"""LeNet-5 (LeCun et al. 1998): classic (tanh, average pooling) vs modern (ReLU, max pooling).

    python -m experiments.lenet5                               # preset from the backend
    python -m experiments.lenet5 --config=experiments/lenet5.py:cpu --config.data_dir=../shared/tfds
    python -m experiments.lenet5 --config.dataset=fashion_mnist --config.data_dir=../shared/tfds \\
        --workdir=runs/lenet5_fashion

Prints the per-layer shape table, trains both variants on mnist (default) or fashion_mnist
and writes results.json, curves.csv and lenet5.png to --workdir; rerunning resumes.
`--config.seeds=N`: N seeds of each variant as one vmapped program, mean ± std. Presets
and keys: `get_config` below.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.studies import lenet5
from experiments import common, presets


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
    c = presets.base_config(dataset="mnist", augment=False, weight_decay=5e-4, learning_rate=0.05)
    full = dict(num_steps=9_400, lr_boundaries=(5_600, 8_000), expected_minutes=2 * 2.0)
    full.update(eval_every=470, curve_eval_examples=10_000, checkpoint_every=1_000, log_every=470)
    cpu = dict(num_steps=4_000, lr_boundaries=(2_800, 3_600), final_train_eval_examples=10_000)
    cpu.update(eval_every=500, curve_eval_examples=2_000, checkpoint_every=1_000, log_every=500)
    return presets.choose(c, preset, full=full, colab=full, cpu={**cpu, "expected_minutes": 1.5})


if __name__ == "__main__":
    common.main(lenet5.STUDY, get_config, __file__)
