"""Inception modules with and without 1x1 bottlenecks (Szegedy et al. 2015, Figure 2).

    python -m experiments.inception_bottleneck                 # preset from the backend
    python -m experiments.inception_bottleneck --config=experiments/inception_bottleneck.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds [--config.equal_macs]

Prints the lecture's module arithmetic, then trains one CIFAR-scale Inception network twice
from the same module widths, naive modules vs bottleneck modules (with --config.equal_macs, a
third: the bottleneck network widened to the naive one's multiply-adds). Writes results.json,
module_arithmetic.json, curves.csv and inception_bottleneck.png to --workdir; rerunning
resumes. `--config.seeds=N`: N seeds of each network as one vmapped program, mean ± std.
Presets and keys: `get_config` below.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.models import inception
from cnn_cases.studies import inception_bottleneck
from experiments import common, presets


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
        (`variants.estimate_minutes`), twice that with `equal_macs`; not measured.
    cpu: the same comparison at 1/8 width and 700 steps of 128 (lr 0.1, /10 at 550, weight
        decay 5e-4) on cifar10, for 2 CPU cores. Measured on a 2-core CPU (cifar10_jpeg):
        naive 265,562 parameters, 23.8M multiply-adds; bottleneck 31,534, 4.2M (5.7x fewer
        multiply-adds); with `equal_macs` the bottleneck net at width 0.313: 189,927
        parameters, 23.8M multiply-adds. See the README for errors and times.
    smoke: seconds; for tests and notebooks (1/16 width, modules (3a) and (4a) only, 3 steps
        of 16).
    """
    c = presets.base_config(width_multiplier=0.25, equal_macs=False)
    colab = dict(width_multiplier=0.5, num_steps=4_000, lr_boundaries=(2_000, 3_000))
    cpu = dict(width_multiplier=0.125, num_steps=700, lr_boundaries=(550,))
    return presets.choose(
        c,
        preset,
        full={**presets.FULL_CADENCE, "expected_minutes": 2 * 20.0},
        colab={**presets.COLAB_CADENCE, **colab, "expected_minutes": 14.0},
        smoke=dict(width_multiplier=0.0625, model_kwargs=dict(stages=inception.SMOKE_STAGES)),
        cpu={**presets.CPU_CADENCE, **cpu, "expected_minutes": 7.5},
    )


if __name__ == "__main__":
    common.main(inception_bottleneck.STUDY, get_config, __file__)
