"""Network in Network (Lin et al., 2014), the CIFAR-10 model.

An mlpconv block is a conv followed by two 1x1 convs: a small fully connected net
applied at every pixel. The last block outputs one map per class and global average
pooling turns the maps into logits; there is no fully connected head.
966,986 parameters (counted with `jax.eval_shape(model.init, ...)`) and 222.5M
multiply-adds per 32x32 image.
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
    GlobalAvgPool,
    ceil_mode_pool,
    check_min_size,
    conv_factory,
    scaled,
)

# Lin et al. 2014 state no initialisation, and the authors' CIFAR-10 Caffe model is not at hand
# here (their ImageNet model draws N(0, 0.05^2)). Every layer is a convolution and a ReLU, so
# the default is He et al. 2015's rule for ReLU nets, N(0, 2/fan_in), zero biases.
INITS = {"reference": inits.Inits(conv=inits.he_normal("fan_in"))}


class MlpConv(nn.Module):
    """`conv` (k x k, SAME) then 1x1 convs `mlp1`, `mlp2`, each followed by ReLU."""

    features: Sequence[int]
    kernel_size: int
    dtype: Any = jnp.float32
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    weight_init: str = "reference"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        names = ("conv", "mlp1", "mlp2")
        init = inits.choose("nin", self.weight_init, INITS)
        conv = conv_factory(
            self.kernels, dtype=self.dtype, kernel_init=init.conv, bias_init=init.conv_bias
        )
        for i, (features, name) in enumerate(zip(self.features, names, strict=True)):
            k = self.kernel_size if i == 0 else 1
            x = nn.relu(conv(features, (k, k), name=name)(x))
        return x


class NiN(nn.Module):
    """Three mlpconv blocks (192-160-96, 192-192-192, 192-192-classes), pools, dropout 0.5.

    As the authors' Caffe model, ReLU follows the last 1x1 conv too, before global pooling.
    `width_multiplier` scales every width but the last block's one map per class.
    `weight_init`: He et al. 2015's N(0, 2/fan_in) (the paper states none; see `INITS`).
    """

    num_classes: int = 10
    dropout: float = 0.5
    dtype: Any = jnp.float32
    width_multiplier: float = 1.0

    min_input_size: int = 6  # both 3x3/2 pools need a 3x3 input
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    weight_init: str = "reference"

    def __post_init__(self) -> None:
        inits.choose("nin", self.weight_init, INITS)  # one line when the model is built
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_input_size, "nin")
        x = x.astype(self.dtype)
        w = lambda *channels: tuple(scaled(c, self.width_multiplier) for c in channels)
        block = functools.partial(
            MlpConv, dtype=self.dtype, kernels=self.kernels, weight_init=self.weight_init
        )
        x = block(w(192, 160, 96), 5, name="mlpconv1")(x)
        x = ceil_mode_pool(x, "max", "pool1")
        x = nn.Dropout(self.dropout, deterministic=not train, name="drop1")(x)
        x = block(w(192, 192, 192), 5, name="mlpconv2")(x)
        x = ceil_mode_pool(x, "avg", "pool2")
        x = nn.Dropout(self.dropout, deterministic=not train, name="drop2")(x)
        x = block((*w(192, 192), self.num_classes), 3, name="mlpconv3")(x)
        return GlobalAvgPool(name="pool3")(x).astype(jnp.float32)
