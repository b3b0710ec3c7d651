"""Model registry: `get_model(name, **overrides)`, `input_shape(name)`, `MODELS`.

Every model is called as `model.apply(variables, x, train=False)` with x of shape
(N, H, W, C); `model.init(key, x, train=True)` creates every parameter, auxiliary
heads included. `weight_init` (`INITS`) chooses how the weights start: "reference", the
one each model's docstring cites (the default), "paper", or "flax" (flax's defaults).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from cnn_cases.models import alexnet, inception, lenet, nin, resnet, vgg
from cnn_cases.models.inits import INITS as INITS


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build the model and what the literature says of it."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    published_params: int | None = None
    published_macs: int | None = None
    source: str = ""
    params_range: tuple[int, int] | None = None  # when no exact published count exists


IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)
TV = "torchvision"

# Published parameters and multiply-adds (torchvision) of VGG by depth.
_VGG = {
    11: (132_863_336, 7_610_000_000),
    13: (133_047_848, 11_310_000_000),
    16: (138_357_544, 15_470_000_000),
    19: (143_667_240, 19_630_000_000),
}

_RESNETS = (
    ("resnet18", resnet.ResNet18, 11_689_512, 1_814_000_000),
    ("resnet34", resnet.ResNet34, 21_797_672, 3_664_000_000),
    ("resnet50", resnet.ResNet50, 25_557_032, 4_089_000_000),
    ("resnet101", resnet.ResNet101, 44_549_160, 7_801_000_000),
    ("resnet152", resnet.ResNet152, 60_192_808, 11_514_000_000),
    ("plain18", resnet.Plain18, None, None),
    ("plain34", resnet.Plain34, None, None),
)

# He et al. Table 6; it gives only "19.4M" for ResNet-1202 (and no plain-1202).
_CIFAR_PARAMS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
}


# VGG-11 (configuration A, which Simonyan & Zisserman trained from scratch) and VGG-16 for
# CIFAR; other depths: `functools.partial(vgg.VGGCifar, stage_sizes=vgg.STAGES[19])`.
CIFAR_VGG_DEPTHS = (11, 16)


def _vgg_entries() -> dict[str, ModelSpec]:
    entries = {}
    for depth, (params, macs) in _VGG.items():
        stages = vgg.STAGES[depth]
        bn_params = 2 * sum(n * w for n, w in zip(stages, vgg.WIDTHS, strict=True))
        entries[f"vgg{depth}"] = ModelSpec(
            functools.partial(vgg.VGG, stage_sizes=stages),
            IMAGENET,
            published_params=params,
            published_macs=macs,
            source=TV,
        )
        entries[f"vgg{depth}_bn"] = ModelSpec(
            functools.partial(vgg.VGG, stage_sizes=stages, batch_norm=True),
            IMAGENET,
            published_params=params + bn_params,
            published_macs=macs,
            source=TV + " (BN adds 2 parameters per channel)",
        )
        for bn in (False, True) if depth in CIFAR_VGG_DEPTHS else ():
            entries[f"vgg{depth}_cifar{'_bn' if bn else ''}"] = ModelSpec(
                functools.partial(vgg.VGGCifar, stage_sizes=stages, batch_norm=bn),
                CIFAR,
                source="VGG's stages on 32x32, FC 512-512 (pytorch-vgg-cifar10)",
            )
    return entries


def _cifar_resnet_entries() -> dict[str, ModelSpec]:
    entries = {
        f"{'resnet' if residual else 'plain'}{depth}": ModelSpec(
            functools.partial(resnet.cifar_resnet, depth, residual=residual),
            CIFAR,
            published_params=params,
            source="He et al. 2016, Table 6 (option A)",
        )
        for depth, params in _CIFAR_PARAMS.items()
        for residual in (True, False)
    }
    entries["resnet1202"] = ModelSpec(
        functools.partial(resnet.cifar_resnet, 1202, residual=True),
        CIFAR,
        params_range=(19_300_000, 19_500_000),
        source="He et al. 2016, Table 6 (option A)",
    )
    return entries


_ENTRIES: dict[str, ModelSpec] = {
    "lenet5": ModelSpec(
        lenet.LeNet5, (32, 32, 1), published_params=61_706, source="modern LeNet-5, 6-16-120-84-10"
    ),
    "lenet5_1998": ModelSpec(
        lenet.LeNet5Paper, (32, 32, 1), published_params=60_000, source="LeCun et al. 1998"
    ),
    "alexnet": ModelSpec(
        alexnet.AlexNet,
        (227, 227, 3),
        published_params=60_965_224,
        source="Krizhevsky et al. 2012 (two towers)",
    ),
    "alexnet_torchvision": ModelSpec(
        alexnet.AlexNetTorchvision,
        IMAGENET,
        published_params=61_100_840,
        published_macs=714_000_000,
        source=TV,
    ),
    "alexnet_cifar": ModelSpec(
        alexnet.AlexNetCifar, CIFAR, source="the 2012 paper on 32x32: conv1 5x5/1 (cuda-convnet)"
    ),
    **_vgg_entries(),
    **{
        name: ModelSpec(
            factory,
            IMAGENET,
            published_params=params,
            published_macs=macs,
            source=TV if params else "He et al. 2016",
        )
        for name, factory, params, macs in _RESNETS
    },
    **_cifar_resnet_entries(),
    "nin": ModelSpec(nin.NiN, CIFAR, source="Lin et al. 2014, CIFAR-10"),
    "googlenet": ModelSpec(
        inception.GoogLeNet,
        IMAGENET,
        published_macs=1_500_000_000,
        params_range=(6_000_000, 7_000_000),
        source="Szegedy et al. 2015 (~6.8M, 1.5B mult-adds)",
    ),
    "inception_cifar": ModelSpec(
        inception.InceptionCifar, CIFAR, source="CIFAR-scale Inception, 1x1 bottlenecks"
    ),
    "inception_cifar_naive": ModelSpec(
        functools.partial(inception.InceptionCifar, bottleneck=False),
        CIFAR,
        source="CIFAR-scale Inception, naive modules (same widths)",
    ),
    "googlenet_cifar": ModelSpec(
        inception.GoogLeNetCifar, CIFAR, source="CIFAR-scale GoogLeNet with two auxiliary heads"
    ),
}

MODELS: dict[str, ModelSpec] = dict(sorted(_ENTRIES.items()))


_CIFAR_NAME = re.compile(r"(resnet|plain)(\d+)$")


def _lookup(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    match = _CIFAR_NAME.match(name)
    if match:  # CIFAR nets of any depth 6n+2 (the factory rejects other depths)
        residual, depth = match.group(1) == "resnet", int(match.group(2))
        resnet.cifar_depth_to_blocks(depth)
        return ModelSpec(
            functools.partial(resnet.cifar_resnet, depth, residual=residual),
            CIFAR,
            source="He et al. 2016, section 4.2",
        )
    raise ValueError(
        f"unknown model {name!r}; valid models: {', '.join(MODELS)} "
        "(and resnetD / plainD for any CIFAR depth D = 6n+2)"
    )


def get_model(name: str, **overrides: Any) -> nn.Module:
    """Builds registry model `name`; `overrides` (num_classes, dtype, ...) go to its constructor."""
    return _lookup(name).factory(**overrides)


def input_shape(name: str) -> tuple[int, int, int]:
    """The model's default input (H, W, C)."""
    return _lookup(name).input_shape


def spec(name: str) -> ModelSpec:
    """The registry entry of `name`."""
    return _lookup(name)


def has_aux_heads(model: nn.Module) -> bool:
    """Whether `model` has auxiliary classifiers that can run at inference (`with_aux`)."""
    return bool(getattr(model, "aux_logits", False)) and (
        "with_aux" in inspect.signature(model.__call__).parameters
    )
