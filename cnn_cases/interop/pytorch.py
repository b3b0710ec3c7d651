"""The PyTorch reference: the CIFAR ResNet / plain net of `cnn_cases.models.resnet`, in PyTorch.

Same layout as the Flax model, so a train step costs the same FLOPs in both frameworks: 3x3
stem conv + BN + ReLU, three stages of n blocks (widths w, 2w, 4w, the first block of stages 2
and 3 strided), option A shortcuts (subsample, zero-pad channels; no parameters), bias-free
convs, BN (the models' epsilon and momentum), global average pool, linear head. Module names
are the Flax ones, so variables map by name (layouts differ)::

    Flax                                  PyTorch
    conv_init/kernel (H, W, I, O)         conv_init.weight (O, I, H, W)
    bn_init/scale, bias; mean, var        bn_init.weight, bias; running_mean, running_var
    stage{i}_block{j}/conv1, bn1, ...     stage{i}_block{j}.conv1, bn1, conv2, bn2
    head/kernel (in, out), bias           head.weight (out, in), bias

A block whose shape changes has a `shortcut` (`ShortcutA`, no variables), None elsewhere.

PyTorch is optional (`pip install -e '.[bench]'`): it is imported only when something here is
called, so `cnn_cases.perf` imports without it. `CifarResNet`, `BasicBlock` and `ShortcutA`
are the module classes, built on first access.
"""

from __future__ import annotations

import functools
import re
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnn_cases import models
from cnn_cases.models.layers import BN_EPSILON, BN_MOMENTUM
from cnn_cases.models.resnet import cifar_depth_to_blocks
from cnn_cases.perf.workload import Workload

_MODULE_CLASSES = ("CifarResNet", "BasicBlock", "ShortcutA")


def import_torch() -> types.ModuleType:
    """`torch`, or a ValueError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ValueError("the PyTorch reference needs PyTorch: pip install -e '.[bench]'") from None
    return torch


def import_torchvision() -> types.ModuleType:
    """`torchvision`, also beside the CPU build of torch.

    torchvision's wheel is built against the CUDA build of torch. Beside the CPU build its
    compiled ops (nms, roi_align, ...) do not load, and `import torchvision` then stops while
    registering fake kernels for two of them ("operator torchvision::nms does not exist"). The
    model code never calls those ops: declaring their two schemas lets the import finish.
    """
    torch = import_torch()
    try:
        import torchvision
    except ImportError:
        raise ValueError("this needs torchvision: pip install -e '.[test]'") from None
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for module in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[module]
        for op in ("nms", "qnms"):
            schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            torch.library.define(f"torchvision::{op}", schema)
        import torchvision
    return torchvision


def _shortcut_class(torch: types.ModuleType) -> type:
    nn, F = torch.nn, torch.nn.functional

    class ShortcutA(nn.Module):
        """Option A: identity, subsampled by `stride`, extra channels zero-padded."""

        def __init__(self, planes: int, stride: int):
            super().__init__()
            self.planes, self.stride = planes, stride

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.stride > 1:
                x = x[:, :, :: self.stride, :: self.stride]
            extra = self.planes - x.shape[1]
            return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra else x

    return ShortcutA


def _block_class(torch: types.ModuleType, shortcut_a: type) -> type:
    nn, F = torch.nn, torch.nn.functional

    class BasicBlock(nn.Module):
        """Two 3x3 convs with BN; with `residual`, the input is added before the last ReLU."""

        def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True):
            super().__init__()
            bn = functools.partial(nn.BatchNorm2d, eps=BN_EPSILON, momentum=1 - BN_MOMENTUM)
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = bn(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = bn(planes)
            reshape = stride > 1 or in_planes != planes
            self.shortcut = shortcut_a(planes, stride) if residual and reshape else None
            self.residual = residual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            if self.residual:
                y = y + (x if self.shortcut is None else self.shortcut(x))
            return F.relu(y)

    return BasicBlock


def _resnet_class(torch: types.ModuleType, basic_block: type) -> type:
    nn, F = torch.nn, torch.nn.functional

    class CifarResNet(nn.Module):
        """He et al. section 4.2: depth 6n+2, option A shortcuts; `residual=False`: plain."""

        def __init__(
            self, depth: int = 20, *, width: int = 16, num_classes: int = 10, residual: bool = True
        ):
            super().__init__()
            n = cifar_depth_to_blocks(depth)
            self.conv_init = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn_init = nn.BatchNorm2d(width, eps=BN_EPSILON, momentum=1 - BN_MOMENTUM)
            self.block_names, in_planes = [], width
            for i, planes in enumerate((width, 2 * width, 4 * width)):
                for j in range(n):
                    name = f"stage{i + 1}_block{j + 1}"
                    stride = 2 if i > 0 and j == 0 else 1
                    self.add_module(name, basic_block(in_planes, planes, stride, residual))
                    self.block_names.append(name)
                    in_planes = planes
            self.head = nn.Linear(in_planes, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.bn_init(self.conv_init(x)))
            for name in self.block_names:
                x = getattr(self, name)(x)
            return self.head(x.mean(dim=(2, 3)))

    return CifarResNet


@functools.cache
def _module_classes() -> types.SimpleNamespace:
    torch = import_torch()
    shortcut_a = _shortcut_class(torch)
    basic_block = _block_class(torch, shortcut_a)
    cifar_resnet = _resnet_class(torch, basic_block)
    return types.SimpleNamespace(
        ShortcutA=shortcut_a, BasicBlock=basic_block, CifarResNet=cifar_resnet
    )


def __getattr__(name: str) -> Any:
    if name in _MODULE_CLASSES:
        return getattr(_module_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cifar_net(name: str, *, width: int | None = None, num_classes: int = 10) -> Any:
    """The reference of registry model `name` (resnetD or plainD on CIFAR), in training mode.

    Raises ValueError for any other model, or when PyTorch is missing.
    """
    match = re.fullmatch(r"(resnet|plain)(\d+)", name)
    if match is None or models.input_shape(name) != models.CIFAR:
        raise ValueError(f"the PyTorch reference is a CIFAR net (resnetD or plainD), not {name!r}")
    net = _module_classes().CifarResNet(
        int(match.group(2)),
        width=16 if width is None else width,
        num_classes=num_classes,
        residual=match.group(1) == "resnet",
    )
    return net.train()


def count_params(net: Any) -> int:
    """Entries of every parameter tensor (BN weight and bias count; running stats do not)."""
    return sum(p.numel() for p in net.parameters())


def set_threads(threads: int) -> int:
    """Sets PyTorch's intra-op threads; returns the number it will use."""
    torch = import_torch()
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def nchw(images: np.ndarray, dtype: Any = None) -> Any:
    """NHWC numpy images as a channels-last NCHW tensor (`dtype` default: torch.float32)."""
    torch = import_torch()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.to(dtype or torch.float32).contiguous(memory_format=torch.channels_last)


