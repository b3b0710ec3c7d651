"""Model registry: `get_model(name, **overrides)`, `input_shape(name)`, `MODELS`.

Every model is called as `model.apply(variables, x, train=False)` with x of shape
(N, H, W, C); `model.init(key, x, train=True)` creates every parameter, auxiliary
heads included.
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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build the model and what the literature says of it."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    published_params: int | None = None
    published_macs: int | None = None
    source: str = ""
    params_range: tuple[int, int] | None = None  # when no exact published count exists


def _spec(factory: Callable[..., nn.Module], shape: tuple[int, int, int], **kw: Any) -> ModelSpec:
    return ModelSpec(factory, shape, **kw)


IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)
TV = "torchvision"

_ENTRIES: dict[str, ModelSpec] = {
    "lenet5": _spec(
        lenet.LeNet5, (32, 32, 1), published_params=61_706, source="modern LeNet-5, 6-16-120-84-10"
    ),
    "lenet5_1998": _spec(
        lenet.LeNet5Paper, (32, 32, 1), published_params=60_000, source="LeCun et al. 1998"
    ),
    "alexnet": _spec(
        alexnet.AlexNet,
        (227, 227, 3),
        published_params=60_965_224,
        source="Krizhevsky et al. 2012 (two towers)",
    ),
    "alexnet_torchvision": _spec(
        alexnet.AlexNetTorchvision,
        IMAGENET,
        published_params=61_100_840,
        published_macs=714_000_000,
        source=TV,
    ),
}

for _depth, _params, _macs in (
    (11, 132_863_336, 7_610_000_000),
    (13, 133_047_848, 11_310_000_000),
    (16, 138_357_544, 15_470_000_000),
    (19, 143_667_240, 19_630_000_000),
):
    _ENTRIES[f"vgg{_depth}"] = _spec(
        functools.partial(vgg.VGG, stage_sizes=vgg.STAGES[_depth]),
        IMAGENET,
        published_params=_params,
        published_macs=_macs,
        source=TV,
    )
    _ENTRIES[f"vgg{_depth}_bn"] = _spec(
        functools.partial(vgg.VGG, stage_sizes=vgg.STAGES[_depth], batch_norm=True),
        IMAGENET,
        published_params=_params
        + 2 * sum(n * w for n, w in zip(vgg.STAGES[_depth], (64, 128, 256, 512, 512), strict=True)),
        published_macs=_macs,
        source=TV + " (BN adds 2 parameters per channel)",
    )

for _name, _factory, _params, _macs in (
    ("resnet18", resnet.ResNet18, 11_689_512, 1_814_000_000),
    ("resnet34", resnet.ResNet34, 21_797_672, 3_664_000_000),
    ("resnet50", resnet.ResNet50, 25_557_032, 4_089_000_000),
    ("resnet101", resnet.ResNet101, 44_549_160, 7_801_000_000),
    ("resnet152", resnet.ResNet152, 60_192_808, 11_514_000_000),
    ("plain18", resnet.Plain18, None, None),
    ("plain34", resnet.Plain34, None, None),
):
    _ENTRIES[_name] = _spec(
        _factory,
        IMAGENET,
        published_params=_params,
        published_macs=_macs,
        source=TV if _params else "He et al. 2016",
    )

_CIFAR_PARAMS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
    1202: 19_400_000,
}
for _depth, _params in _CIFAR_PARAMS.items():
    _exact = _depth != 1202  # He et al. Table 6 gives only "19.4M" for ResNet-1202.
    for _residual in (True, False):
        if _depth == 1202 and not _residual:
            continue
        _ENTRIES[f"{'resnet' if _residual else 'plain'}{_depth}"] = _spec(
            functools.partial(resnet.cifar_resnet, _depth, residual=_residual),
            CIFAR,
            published_params=_params if _exact else None,
            params_range=None if _exact else (19_300_000, 19_500_000),
            source="He et al. 2016, Table 6 (option A)",
        )

_ENTRIES["nin"] = _spec(nin.NiN, CIFAR, source="Lin et al. 2014, CIFAR-10")
_ENTRIES["googlenet"] = _spec(
    inception.GoogLeNet,
    IMAGENET,
    published_macs=1_500_000_000,
    params_range=(6_000_000, 7_000_000),
    source="Szegedy et al. 2015 (~6.8M, 1.5B mult-adds)",
)
_ENTRIES["inception_cifar"] = _spec(
    inception.InceptionCifar, CIFAR, source="CIFAR-scale Inception, 1x1 bottlenecks"
)
_ENTRIES["inception_cifar_naive"] = _spec(
    functools.partial(inception.InceptionCifar, bottleneck=False),
    CIFAR,
    source="CIFAR-scale Inception, naive modules (same widths)",
)
_ENTRIES["googlenet_cifar"] = _spec(
    inception.GoogLeNetCifar, CIFAR, source="CIFAR-scale GoogLeNet with two auxiliary heads"
)

MODELS: dict[str, ModelSpec] = dict(sorted(_ENTRIES.items()))


def list_models() -> list[str]:
    """Names accepted by `get_model`."""
    return list(MODELS)


_CIFAR_NAME = re.compile(r"(resnet|plain)(\d+)$")


def _lookup(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    match = _CIFAR_NAME.match(name)
    if match:  # CIFAR nets of any depth 6n+2 (the factory rejects other depths)
        residual, depth = match.group(1) == "resnet", int(match.group(2))
        resnet.cifar_depth_to_blocks(depth)
        return _spec(
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
