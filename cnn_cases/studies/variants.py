"""A study's variants: one training config each, made from the study's config, and what
training them is estimated to cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.engine import defaults

# The colab presets are sized for one Colab session on its free GPU, a T4: about 15 minutes by
# an estimate from multiply-adds and the card's peak (8.1 TFLOP/s in f32), assuming a train
# step of these small nets reaches a fifth of it. Not a measurement.
T4_F32_TFLOPS = 8.1
ASSUMED_PEAK_FRACTION = 0.2


def variant_config(
    config: ml_collections.ConfigDict, model: str, **model_kwargs: Any
) -> ml_collections.ConfigDict:
    """The training config of one variant: every training key of `config`, this model.

    The study's own `model_kwargs` (e.g. fewer stages for a smoke run) go to every variant.
    """
    c = defaults.default_config()
    for key in c:
        if key not in ("model", "model_kwargs"):
            c[key] = config[key]
    c.model = model
    c.model_kwargs = ml_collections.ConfigDict({**config.model_kwargs.to_dict(), **model_kwargs})
    return c


def cifar_depth(name: str) -> int:
    """D of `plainD` / `resnetD`."""
    return int(name.removeprefix("resnet").removeprefix("plain"))


def cifar_net_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """`plainD` / `resnetD` of a study with the CIFAR keys width, shortcut, zero_init_residual
    and warmup_from_depth (He et al.: only ResNet-110 and deeper warm up)."""
    kwargs: dict[str, Any] = {"width": config.width, "shortcut": config.shortcut}
    if name.startswith("resnet") and config.zero_init_residual:
        kwargs["zero_init_residual"] = True
    c = variant_config(config, name, **kwargs)
    if cifar_depth(name) < config.warmup_from_depth:
        c.warmup_steps = 0
    return c


def estimate_minutes(
    variants: Mapping[str, ml_collections.ConfigDict],
    image_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    tflops: float = T4_F32_TFLOPS,
    peak_fraction: float = ASSUMED_PEAK_FRACTION,
    extra: Sequence[tuple[ml_collections.ConfigDict, int]] = (),
) -> float:
    """Estimated minutes to train and evaluate `variants` on a card of `tflops`.

    Per image, a train step costs three forward passes (forward, and the backward's two
    products), an evaluation one; a multiply-add is 2 FLOPs. `extra` adds (variant, steps)
    trained on top (why_resnets' continued nets). An estimate from multiply-adds, not a
    measurement: it ignores what is not a multiply-add and launch overheads.
    """
    flops = 0.0
    for c, steps in [*((c, c.num_steps) for c in variants.values()), *extra]:
        macs = costs.model_cost(defaults.create_model(c, num_classes), image_shape).macs
        evals = steps // c.eval_every if c.eval_every else 0
        eval_images = 2 * evals * c.curve_eval_examples + c.final_train_eval_examples
        eval_images += c.final_test_eval_examples or 10_000
        flops += 2 * macs * (3 * steps * c.batch_size * c.seeds + eval_images)
    return flops / (tflops * 1e12 * peak_fraction) / 60
