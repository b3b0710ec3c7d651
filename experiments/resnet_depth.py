"""Plain nets get worse as they get deeper; ResNets do not (He et al. 2016, Figure 6).

    python -m experiments.resnet_depth                       # preset from the backend
    python -m experiments.resnet_depth --config=experiments/resnet_depth.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds
    python -m experiments.resnet_depth --config=experiments/resnet_depth.py:full \\
        --config.depths=20,32,44,56,110
    python -m experiments.resnet_depth --config.seeds=3      # seeds 0-2: mean ± std

Trains plainD and resnetD for every depth D and writes results.json, curves.csv and
resnet_depth.png to --workdir (default runs/resnet_depth). Rerunning with the same --workdir
skips finished nets and resumes an unfinished one. `--config.seeds=N` trains seeds
seed .. seed+N-1 of every net as one vmapped program and reports mean ± standard deviation,
with the verdict against the seeds' spread. Presets (cpu, smoke, colab, full) and every key
that --config.KEY=VALUE can override: `get_config` below.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.studies import resnet_depth
from experiments import common, presets


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
        (`presets.CPU_CIFAR`). Measured on a 2-core CPU (cifar10_jpeg): about 8 minutes a
        seed; over seeds 0-4 plain56's training error is 27.3 +- 4.2 points above
        plain20's and resnet56's 1.3 +- 0.9 points below resnet20's (below it in every seed).
    colab: one Colab session on its T4: He et al.'s nets at full width and resolution, lr
        0.1 for 3,000 steps of 128, /10 at 1,500 and 2,250 (`presets.COLAB_CIFAR`). About 16
        minutes by an estimate from multiply-adds (`variants.estimate_minutes`); not measured.
    smoke: seconds; for tests and notebooks (depths 8 and 14, width 4, 3 steps).
    """
    c = presets.base_config(
        dataset="cifar10",
        depths=(20, 32, 44, 56),
        width=16,
        zero_init_residual=False,
        shortcut="A",
        warmup_from_depth=110,  # He et al.: ResNet-110 warms up at lr 0.01
    )
    full = dict(num_steps=64_000, lr_boundaries=(32_000, 48_000), warmup_steps=400)
    return presets.choose(
        c,
        preset,
        full={**full, **presets.FULL_CADENCE, "expected_minutes": 8 * 15.0},
        colab={**presets.COLAB_CIFAR, "expected_minutes": 16.0},
        smoke=dict(depths=(8, 14), width=4),
        # 16x16 images: 4x fewer multiply-adds per step
        cpu={**presets.CPU_CADENCE, **presets.CPU_CIFAR, "expected_minutes": 9.0},
    )


if __name__ == "__main__":
    common.main(resnet_depth.STUDY, get_config, __file__)
