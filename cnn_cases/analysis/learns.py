"""Whether a net can learn at all: a few dozen steps of a preset's recipe on a narrow copy.

A net whose signal vanishes at initialisation (VGG-16 without BatchNorm under flax's default
init) keeps its loss at ln(classes); a working one brings it well below within a few dozen
steps on an easy dataset (`blobs`). The tests run every preset's nets on it;
`scripts/learns.py` does the same on a real dataset and prints each net's loss curve.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_cases.data import splits
from cnn_cases.engine import defaults, steps
from cnn_cases.models import layers

# A net "learns" when its mean training loss over the last steps falls below this share of
# ln(classes), the loss of a uniform guess.
THRESHOLD = 0.8
LAST = 5  # steps averaged at the end of the curve

# What makes two variants the same check: the model and how it is optimised. Weight decay is
# left out: 60 steps of it shrink the weights by at most 0.3 %, nothing this check can see.
_RECIPE_KEYS = (
    "model",
    "init",
    "dtype",
    "learning_rate",
    "warmup_steps",
    "warmup_lr",
    "momentum",
    "nesterov",
    "grad_clip_norm",
    "aux_loss_weight",
)
_WIDTH_KEYS = ("width", "width_multiplier", "widths")


def recipe_key(config: ml_collections.ConfigDict) -> tuple:
    """The model (widths aside) and its optimiser: variants equal in this learn alike."""
    kwargs = {k: v for k, v in config.model_kwargs.to_dict().items() if k not in _WIDTH_KEYS}
    return (*(config.get(k) for k in _RECIPE_KEYS), tuple(sorted(kwargs.items())))


def distinct(
    configs: Iterable[tuple[str, ml_collections.ConfigDict]],
) -> dict[str, ml_collections.ConfigDict]:
    """The first config of each `recipe_key`, by name."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, c in configs:
        key = recipe_key(c)
        if key not in seen:
            seen[key] = name
            out[name] = c
    return out


def narrowed(
    config: ml_collections.ConfigDict, multiplier: float = 0.125, least_width: int = 8
) -> ml_collections.ConfigDict:
    """`config` with its model at most `multiplier` of its paper's widths (CIFAR ResNets: at
    most `least_width` filters in the first stage)."""
    c = ml_collections.ConfigDict(config.to_dict())
    kwargs = c.model_kwargs
    model = defaults.create_model(c, 10)
    if hasattr(model, "width_multiplier"):
        kwargs.width_multiplier = min(float(kwargs.get("width_multiplier", 1.0)), multiplier)
    elif c.model.startswith(("resnet", "plain")) and getattr(model, "stem", "") == "cifar":
        kwargs.width = min(int(kwargs.get("width", 16)), least_width)
    elif hasattr(model, "widths"):
        kwargs.widths = tuple(layers.scaled(w, multiplier) for w in model.widths)
    return c


def image_size(config: ml_collections.ConfigDict, least: int = 16) -> int:
    """The smallest square input of at least `least` pixels that the config's model takes."""
    model = defaults.create_model(config, 10)
    return max(least, int(getattr(model, "min_input_size", least)))


def blobs(size: int, channels: int = 3, n: int = 2048, num_classes: int = 10) -> splits.Split:
    """An easy dataset for any convolutional net: each class a smooth random pattern (a 4x4
    image scaled up to `size`), each example its class's pattern plus pixel noise."""
    rng = np.random.default_rng(1234)
    coarse = rng.uniform(40, 215, (num_classes, 4, 4, channels))
    protos = np.repeat(np.repeat(coarse, -(-size // 4), axis=1), -(-size // 4), axis=2)
    protos = protos[:, :size, :size]
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    images = np.clip(protos[labels] + rng.normal(0, 30, (n, size, size, channels)), 0, 255)
    return splits.Split(images=images.astype(np.uint8), labels=labels, num_classes=num_classes)


@dataclasses.dataclass(frozen=True)
class Curve:
    """A net's training losses, step by step, and whether it learned."""

    name: str
    losses: list[float]
    num_classes: int

    @property
    def final(self) -> float:
        return float(np.mean(self.losses[-LAST:]))

    @property
    def learned(self) -> bool:
        return self.final < THRESHOLD * math.log(self.num_classes)


def loss_curve(
    name: str,
    config: ml_collections.ConfigDict,
    data: splits.Split,
    *,
    num_steps: int = 60,
    batch_size: int = 64,
    seed: int = 0,
) -> Curve:
    """`num_steps` SGD steps of `config`'s recipe (optimiser, learning rate and warm-up, weight
    decay, auxiliary-loss weight) on shuffled batches of `data`, without augmentation; pixels
    scaled to [0, 1] less their per-pixel mean.

    Without dropout: at narrow widths dropout 0.5 on a 64-wide FC layer slows every net's first
    steps alike, whatever its initialisation, which would hide what this check looks for.
    """
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = seed
    model = defaults.create_model(c, data.num_classes)
    for key in ("dropout", "aux_dropout"):
        if hasattr(model, key):
            c.model_kwargs[key] = 0.0
    model = defaults.create_model(c, data.num_classes)
    images = data.images.astype(np.float32) / 255.0
    images -= splits.per_pixel_mean(data.images)
    state = steps.create_train_state(model, c, images.shape[1:])
    step = jax.jit(
        functools.partial(steps.train_step, aux_loss_weight=c.aux_loss_weight),
        donate_argnums=(0,),
    )
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    losses = []
    for _ in range(num_steps):
        rows = rng.choice(len(images), batch_size, replace=False)
        state, metrics = step(state, jnp.asarray(images[rows]), jnp.asarray(data.labels[rows]), key)
        losses.append(metrics["loss"])
    return Curve(name, [float(x) for x in jax.device_get(losses)], data.num_classes)


def check(
    configs: Mapping[str, ml_collections.ConfigDict],
    data_for: Mapping[int, splits.Split] | None = None,
    **kwargs: int,
) -> list[Curve]:
    """Every config's `loss_curve` on `blobs` of its model's smallest input of at least 16x16
    (or on `data_for[size]`, where given)."""
    curves = []
    for name, c in configs.items():
        size = image_size(c)
        channels = 1 if c.model.startswith("lenet") else 3
        data = (data_for or {}).get(size) or blobs(size, channels)
        curves.append(loss_curve(name, c, data, **kwargs))
    return curves
