"""The lecture's history in one figure: every case study on the same data, budget and recipe.

    python -m experiments.history                              # preset from the backend
    python -m experiments.history --config=experiments/history.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds --config.seeds=2
    python -m experiments.history --config.nets=lenet5,alexnet,resnet20 --config.widths.alexnet=0.5

Trains LeNet-5, AlexNet, VGG-16 with and without BatchNorm, Network in Network, GoogLeNet with
and without its auxiliary heads, and ResNet-20/56 with their plain twins on CIFAR-10, with one
recipe, budget and data order, each at its own width; prints the table and the nets on the
error-cost frontier; writes results.json, machine.json, curves.csv and history.png to
--workdir; rerunning resumes. `--config.seeds=N`: N seeds of every net as one vmapped program,
mean ± std and error bars. Presets and keys: `get_config` below.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.studies import history
from experiments import common, presets

# The cpu preset's widths (multipliers of each paper's widths), sized so that every net's
# steps fit about 15 minutes on 2 cores together. GoogLeNet's many thin convolutions and the
# 56-layer nets cost most per multiply-add on a CPU.
CPU_WIDTHS = dict(
    lenet5=1.0,
    alexnet=0.125,
    vgg16=0.125,
    vgg16_bn=0.125,
    nin=0.125,
    googlenet=0.0625,
    googlenet_noaux=0.0625,
    plain20=0.375,
    resnet20=0.375,
    plain56=0.375,
    resnet56=0.375,
)

# One recipe for every net: SGD momentum 0.9, lr 0.05 (between what the BatchNorm nets and the
# nets without it train at), weight decay 5e-4, pad-4 crop + flip, per-pixel mean, and the
# gradient clipped to a global norm of 1. Without the clipping VGG-16 and AlexNet (no
# BatchNorm) stay at chance at lr 0.05, or fall back to it after a first drop of the loss
# (VGG-16 also after a warm-up at 0.01: `python -m scripts.learns`); the BatchNorm nets'
# gradients stay below that norm, so the clipping leaves them as they were.
RECIPE = dict(learning_rate=0.05, weight_decay=5e-4, grad_clip_norm=1.0)


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    Knobs: `nets` (which of `history.NETS` to train, in the order given; on the command line
    `--config.nets=lenet5,alexnet`) and `widths` (per net, a multiplier of its paper's
    widths: channels and FC widths; the CIFAR ResNets' 16/32/64).

    full: every net at its paper's widths, 64k steps of 128 (lr 0.05 divided by 10 at 32k
        and 48k, He et al.'s schedule), the same for every net. Cost: 11 nets x 64k steps,
        2.11G multiply-adds per image for all of them (18 hours on a T4 by the estimate from
        multiply-adds); not measured on an accelerator here.
    colab: one Colab session on its T4: every net at half its widths, 3,000 steps of 128, lr
        /10 at 1,500 and 2,250 (`presets.COLAB_CIFAR`). About 13.5 minutes by an estimate from
        multiply-adds (`variants.estimate_minutes`); not measured.
    cpu: 500 steps of 128 for every net (lr 0.05, /10 at 400) at the widths of `CPU_WIDTHS`,
        for 2 CPU cores: about 15 minutes a seed on idle cores, estimated from a 100-step
        run. Measured under flax's default init and without clipping, on 2 cores shared with
        other jobs (cifar10_jpeg): 22 minutes for seed 0,
        43 for seeds 0-1 as one program; on the error-MACs frontier LeNet-5, GoogLeNet with
        aux heads and ResNet-20 (lowest test error, 46.4 +- 1.3 %) by the mean and by each
        seed. See the README for the table.
    smoke: seconds; for tests and notebooks (LeNet-5, and AlexNet at 1/16 width, 3 steps of
        16).
    """
    c = presets.base_config(
        nets=tuple(history.NETS),
        widths=ml_collections.ConfigDict({n: 1.0 for n in history.NETS}),
        **RECIPE,
    )
    full = dict(num_steps=64_000, lr_boundaries=(32_000, 48_000))
    cpu = dict(num_steps=500, lr_boundaries=(400,), widths=CPU_WIDTHS)
    smoke = dict(nets=("lenet5", "alexnet"), widths=dict(alexnet=0.0625))
    return presets.choose(
        c,
        preset,
        full={**full, **presets.FULL_CADENCE, "expected_minutes": 11 * 30.0},
        colab={
            **presets.COLAB_CIFAR,
            "widths": {n: 0.5 for n in history.NETS},
            "expected_minutes": 13.5,
        },
        smoke=smoke,
        cpu={**cpu, **presets.CPU_CADENCE, "expected_minutes": 15.0},
    )


if __name__ == "__main__":
    common.main(history.STUDY, get_config, __file__)
