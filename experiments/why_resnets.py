"""Why ResNets work, shown on trained networks: the lecture's identity argument, He et al.'s
Figure 7 (layer responses) and per-layer gradient norms, plain nets against ResNets.

    python -m experiments.why_resnets                          # preset from the backend
    python -m experiments.why_resnets --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds
    python -m experiments.why_resnets --config.from_workdir=runs/resnet_depth   # reuse its nets

Trains plainD/resnetD (or reads them from a resnet_depth workdir of the same recipe), appends
W = 0, b = 0 blocks and checks the ResNet's function is unchanged while the plain net's
collapses, trains both deeper nets on, and probes responses and gradients. Writes
results.json, curves.csv and why_resnets.png to --workdir. Presets and keys:
`get_config` below.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.studies import why_resnets
from experiments import common, presets


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    Knobs: `depth` (the shallow nets), `extra_blocks` (appended per stage), `more_steps` (of
    training after deepening, at the schedule's last learning rate), `probe_depths` (Figure 7;
    the deepest also for the gradients), `probe_examples`, `from_workdir`.

    cpu: the nets of the resnet_depth cpu preset (width 8, 16x16 CIFAR, 900 steps of 128),
        plain20/resnet20 deepened by one block per stage to 26 layers and trained on 300 steps;
        Figure 7 and the gradients at depths 20 and 56.
    colab: the nets of the resnet_depth colab preset (full width and resolution, 3,000
        steps), 1,000 more steps; about 10 minutes on Colab's T4 by an estimate from
        multiply-adds (`variants.estimate_minutes`), less with `from_workdir`; not measured.
    full: He et al.'s recipe (resnet_depth's full preset), 8,000 more steps.
    smoke: seconds; for tests and notebooks (depth 8, probed too, width 4).
    """
    c = presets.base_config(
        depth=20,
        extra_blocks=1,
        more_steps=300,
        probe_depths=(20, 56),
        probe_examples=1_000,
        from_workdir="",
        width=16,
        zero_init_residual=False,
        shortcut="A",
        warmup_from_depth=110,
    )
    full = dict(num_steps=64_000, lr_boundaries=(32_000, 48_000), more_steps=8_000)
    return presets.choose(
        c,
        preset,
        full={**presets.FULL_CADENCE, **full, "expected_minutes": 6 * 15.0},
        colab={**presets.COLAB_CIFAR, "more_steps": 1_000, "expected_minutes": 10.0},
        smoke=dict(depth=8, probe_depths=(8,), width=4, more_steps=3, probe_examples=100),
        cpu={**presets.CPU_CADENCE, **presets.CPU_CIFAR, "expected_minutes": 7.0},
    )


if __name__ == "__main__":
    common.main(why_resnets.STUDY, get_config, __file__)
