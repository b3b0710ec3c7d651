"""AlexNet (Krizhevsky et al., 2012), torchvision's single-tower variant and a CIFAR one.

LeNet's pattern (CONV-POOL ... FC-FC-OUTPUT), much larger, with ReLU,
overlapping 3x3/2 max pooling, local response normalisation and dropout. One module
builds all three from a table of convolutions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_cases.models import inits
from cnn_cases.models.layers import (
    AdaptiveAvgPool,
    LocalResponseNorm,
    Pool,
    check_min_size,
    classifier,
    conv_factory,
    scaled,
)


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One k x k convolution and ReLU; then LRN and a 3x3/2 max pool where flagged.

    `groups=2` is the paper's two towers: each half of the filters sees half the channels.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    lrn: bool = False
    pool: bool = False


# The 2012 paper: conv2, conv4 and conv5 split over the two GPUs; LRN after conv1 and conv2.
PAPER: tuple[ConvLayer, ...] = (
    ConvLayer(96, 11, stride=4, lrn=True, pool=True),
    ConvLayer(256, 5, padding=2, groups=2, lrn=True, pool=True),
    ConvLayer(384, 3, padding=1),
    ConvLayer(384, 3, padding=1, groups=2),
    ConvLayer(256, 3, padding=1, groups=2, pool=True),
)

# torchvision.models.alexnet: one tower, no LRN, conv1 padded by 2.
TORCHVISION: tuple[ConvLayer, ...] = (
    ConvLayer(64, 11, stride=4, padding=2, pool=True),
    ConvLayer(192, 5, padding=2, pool=True),
    ConvLayer(384, 3, padding=1),
    ConvLayer(256, 3, padding=1),
    ConvLayer(256, 3, padding=1, pool=True),
)

# The paper's table for 32x32 inputs: conv1 5x5 stride 1 (pad 2) instead of 11x11 stride 4.
CIFAR: tuple[ConvLayer, ...] = (ConvLayer(96, 5, padding=2, lrn=True, pool=True), *PAPER[1:])


# Krizhevsky et al. 2012, Sec. 5: "We initialized the weights in each layer from a zero-mean
# Gaussian distribution with standard deviation 0.01. We initialized the neuron biases in the
# second, fourth, and fifth convolutional layers, as well as in the fully-connected hidden
# layers, with the constant 1 ... the remaining layers with the constant 0."
PAPER_INIT = inits.Inits(
    conv=inits.normal(0.01),
    dense=inits.normal(0.01),
    head=inits.normal(0.01),
    bias_overrides={"conv2": 1.0, "conv4": 1.0, "conv5": 1.0, "fc6": 1.0, "fc7": 1.0},
)
# At the CPU presets' 1/8 width that init does not train (on cifar10_jpeg at lr 0.02 the loss
# stays at ln 10 for 100 steps): the biases of 1 drown the input's signal. torchvision keeps
# PyTorch's default (variance 1/(3 fan_in)), which shrinks every ReLU layer's signal by sqrt(6).
# The default is He et al. 2015's rule for ReLU nets, N(0, 2/fan_in), zero biases, and
# N(0, 1/fan_in) for the classifier.
INITS = {
    "reference": inits.Inits(
        conv=inits.he_normal("fan_in"), dense=inits.he_normal("fan_in"), head=inits.lecun_normal()
    ),
    "paper": PAPER_INIT,
}


class AlexNet(nn.Module):
    """Five convolutions from `layers`, an adaptive 6x6 average pool, FC-FC-OUTPUT.

    Default: the 2012 paper, 96/256/384/384/256 filters, conv2/4/5 in two groups; 60,965,224
    params. Default input 227x227 (the paper's 224 does not divide); the adaptive pool (the
    identity at 227) lets 224x224 inputs work too. Layers are named conv1 ... conv5, lrn1,
    lrn2, pool1, pool2, pool5, avgpool, fc6 ... fc8. `width_multiplier` scales every
    convolution's filters (to a multiple of the largest group count) and the FC width.

    Initialisation (`weight_init`, `INITS`): He et al. 2015's N(0, 2/fan_in) by default; the
    paper's (Sec. 5) as "paper": weights N(0, 0.01^2), biases 1 in conv2, conv4, conv5, fc6
    and fc7 and 0 elsewhere.
    """

    layers: Sequence[ConvLayer] = PAPER
    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    width_multiplier: float = 1.0
    fc_width: int = 4096
    pool_size: tuple[int, int] = (6, 6)  # of the adaptive pool before the classifier

    min_input_size: int = 67
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    model_name: str = "alexnet"  # in error messages
    weight_init: str = "reference"  # see `cnn_cases.models.inits`

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_input_size, self.model_name)
        init = inits.choose(self.model_name, self.weight_init, INITS)
        conv = conv_factory(self.kernels, dtype=self.dtype, kernel_init=init.conv)
        x = x.astype(self.dtype)
        groups = max(layer.groups for layer in self.layers)
        for i, layer in enumerate(self.layers, start=1):
            p = layer.padding
            x = conv(
                groups * scaled(layer.features, self.width_multiplier / groups),
                (layer.kernel, layer.kernel),
                layer.stride,
                padding=[(p, p), (p, p)],
                feature_group_count=layer.groups,
                bias_init=init.bias(f"conv{i}", init.conv_bias),
                name=f"conv{i}",
            )(x)
            x = nn.relu(x)
            if layer.lrn:
                x = LocalResponseNorm(name=f"lrn{i}")(x)
            if layer.pool:
                x = Pool("max", 3, 2, name=f"pool{i}")(x)
        x = AdaptiveAvgPool(self.pool_size, name="avgpool")(x)
        fc_width = scaled(self.fc_width, self.width_multiplier)
        return classifier(x, self.num_classes, self.dropout, train, self.dtype, fc_width, init)


# torchvision.models.alexnet: 64/192/384/256/256 filters, no groups, no LRN; 61,100,840.
AlexNetTorchvision = functools.partial(
    AlexNet, layers=TORCHVISION, min_input_size=63, model_name="alexnet_torchvision"
)

# AlexNet for 32x32 images: the 2012 paper (two towers, LRN, overlapping pools, dropout in the
# FC layers) but for what 32x32 forces. An 11x11 stride-4 conv1 would leave 6x6 maps, too
# small for the three 3x3/2 pools, so conv1 is 5x5 stride 1 (pad 2), as in Krizhevsky's own
# CIFAR-10 nets (cuda-convnet's layers-18pct: 5x5/1 pad 2, then 3x3/2 pools); the maps then
# shrink 32 -> 15 -> 7 -> 3 and the classifier reads pool5's 3x3x256 (the adaptive pool is the
# identity) instead of 6x6x256. FC 4096-4096 as in the paper: 28,569,994 parameters and
# 200,290,304 multiply-adds per image (pinned in tests/test_models.py).
AlexNetCifar = functools.partial(
    AlexNet,
    layers=CIFAR,
    num_classes=10,
    pool_size=(3, 3),
    min_input_size=15,
    model_name="alexnet_cifar",
)