class TorchTrainStep:
    """`workload`'s train step in PyTorch: SGD momentum, L2 weight decay added to the gradient
    (as optax's chain does), channels last, bf16 autocast for a bfloat16 `workload.dtype`.

    `compile=True` runs the net through `torch.compile` (inductor: forward and backward graphs,
    everything but the convolutions fused into generated C++) and the optimiser's update through
    its own `torch.compile`, PyTorch's recipe for a compiled train step. Compilation happens in
    the first two steps (the second recompiles the update, which then has momentum buffers).
    `step()` runs one step on the next of 3 random batches and returns the loss.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        learning_rate: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        compile: bool = False,
    ):
        torch = self._torch = import_torch()
        torch.manual_seed(workload.seed)  # the initial parameters: the same for the same seed
        net = cifar_net(workload.model, width=workload.width, num_classes=workload.num_classes)
        self.net = net.to(memory_format=torch.channels_last)
        self.params = count_params(self.net)
        self._opt = torch.optim.SGD(
            self.net.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
        )
        rng = np.random.default_rng(workload.seed)
        self.batches = []
        for _ in range(3):
            images, labels = workload.random_batch(rng)
            self.batches.append((nchw(images), torch.from_numpy(labels)))
        self.autocast = workload.dtype == "bfloat16"
        self.compiled = compile
        self._forward = torch.compile(self.net) if compile else self.net
        self._update = torch.compile(self._opt.step) if compile else self._opt.step
        self._steps_done = 0

    def step(self) -> Any:
        """One train step on the next batch; returns the loss."""
        torch = self._torch
        images, labels = self.batches[self._steps_done % len(self.batches)]
        self._steps_done += 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            self._opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self._forward(images), labels)
            loss.backward()
            self._update()
        return loss.detach()


def gradients(net: Any, images: np.ndarray, labels: np.ndarray, dtype: Any) -> dict[str, Any]:
    """The loss gradient of `net` cast to `dtype` on one NHWC batch, as {name: float64 array}."""
    torch = import_torch()
    net = net.to(dtype)
    net.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(nchw(images, dtype)), torch.from_numpy(labels))
    loss.backward()
    return {n: p.grad.detach().double().numpy().copy() for n, p in net.named_parameters()}


class TorchConvPasses:
    """One 2-D convolution's forward, input-gradient and kernel-gradient passes in PyTorch.

    Channels last, random inputs; padding symmetric, k // 2 per side, as torch's ResNets (the
    same output size as SAME for odd kernels). `call(name)` ("fwd", "dx", "dw") gives a callable.
    """

    def __init__(
        self,
        batch: int,
        input_shape: Sequence[int],
        kernel_size: Sequence[int],
        features: int,
        strides: Sequence[int],
        seed: int,
    ):
        torch = self._torch = import_torch()
        g = torch.Generator().manual_seed(seed)
        (h, w, c), (kh, kw) = input_shape, kernel_size
        cl = torch.channels_last
        self.stride, self.padding = list(strides), [kh // 2, kw // 2]
        self.x = torch.randn(batch, c, h, w, generator=g).contiguous(memory_format=cl)
        self.w = torch.randn(features, c, kh, kw, generator=g).contiguous(memory_format=cl)
        y = self.call("fwd")()
        self.g = torch.randn(y.shape, generator=g).contiguous(memory_format=cl)

    def call(self, name: str) -> Callable[[], Any]:
        torch = self._torch
        if name == "fwd":
            conv2d = torch.nn.functional.conv2d
            return lambda: conv2d(self.x, self.w, stride=self.stride, padding=self.padding)
        mask = [name == "dx", name == "dw", False]

        def backward() -> Any:
            return torch.ops.aten.convolution_backward(
                self.g, self.x, self.w, None, self.stride, self.padding, [1, 1], False, [0, 0],
                1, mask,
            )  # fmt: skip

        return backward
