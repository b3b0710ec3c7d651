"""AlexNet (Krizhevsky et al., 2012) and torchvision's single-tower variant.

LeNet's pattern (CONV-POOL ... FC-FC-OUTPUT), much larger, with ReLU,
overlapping 3x3/2 max pooling, local response normalisation and dropout.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_cases.models.layers import (
    AdaptiveAvgPool,
    LocalResponseNorm,
    Pool,
    check_min_size,
    classifier,
    conv_factory,
)


class AlexNet(nn.Module):
    """The 2012 paper: 96/256/384/384/256 filters, conv2/4/5 in two groups; 60,965,224 params.

    Default input 227x227 (the paper's 224 does not divide); an adaptive average pool to 6x6
    before the classifier (the identity at 227) lets 224x224 inputs work too.
    """

    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32

    min_input_size: int = 67
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_input_size, "alexnet")
        conv_cls = conv_factory(self.kernels, dtype=self.dtype)
        conv = lambda f, k, s=1, p=0, g=1, name=None: conv_cls(
            f,
            (k, k),
            s,
            padding=[(p, p), (p, p)],
            feature_group_count=g,
            name=name,
        )
        x = x.astype(self.dtype)
        x = nn.relu(conv(96, 11, 4, name="conv1")(x))
        x = Pool("max", 3, 2, name="pool1")(LocalResponseNorm(name="lrn1")(x))
        x = nn.relu(conv(256, 5, p=2, g=2, name="conv2")(x))
        x = Pool("max", 3, 2, name="pool2")(LocalResponseNorm(name="lrn2")(x))
        x = nn.relu(conv(384, 3, p=1, name="conv3")(x))
        x = nn.relu(conv(384, 3, p=1, g=2, name="conv4")(x))
        x = nn.relu(conv(256, 3, p=1, g=2, name="conv5")(x))
        x = Pool("max", 3, 2, name="pool5")(x)
        x = AdaptiveAvgPool((6, 6), name="avgpool")(x)
        return classifier(x, self.num_classes, self.dropout, train, self.dtype)


class AlexNetTorchvision(nn.Module):
    """torchvision.models.alexnet: 64/192/384/256/256 filters, no groups, no LRN; 61,100,840."""

    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32

    min_input_size: int = 63
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_input_size, "alexnet_torchvision")
        conv_cls = conv_factory(self.kernels, dtype=self.dtype)
        conv = lambda f, k, s=1, p=0, name=None: conv_cls(
            f, (k, k), s, padding=[(p, p), (p, p)], name=name
        )
        x = x.astype(self.dtype)
        x = nn.relu(conv(64, 11, 4, 2, name="conv1")(x))
        x = Pool("max", 3, 2, name="pool1")(x)
        x = nn.relu(conv(192, 5, p=2, name="conv2")(x))
        x = Pool("max", 3, 2, name="pool2")(x)
        x = nn.relu(conv(384, 3, p=1, name="conv3")(x))
        x = nn.relu(conv(256, 3, p=1, name="conv4")(x))
        x = nn.relu(conv(256, 3, p=1, name="conv5")(x))
        x = Pool("max", 3, 2, name="pool5")(x)
        x = AdaptiveAvgPool((6, 6), name="avgpool")(x)
        return classifier(x, self.num_classes, self.dropout, train, self.dtype)
