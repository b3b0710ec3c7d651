"""GoogLeNet's auxiliary classifiers: trained with and without them (Szegedy et al. 2015).

    python -m experiments.googlenet_aux                        # preset from the backend
    python -m experiments.googlenet_aux --config=experiments/googlenet_aux.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds
    python -m experiments.googlenet_aux --config.without=zero_weight

Trains GoogLeNetCifar with its side classifiers and without them; prints each head's test
accuracy along the run and the final table; writes results.json, curves.csv and
googlenet_aux.png to --workdir; rerunning resumes. `--config.seeds=N`: N seeds of each
variant as one vmapped program, mean ± std. Presets and keys:
`get_config` below.
"""

from __future__ import annotations

import ml_collections

from cnn_cases.models import inception
from cnn_cases.studies import googlenet_aux
from experiments import common, presets


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    Knobs: `width_multiplier`; `without`, how the run without heads is made: "no_heads" builds
    the net with aux_logits=False (same main-net initialisation: flax derives each module's
    key from its name); "zero_weight" keeps the heads but gives their loss weight 0 (they then
    stay untrained, so their errors are chance level).

    full: the CIFAR-10 recipe of He et al. (batch 128, SGD momentum 0.9, weight decay 1e-4,
        lr 0.1 divided by 10 at 32k and 48k, 64k iterations, pad-4 crop + flip) for
        GoogLeNetCifar at 1/4 width (372,578 parameters at inference, 452,214 with the
        heads), aux loss weight 0.3. Cost: 2 x 64k steps; not measured on an accelerator here.
    colab: one Colab session on its T4: GoogLeNetCifar at GoogLeNet's full widths (365.8M
        multiply-adds per image), 2,500 steps of 128, lr 0.1 /10 at 1,250 and 1,875. About 15
        minutes by an estimate from multiply-adds (`variants.estimate_minutes`); not measured.
    cpu: 1/8 width, 500 steps of 128 (lr 0.1, /10 at 400, weight decay 5e-4) on cifar10, for
        2 CPU cores (about 6.5 minutes; see the README for the measured errors).
    smoke: seconds; for tests and notebooks (1/16 width, modules (3a) and (4a) only with a
        head on each, 3 steps of 16).
    """
    c = presets.base_config(width_multiplier=0.25, without="no_heads")
    colab = dict(width_multiplier=1.0, num_steps=2_500, lr_boundaries=(1_250, 1_875))
    cpu = dict(width_multiplier=0.125, num_steps=500, lr_boundaries=(400,))
    smoke_net = dict(stages=inception.SMOKE_STAGES, aux_after=("3a", "4a"))
    return presets.choose(
        c,
        preset,
        full={**presets.FULL_CADENCE, "expected_minutes": 2 * 25.0},
        colab={**presets.COLAB_CADENCE, **colab, "expected_minutes": 15.0},
        smoke=dict(width_multiplier=0.0625, model_kwargs=smoke_net),
        cpu={**presets.CPU_CADENCE, **cpu, "expected_minutes": 6.5},
    )


if __name__ == "__main__":
    common.main(googlenet_aux.STUDY, get_config, __file__)
