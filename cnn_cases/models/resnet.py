"""Plain nets and ResNets (He et al., 2016), for ImageNet and for CIFAR.

One `ResNet` module; variants are `functools.partial`s. Plain and residual
nets differ only in `block_cls`: `PlainBlock` is `ResidualBlock` without the
shortcut, so a residual block computes a[l+2] = g(z[l+2] + a[l]) and a plain
block g(z[l+2]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_cases.models import inits
from cnn_cases.models.layers import (
    GlobalAvgPool,
    Pool,
    check_min_size,
    conv_factory,
    norm_factory,
)

ModuleDef = Any

# 3x3 convolutions pad one pixel on every side, as torchvision, Caffe and He et al.'s CIFAR
# code do. Flax's "SAME" pads a stride-2 convolution on an even input by 0 before and 1 after:
# another function (and, for option A, off by one pixel from the shortcut's x[::2, ::2]).
PAD_3X3 = ((1, 1), (1, 1))


def shortcut_a(x: jax.Array, filters: int, strides: int) -> jax.Array:
    """Option A: identity, subsampled by `strides`, extra channels zero-padded (no parameters)."""
    if strides > 1:
        x = x[:, ::strides, ::strides, :]
    extra = filters - x.shape[-1]
    if extra:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return x


class ResidualBlock(nn.Module):
    """Two 3x3 convs with BN; the input is added before the last activation.

    `branch` runs up to the last convolution, z[l+2] before its BatchNorm; that BatchNorm
    then computes g(bn(z[l+2]) + a[l]) in one step (fused on oneDNN).
    """

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable[[jax.Array], jax.Array] = nn.relu
    strides: int = 1
    shortcut: str = "B"
    zero_init: bool = False

    residual: ClassVar[bool] = True
    expansion: ClassVar[int] = 1
    last_norm: ClassVar[str] = "bn2"

    def branch(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.filters, (3, 3), self.strides, padding=PAD_3X3, name="conv1")(x)
        y = self.norm(name="bn1", act=self.act)(y)
        return self.conv(self.filters, (3, 3), padding=PAD_3X3, name="conv2")(y)

    def _last_scale_init(self) -> Callable[..., jax.Array]:
        # Zero-init only where a shortcut carries the signal; a plain net would go dead.
        return nn.initializers.zeros if (self.zero_init and self.residual) else nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        z = self.branch(x)
        residual = None
        if self.residual:
            residual = x
            if residual.shape != z.shape:
                if self.shortcut == "A":
                    residual = shortcut_a(x, z.shape[-1], self.strides)
                else:
                    residual = self.conv(z.shape[-1], (1, 1), self.strides, name="conv_proj")(x)
                    residual = self.norm(name="bn_proj")(residual)
        norm = self.norm(name=self.last_norm, scale_init=self._last_scale_init(), act=self.act)
        return norm(z, residual=residual)


class PlainBlock(ResidualBlock):
    """`ResidualBlock` without the shortcut: a[l+2] = g(z[l+2])."""

    residual: ClassVar[bool] = False


class BottleneckBlock(ResidualBlock):
    """1x1 reduce, 3x3 (strided, as torchvision v1.5), 1x1 expand x4."""

    expansion: ClassVar[int] = 4
    last_norm: ClassVar[str] = "bn3"

    def branch(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.filters, (1, 1), name="conv1")(x)
        y = self.norm(name="bn1", act=self.act)(y)
        y = self.conv(self.filters, (3, 3), self.strides, padding=PAD_3X3, name="conv2")(y)
        y = self.norm(name="bn2", act=self.act)(y)
        return self.conv(self.filters * 4, (1, 1), name="conv3")(y)


# He et al. 2016, Sec. 3.4: "We initialize the weights as in [13]", He et al. 2015: N(0, 2/n),
# n = k*k*C_in (its forward rule; the backward rule's n = k*k*C_out is equally valid there).
PAPER_INIT = inits.Inits(conv=inits.he_normal("fan_in"), head=inits.he_normal("fan_in"))
# torchvision.models.resnet: kaiming_normal_(mode="fan_out", nonlinearity="relu") for every
# convolution; its fc keeps PyTorch's Linear default, U(+-1/sqrt(fan_in)) (the bias starts at
# 0 here).
TORCHVISION_INIT = inits.Inits(conv=inits.he_normal("fan_out"), head=inits.torch_linear())
# The ImageNet nets default to torchvision's. The CIFAR nets' convolutions take the paper's
# rule, as akamaster/pytorch_resnet_cifar10 does (kaiming_normal_, fan_in), and their FC layer
# PyTorch's default: He's N(0, 2/fan_in) on a linear classifier (akamaster's choice) starts
# ResNet-20 at logits of standard deviation ~18.
CIFAR_INIT = inits.Inits(conv=inits.he_normal("fan_in"), head=inits.torch_linear())
INITS = {
    "imagenet": {"reference": TORCHVISION_INIT, "paper": PAPER_INIT},
    "cifar": {"reference": CIFAR_INIT, "paper": PAPER_INIT},
}


class ResNet(nn.Module):
    """ResNet / plain net.

    `stem="imagenet"`: 7x7/2 conv, 3x3/2 max pool (He et al. Table 1).
    `stem="cifar"`: one 3x3 conv (He et al. section 4.2).
    `scan=True`: blocks 2..n of each stage (identical shapes) run as one `nn.scan` over
    stacked parameters (`stage{i}_block2_to_{n}`, leading axis n-1): same function and
    parameter count, but each stage is traced and compiled once, so compile time stays
    flat in depth.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int = 1000
    widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"
    shortcut: str = "B"
    zero_init_residual: bool = False
    act: Callable[[jax.Array], jax.Array] = nn.relu
    dtype: Any = jnp.float32
    scan: bool = False
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    weight_init: str = "reference"  # see `INITS` and `cnn_cases.models.inits`

    @property
    def min_input_size(self) -> int:
        return (4 if self.stem == "imagenet" else 1) * 2 ** (len(self.stage_sizes) - 1)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_input_size, type(self).__name__)
        init = inits.choose(type(self).__name__, self.weight_init, INITS.get(self.stem, {}))
        conv = conv_factory(self.kernels, use_bias=False, dtype=self.dtype, kernel_init=init.conv)
        norm = norm_factory(train, self.kernels, dtype=self.dtype)
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = conv(self.widths[0], (7, 7), 2, padding=[(3, 3), (3, 3)], name="conv_init")(x)
            x = norm(name="bn_init", act=self.act)(x)
            x = Pool("max", 3, 2, padding=((1, 1), (1, 1)), name="pool_init")(x)
        else:
            x = conv(self.widths[0], (3, 3), padding=PAD_3X3, name="conv_init")(x)
            x = norm(name="bn_init", act=self.act)(x)
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            block = functools.partial(
                self.block_cls,
                width,
                conv=conv,
                norm=norm,
                act=self.act,
                shortcut=self.shortcut,
                zero_init=self.zero_init_residual,
            )
            if self.scan and size > 1:
                # The first block may change shape; the rest map (N, H, W, C) to itself.
                x = block(strides=2 if i > 0 else 1, name=f"stage{i + 1}_block1")(x)
                x = _scan_blocks(block(name=f"stage{i + 1}_block2_to_{size}"), x, size - 1)
                continue
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                x = block(strides=strides, name=f"stage{i + 1}_block{j + 1}")(x)
        x = GlobalAvgPool(name="pool")(x)
        x = init.classifier(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


def _scan_blocks(block: nn.Module, x: jax.Array, length: int) -> jax.Array:
    """`block` applied `length` times, each time with its own slice of stacked variables."""
    body = nn.scan(
        lambda module, carry, _: (module(carry), None),
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True},
        length=length,
    )
    return body(block, x, None)[0]


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResidualBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=ResidualBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=BottleneckBlock)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=BottleneckBlock)
Plain18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=PlainBlock)
Plain34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=PlainBlock)


def cifar_depth_to_blocks(depth: int) -> int:
    """Blocks per stage n of a CIFAR net of depth 6n+2; ValueError otherwise."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR ResNet depth {depth!r} is not 6n+2 with n >= 1 "
            "(valid: 8, 14, 20, 26, 32, 44, 56, 110, 1202, ...)"
        )
    return (depth - 2) // 6


def cifar_resnet(
    depth: int,
    *,
    residual: bool = True,
    width: int = 16,
    num_classes: int = 10,
    shortcut: str = "A",
    **kwargs: Any,
) -> ResNet:
    """He et al. section 4.2: 6n+2 layers, widths width/2width/4width, option A shortcuts."""
    n = cifar_depth_to_blocks(depth)
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut {shortcut!r} is not valid (valid: 'A', 'B')")
    return ResNet(
        stage_sizes=(n, n, n),
        block_cls=ResidualBlock if residual else PlainBlock,
        num_classes=num_classes,
        widths=(width, 2 * width, 4 * width),
        stem="cifar",
        shortcut=shortcut,
        **kwargs,
    )
