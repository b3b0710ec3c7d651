"""Plain nets get worse as they get deeper; ResNets do not (He et al. 2016, Figure 6).

    python -m experiments.resnet_depth                       # preset from the backend
    python -m experiments.resnet_depth --preset=cpu --dataset=cifar10_jpeg \\
        --data_dir=../shared/tfds --workdir=runs/resnet_depth
    python -m experiments.resnet_depth --preset=paper --depths=20,32,44,56,110

Trains plainD and resnetD for every depth D and writes results.json, curves.csv and
resnet_depth.png to --workdir. Rerunning with the same --workdir skips finished nets
and resumes an unfinished one. See `get_config` for the presets.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
from absl import flags

from cnn_cases import depth_study, studies
from cnn_cases.models import resnet
from experiments import common

PRESETS = ("paper", "cpu", "smoke")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    """The study's config for `preset`.

    paper: He et al. section 4.2 exactly: widths 16/32/64, batch 128, SGD momentum 0.9,
        weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k, 64k iterations (ResNet-110
        warms up at lr 0.01 for 400 iterations), pad-4 crop + flip, per-pixel mean.
        `--set=train_split="train[:45000]"` trains on the 45k split of the paper's schedule
        search. Expected: train error falls with depth for ResNets, rises for plain nets;
        ResNet-110 test error about 6.4 % (Table 6). Cost: 8 nets x 64k steps; on one
        H100-class GPU about 10-20 minutes per net (not measured here).
    cpu: the same comparison shrunk to a 2-core CPU: widths 8/16/32, CIFAR averaged down
        to 16x16 (pad-2 crop + flip), batch 128, 300 steps (lr 0.1, 0.01 from step 240,
        weight decay 5e-4), ResNet branches' last BN scale initialised to 0. Command:
        python -m experiments.resnet_depth --preset=cpu --dataset=cifar10_jpeg \
            --data_dir=../shared/tfds --workdir=runs/resnet_depth
        Measured on a 2-core CPU: 4.5 minutes; plain56's training error 28.2 points above
        plain20's, resnet56's 2.2 points below resnet20's (seed 0).
    smoke: seconds; for tests and notebooks (depths 8 and 14, width 4, 3 steps).
    """
    c = depth_study.study_config()
    c.preset = preset
    c.dataset = "cifar10"
    if preset == "paper":
        c.depths = (20, 32, 44, 56)
        c.width = 16
        c.num_steps = 64_000
        c.lr_boundaries = (32_000, 48_000)
        c.warmup_steps = 400
        c.eval_every = 2_000
        c.curve_eval_examples = 10_000
        c.checkpoint_every = 2_000
        c.log_every = 500
        c.expected_minutes = 8 * 15.0
    elif preset == "cpu":
        c.depths = (20, 32, 44, 56)
        c.width = 8
        c.downsample = 2  # 16x16 images: 4x fewer multiply-adds per step
        c.crop_padding = 2
        c.zero_init_residual = True
        c.batch_size = 128
        c.num_steps = 300
        c.learning_rate = 0.1
        c.lr_boundaries = (240,)
        c.weight_decay = 5e-4
        c.eval_every = 100
        c.curve_eval_examples = 1_000
        c.final_train_eval_examples = 10_000
        c.checkpoint_every = 100
        c.log_every = 50
        c.expected_minutes = 4.5
    elif preset == "smoke":
        studies.smoke(c)
        c.depths = (8, 14)
        c.width = 4
    else:
        raise ValueError(f"unknown preset {preset!r} (valid: {', '.join(PRESETS)})")
    return c


def define_flags() -> None:
    common.define_flags(PRESETS, "runs/resnet_depth", "TFDS name (default cifar10).")
    flags.DEFINE_list("depths", None, "Depths 6n+2, e.g. 20,32,44,56,110.")


def main(argv: Sequence[str]) -> None:
    FLAGS = flags.FLAGS
    depths = tuple(int(d) for d in FLAGS.depths) if FLAGS.depths else None
    config = common.prepare(argv, get_config, accelerator="paper", depths=depths)
    for d in config.depths:  # fail before any training on a bad depth
        resnet.cifar_depth_to_blocks(d)
    common.announce(config)
    results = depth_study.run(config, FLAGS.workdir)
    if results is not None and jax.process_index() == 0:
        print()
        print(depth_study.final_table(results))
        print(depth_study.degradation_verdict(results)[1])
        print(f"wrote results.json, curves.csv, resnet_depth.png to {FLAGS.workdir}")


if __name__ == "__main__":
    define_flags()
    common.run(main)
