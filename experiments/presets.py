"""The pieces the studies' configs share: the training defaults, the presets' cadences and
the CIFAR recipes that several studies train, so that their nets can be read across them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import ml_collections

from cnn_cases.engine import defaults, launch

PRESETS = launch.PRESETS  # what every study offers
FULL = launch.ACCELERATOR_PRESET
COLAB = launch.COLAB_PRESET


def base_config(**knobs: Any) -> ml_collections.ConfigDict:
    """The training defaults plus `preset`, `expected_minutes` and a study's own `knobs`."""
    c = defaults.default_config()
    c.preset = ""
    c.expected_minutes = 0.0
    for key, value in knobs.items():
        c[key] = value
    return c


def check_preset(preset: str | None, presets: Sequence[str] = PRESETS) -> str:
    """`preset`, or the backend's when it is None/"" (resolved later); ValueError if unknown."""
    if preset and preset not in presets:
        raise ValueError(f"unknown preset {preset!r} (valid: {', '.join(presets)})")
    return preset or ""


# How often the presets evaluate, log and checkpoint: a full run's curves on all 10,000 test
# images every 2,000 steps; a CPU run's on 1,000 images every 100 steps.
FULL_CADENCE = dict(
    eval_every=2_000, curve_eval_examples=10_000, checkpoint_every=2_000, log_every=500
)
CPU_CADENCE = dict(
    eval_every=100,
    curve_eval_examples=1_000,
    final_train_eval_examples=5_000,
    checkpoint_every=100,
    log_every=50,
    weight_decay=5e-4,
)

# The CIFAR nets' recipe on a 2-core CPU: width 8, CIFAR averaged down to 16x16 (pad-2 crop +
# flip), 900 steps (lr 0.1, 0.01 from step 720), residual branches' last BN scale 0.
# resnet_depth and why_resnets share it, so that why_resnets can read resnet_depth's nets.
CPU_CIFAR = dict(
    width=8,
    downsample=2,
    crop_padding=2,
    zero_init_residual=True,
    num_steps=900,
    lr_boundaries=(720,),
    final_train_eval_examples=10_000,
)

# A CIFAR recipe sized for one Colab session on its T4 (`cnn_cases.studies.variants.
# estimate_minutes`): He et al.'s nets at full width and resolution, 3,000 steps of 128 (lr
# 0.1, /10 at half and three quarters, as 32k and 48k of 64k), curves every 500 steps.
# resnet_depth and why_resnets share it, so that why_resnets can read resnet_depth's nets.
COLAB_CADENCE = dict(eval_every=500, curve_eval_examples=2_000, checkpoint_every=500, log_every=100)
COLAB_CIFAR = dict(num_steps=3_000, lr_boundaries=(1_500, 2_250), **COLAB_CADENCE)


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds-long runs for tests and notebooks: 3 steps of 16, 100-image evaluations."""
    c.batch_size = 16
    c.eval_batch_size = 50
    c.num_steps = 3
    c.lr_boundaries = (2,)
    c.eval_every = 2
    c.curve_eval_examples = 50
    c.final_train_eval_examples = 100
    c.final_test_eval_examples = 100
    c.checkpoint_every = 2
    c.log_every = 1
    c.expected_minutes = 0.5
    return c


_smoke_run = smoke  # `choose` names its smoke preset's keys `smoke`


def choose(
    c: ml_collections.ConfigDict,
    preset: str | None,
    *,
    cpu: Mapping[str, Any],
    full: Mapping[str, Any],
    colab: Mapping[str, Any],
    smoke: Mapping[str, Any] = MappingProxyType({}),
) -> ml_collections.ConfigDict:
    """`c` with `preset` and that preset's keys (a dict for `model_kwargs` replaces it).

    The smoke preset starts from `smoke()`; a preset left to the backend ("" or None) takes
    cpu's keys until the backend picks (`launch.resolve_preset`).
    """
    c.preset = check_preset(preset)
    if c.preset == "smoke":
        _smoke_run(c)
    c.update({FULL: full, COLAB: colab, "smoke": smoke}.get(c.preset, cpu))
    return c
