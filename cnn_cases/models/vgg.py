"""VGG (Simonyan & Zisserman, 2015): 3x3 same convs, 2x2/2 max pools, 64 -> 512 channels.

`VGG` is the ImageNet model (torchvision's layout); `VGGCifar` the same stages for 32x32.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_cases.models import inits
from cnn_cases.models.layers import (
    AdaptiveAvgPool,
    Pool,
    check_min_size,
    classifier,
    conv_factory,
    norm_factory,
    scaled,
)

WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)

# Convs per stage, by depth.
STAGES: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


# Simonyan & Zisserman 2015, Sec. 3.1: weights from "a normal distribution with the zero
# mean and 10^-2 variance", biases 0 (deeper configurations started from a trained
# configuration A). An absolute standard deviation of 0.1 scales a ReLU layer's signal by
# 0.1 * sqrt(fan_in / 2), which keeps it only where fan_in is 200; the paper trained the
# 11-layer configuration A so and initialised deeper ones from it, and notes that a random
# init without pre-training works too. The default is torchvision's (`torchvision.models.vgg`)
# for the convolutions, kaiming_normal_(mode="fan_out", nonlinearity="relu"), zero biases. Its
# N(0, 0.01^2) for the linear layers keeps the signal only at 4096 wide (0.01 * sqrt(4096) =
# 0.64); at the narrow widths of the CPU presets (64 wide: 0.08 per layer) it vanishes, so the
# hidden FC layers take He et al. 2015's N(0, 2/fan_in) and the classifier N(0, 1/fan_in).
INITS = {
    "reference": inits.Inits(
        conv=inits.he_normal("fan_out"),
        dense=inits.he_normal("fan_in"),
        head=inits.lecun_normal(),
    ),
    "paper": inits.Inits(conv=inits.normal(0.1), dense=inits.normal(0.1), head=inits.normal(0.1)),
}


class VGG(nn.Module):
    """VGG-11/13/16/19, optionally with BatchNorm; adaptive 7x7 pool before the classifier.

    `width_multiplier` scales every stage's channels and the FC width. Initialisation
    (`weight_init`): torchvision's by default, the paper's N(0, 0.1^2) as "paper" (see `INITS`).
    """

    stage_sizes: Sequence[int]
    widths: Sequence[int] = WIDTHS
    batch_norm: bool = False
    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    width_multiplier: float = 1.0
    fc_width: int = 4096
    pool_size: tuple[int, int] = (7, 7)  # of the adaptive pool before the classifier

    min_input_size: int = 32
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    weight_init: str = "reference"  # see `INITS` and `cnn_cases.models.inits`

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_input_size, "vgg")
        x = x.astype(self.dtype)
        init = inits.choose("vgg", self.weight_init, INITS)
        conv = conv_factory(self.kernels, padding="SAME", dtype=self.dtype, kernel_init=init.conv)
        norm = norm_factory(train, self.kernels, dtype=self.dtype)
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for j in range(size):
                x = conv(scaled(width, self.width_multiplier), (3, 3), name=f"conv{i + 1}_{j + 1}")(
                    x
                )
                if self.batch_norm:
                    x = norm(name=f"bn{i + 1}_{j + 1}", act=nn.relu)(x)
                else:
                    x = nn.relu(x)
            x = Pool("max", 2, 2, name=f"pool{i + 1}")(x)
        x = AdaptiveAvgPool(self.pool_size, name="avgpool")(x)
        fc_width = scaled(self.fc_width, self.width_multiplier)
        return classifier(x, self.num_classes, self.dropout, train, self.dtype, fc_width, init)


# VGG for 32x32 images: the same stages (3x3 same convs, 2x2/2 max pools, 64 -> 512 channels),
# whose five pools leave 1x1x512 where ImageNet's 224x224 leaves 7x7x512. The classifier reads
# that 1x1x512 (the adaptive pool is the identity) through dropout 0.5 and FC 512-512 instead
# of 4096-4096, as the common CIFAR-10 VGGs do (chengyangfu/pytorch-vgg-cifar10 exactly;
# kuangliu/pytorch-cifar keeps only the last FC). VGG-16: 15,245,130 parameters, 313,725,952
# multiply-adds per image (pinned in tests/test_models.py).
VGGCifar = functools.partial(VGG, num_classes=10, fc_width=512, pool_size=(1, 1))
