"""Inception modules and GoogLeNet (Szegedy et al., 2015), for ImageNet and for CIFAR.

`InceptionModule` is Figure 2b (1x1 "bottleneck" reductions before the 3x3 and 5x5
convs, 1x1 projection after the pool) or, with `bottleneck=False`, the naive
Figure 2a (the same 1x1/3x3/5x5 widths straight on the input, pool passed through).

`GoogLeNet` is Table 1 with the two auxiliary classifiers on (4a) and (4d). Counted with
`jax.eval_shape(model.init, ...)` at 224x224: 6,998,552 parameters without the auxiliary
heads (the paper says ~6.8M; torchvision's BatchNorm variant, whose "5x5" branch is 3x3,
has 6,624,904) and 13,378,280 with them; 1,582,671,872 multiply-adds (paper: ~1.5B).
Inception (3a) has 163,328 weights, 163,696 parameters with biases, and 128,049,152
multiply-adds on 28x28x192. Built from naive modules (`bottleneck=False`) the same
network would have 97,526,008 parameters and 12.6B multiply-adds.

`InceptionCifar` and `GoogLeNetCifar` are the same model with other defaults: a 3x3
stem for 32x32 images, BatchNorm, 1/4 of GoogLeNet's widths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_cases.models import inits
from cnn_cases.models.layers import (
    Flatten,
    GlobalAvgPool,
    LocalResponseNorm,
    Pool,
    ceil_mode_pool,
    check_min_size,
    conv_factory,
    norm_factory,
    pool_out_size,
    scaled,
)

ModuleDef = Any
# Branch widths in Table 1 order: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
Widths = tuple[int, int, int, int, int, int]

# Table 1, inception (3a)-(3b), (4a)-(4e), (5a)-(5b); a 3x3/2 max pool precedes each stage.
GOOGLENET_STAGES: tuple[tuple[Widths, ...], ...] = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)

# bvlc_googlenet's LRN: local_size 5, alpha 1e-4, beta 0.75, k 1; Caffe divides alpha by size.
# One module per stage, (3a) at 16x16 and (4a) at 8x8: compiles in seconds (smoke runs, tests).
SMOKE_STAGES = (GOOGLENET_STAGES[0][:1], GOOGLENET_STAGES[1][:1])

LRN = {"size": 5, "k": 1.0, "alpha": 1e-4 / 5, "beta": 0.75}

AUX_POOL = 5  # the auxiliary heads' 5x5/3 VALID average pool needs at least 5x5 features

# Szegedy et al. 2015 state no initialisation. BVLC's Caffe replication (`bvlc_googlenet`,
# whose LRN this model follows; its readme: "uses xavier to initialize the weights instead of
# gaussian"): Caffe's Xavier filler, uniform in +-sqrt(3/fan_in), for every weight; biases 0.2
# in the convolutions and the auxiliary heads' FC layers, 0 in the classifiers. torchvision's
# BatchNorm variant draws trunc_normal_(std=0.01) instead. Under BatchNorm the convolutions
# have no bias. Without BatchNorm, at 1/8 width, neither this init nor He et al.'s moved the
# loss in 60 steps at lr 0.04 (`scripts/learns.py`); with BatchNorm it falls within 20, so the
# ImageNet preset trains GoogLeNet with BatchNorm, as torchvision's does.
BVLC_INIT = inits.Inits(
    conv=inits.caffe_xavier(),
    dense=inits.caffe_xavier(),
    head=inits.caffe_xavier(),
    conv_bias=inits.constant(0.2),
    dense_bias=inits.constant(0.2),
)
INITS = {"reference": BVLC_INIT}


def conv_unit(
    x: jax.Array,
    features: int,
    size: int,
    name: str,
    *,
    conv: ModuleDef,
    norm: ModuleDef | None,
    act: Callable[[jax.Array], jax.Array],
    **kwargs: Any,
) -> jax.Array:
    """Conv (biased unless `norm` is given), BatchNorm `{name}_bn` if `norm`, activation."""
    y = conv(features, (size, size), use_bias=norm is None, name=name, **kwargs)(x)
    if norm is not None:
        return norm(name=f"{name}_bn", act=act)(y)
    return act(y)


class InceptionModule(nn.Module):
    """Figure 2b (`bottleneck=True`) or the naive Figure 2a, branches concatenated on channels.

    Out channels: c1 + c3 + c5 + pool_proj, or c1 + c3 + c5 + C_in for the naive module
    (no reductions, pool branch unprojected). `norm` adds BN after every conv, which then has
    no bias, and (BN + activation) on the naive module's pool branch.
    """

    c1: int
    c3r: int
    c3: int
    c5r: int
    c5: int
    pool_proj: int
    bottleneck: bool = True
    conv: ModuleDef = nn.Conv
    norm: ModuleDef | None = None
    act: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        unit = functools.partial(conv_unit, conv=self.conv, norm=self.norm, act=self.act)
        b1 = unit(x, self.c1, 1, "b1x1")
        b3 = unit(x, self.c3r, 1, "b3x3_reduce") if self.bottleneck else x
        b3 = unit(b3, self.c3, 3, "b3x3")
        b5 = unit(x, self.c5r, 1, "b5x5_reduce") if self.bottleneck else x
        b5 = unit(b5, self.c5, 5, "b5x5")
        pool = Pool("max", 3, 1, padding="SAME", name="pool")(x)
        if self.bottleneck:
            pool = unit(pool, self.pool_proj, 1, "pool_proj")
        elif self.norm is not None:
            # Puts the passed-through channels on the scale of the other branches' BN outputs.
            pool = self.norm(name="pool_bn", act=self.act)(pool)
        return jnp.concatenate([b1, b3, b5, pool], axis=-1)


class AuxClassifier(nn.Module):
    """GoogLeNet's side head: 5x5/3 avg pool, 1x1 conv + ReLU, FC + ReLU, dropout, linear."""

    num_classes: int
    conv_width: int = 128
    fc_width: int = 1024
    dropout: float = 0.7
    conv: ModuleDef = nn.Conv
    norm: ModuleDef | None = None
    dtype: Any = jnp.float32
    weight_init: str = "reference"  # see `INITS`

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        init = inits.choose("googlenet", self.weight_init, INITS)
        x = Pool("avg", AUX_POOL, 3, name="pool")(x)
        x = conv_unit(x, self.conv_width, 1, "conv", conv=self.conv, norm=self.norm, act=nn.relu)
        x = Flatten(name="flatten")(x)
        fc = nn.Dense(
            self.fc_width,
            dtype=self.dtype,
            kernel_init=init.dense,
            bias_init=init.dense_bias,
            name="fc",
        )
        x = fc(x)
        x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(nn.relu(x))
        head = init.classifier(self.num_classes, dtype=self.dtype, name="classifier")
        return head(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet, Table 1: stem, inception stages 3/4/5 with max pools between, avg pool, FC.

    `model.apply(v, x, train=False)` returns logits; with `train=True` and `aux_logits`,
    `(logits, (aux1, aux2))` from the heads on `aux_after` (the heads' FC input, and so their
    parameter count, depends on the input size). Modules are named `inception3a` ... and
    `width_multiplier` scales every width (GoogLeNet's fixed ones included).
    `weight_init`: BVLC's Caffe replication's (the paper states none; see `INITS`).
    """

    num_classes: int = 1000
    stages: Sequence[Sequence[Widths]] = GOOGLENET_STAGES
    stem: str = "imagenet"
    width_multiplier: float = 1.0
    bottleneck: bool = True
    batch_norm: bool = False
    aux_logits: bool = True
    aux_after: Sequence[str] = ("4a", "4d")
    dropout: float = 0.4
    aux_dropout: float = 0.7
    dtype: Any = jnp.float32
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    weight_init: str = "reference"  # see `INITS` and `cnn_cases.models.inits`

    def __post_init__(self) -> None:
        inits.choose(type(self).__name__, self.weight_init, INITS)  # one line when built
        super().__post_init__()

    def module_names(self) -> list[list[str]]:
        """Per stage, the module names without prefix: [["3a", "3b"], ["4a", ...], ...]."""
        return [
            [f"{i + 3}{'abcdefghij'[j]}" for j in range(len(stage))]
            for i, stage in enumerate(self.stages)
        ]

    def stage_sizes(self, size: int) -> list[int]:
        """Feature map height/width in each stage for a `size`x`size` input (0: too small)."""
        if self.stem == "imagenet":
            size = pool_out_size((size - 1) // 2 + 1)  # conv1 7x7/2 pad 3, pool1
        sizes = []
        for _ in self.stages:
            size = pool_out_size(size)
            sizes.append(size)
        return sizes

    @property
    def min_input_size(self) -> int:
        """Smallest input with every pool window in bounds (and 5x5 maps under aux heads)."""
        need = {i: 1 for i in range(len(self.stages))}
        if self.aux_logits:
            for i, names in enumerate(self.module_names()):
                if any(n in self.aux_after for n in names):
                    need[i] = AUX_POOL
        size = 1
        while any(s < need[i] for i, s in enumerate(self.stage_sizes(size))):
            size += 1
        return size

    def _width(self, channels: int) -> int:
        return scaled(channels, self.width_multiplier)

    def _checked_names(self, x: jax.Array) -> list[list[str]]:
        """`module_names()`, after one-line errors for a bad stem, aux_after or input size."""
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem {self.stem!r} is not valid (valid: 'imagenet', 'cifar')")
        names = self.module_names()
        missing = [n for n in self.aux_after if not any(n in s for s in names)]
        if self.aux_logits and missing:
            raise ValueError(f"aux_after names unknown modules {missing}; modules: {names}")
        check_min_size(x, self.min_input_size, type(self).__name__)
        return names

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, with_aux: bool | None = None
    ) -> jax.Array | tuple[jax.Array, tuple[jax.Array, ...]]:
        """Logits; `(logits, aux_logits)` when the aux heads run (default: in training).

        `with_aux=True` with `train=False` runs the heads in inference mode (no dropout, BN
        running averages) to measure how well intermediate layers already predict.
        """
        names = self._checked_names(x)
        init = inits.choose(type(self).__name__, self.weight_init, INITS)
        conv = conv_factory(
            self.kernels, dtype=self.dtype, kernel_init=init.conv, bias_init=init.conv_bias
        )
        norm = norm_factory(train, self.kernels, dtype=self.dtype) if self.batch_norm else None
        unit = functools.partial(conv_unit, conv=conv, norm=norm, act=nn.relu)
        w = self._width

        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = unit(x, w(64), 7, "conv1", strides=2, padding=((3, 3), (3, 3)))
            x = ceil_mode_pool(x, "max", "pool1")
            x = LocalResponseNorm(**LRN, name="lrn1")(x)
            x = unit(x, w(64), 1, "conv2_reduce")
            x = unit(x, w(192), 3, "conv2")
            x = LocalResponseNorm(**LRN, name="lrn2")(x)
        else:
            # Stands in for the ImageNet stem, which ends in 192 channels.
            x = unit(x, w(192), 3, "conv1")

        aux_inputs = {}
        for i, (stage, stage_names) in enumerate(zip(self.stages, names, strict=True)):
            x = ceil_mode_pool(x, "max", f"pool{i + 2}")
            for widths, name in zip(stage, stage_names, strict=True):
                x = InceptionModule(
                    *(w(c) for c in widths),
                    bottleneck=self.bottleneck,
                    conv=conv,
                    norm=norm,
                    name=f"inception{name}",
                )(x)
                aux_inputs[name] = x

        x = GlobalAvgPool(name="avgpool")(x)
        x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(x)
        logits = init.classifier(self.num_classes, dtype=self.dtype, name="fc")(x)
        logits = logits.astype(jnp.float32)
        if not ((train if with_aux is None else with_aux) and self.aux_logits):
            return logits
        aux = tuple(
            AuxClassifier(
                self.num_classes,
                conv_width=w(128),
                fc_width=w(1024),
                dropout=self.aux_dropout,
                conv=conv,
                norm=norm,
                dtype=self.dtype,
                weight_init=self.weight_init,
                name=f"aux{k + 1}",
            )(aux_inputs[name], train=train)
            for k, name in enumerate(self.aux_after)
        )
        return logits, aux


# InceptionCifar: GoogLeNet's first five modules, (3a)-(3b) at 16x16 and (4a)-(4c) at 8x8.
CIFAR_STAGES: tuple[tuple[Widths, ...], ...] = (GOOGLENET_STAGES[0], GOOGLENET_STAGES[1][:3])


class GoogLeNetCifar(GoogLeNet):
    """CIFAR GoogLeNet: all nine modules at 1/4 width (16x16, 8x8, 4x4), BN, auxiliary heads.

    The heads on (4a) and (4d): 5x5/3 avg pool -> 2x2, 1x1 conv 32, FC 256, dropout 0.7.
    372,578 parameters without the heads, 452,214 with them; 24.0M multiply-adds per image.
    """

    num_classes: int = 10
    stem: str = "cifar"
    width_multiplier: float = 0.25
    batch_norm: bool = True


class InceptionCifar(GoogLeNetCifar):
    """CIFAR Inception net for naive-vs-bottleneck runs: 3x3 stem, (3a)-(4c) at 1/4 width, BN.

    `bottleneck=False` keeps the 1x1/3x3/5x5 widths and drops the reductions and pool
    projections (Figure 2a). No auxiliary heads, no dropout. 121,962 parameters and 15.5M
    multiply-adds per 32x32 image; naive: 1,052,170 and 93.9M (BN scale/bias included).
    """

    stages: Sequence[Sequence[Widths]] = CIFAR_STAGES
    aux_logits: bool = False
    dropout: float = 0.0
