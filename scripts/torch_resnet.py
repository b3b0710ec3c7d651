"""PyTorch reference of the CIFAR ResNet in `cnn_cases.models.resnet.cifar_resnet`.

Same layout as the JAX model, so a train step costs the same FLOPs in both frameworks:
3x3 stem conv + BN + ReLU, three stages of n residual blocks (widths w, 2w, 4w, the first
block of stages 2 and 3 strided), option A shortcuts (subsample, zero-pad channels; no
parameters), bias-free convs, BN (eps 1e-5, momentum 0.1), global average pool, linear head.
Needs the optional `bench` extra (`pip install -e .[bench]`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _shortcut_a(x: torch.Tensor, filters: int, stride: int) -> torch.Tensor:
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = filters - x.shape[1]
    if extra:
        x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.planes, self.stride, self.residual = planes, stride, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.residual:
            y = y + _shortcut_a(x, self.planes, self.stride)
        return F.relu(y)


class CifarResNet(nn.Module):
    """He et al. section 4.2: depth 6n+2, option A shortcuts."""

    def __init__(
        self, depth: int = 20, *, width: int = 16, num_classes: int = 10, residual: bool = True
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth {depth} is not 6n+2")
        n = (depth - 2) // 6
        self.conv_init = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn_init = nn.BatchNorm2d(width)
        blocks, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, residual))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_init(self.conv_init(x)))
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_train_step(
    model: nn.Module,
    *,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
):
    """One SGD step (momentum, L2 weight decay added to the gradient, as optax's chain does)."""
    opt = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        opt.step()
        return loss

    return step
