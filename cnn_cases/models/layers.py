"""Small layers shared by the case studies.

Pooling and normalisation are modules (not bare functions) so that
`cnn_cases.costs` sees them as layers and the per-layer table shows every
shape change, as the lecture draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def check_min_size(x: jax.Array, min_hw: int, model: str) -> None:
    """Raises a one-line ValueError if the image is smaller than `min_hw`."""
    if x.ndim != 4:
        raise ValueError(f"{model}: expected a batch of images (N, H, W, C), got shape {x.shape}")
    h, w = x.shape[1], x.shape[2]
    if h < min_hw or w < min_hw:
        raise ValueError(
            f"{model}: input {h}x{w} is too small; this architecture needs at least "
            f"{min_hw}x{min_hw} pixels"
        )


class Pool(nn.Module):
    """Max or average pooling (`kind` is "max" or "avg")."""

    kind: str = "max"
    window: int = 2
    strides: int = 2
    padding: str | Sequence[tuple[int, int]] = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fn = {"max": nn.max_pool, "avg": nn.avg_pool}[self.kind]
        kwargs = {"count_include_pad": False} if self.kind == "avg" else {}
        return fn(
            x,
            (self.window, self.window),
            strides=(self.strides, self.strides),
            padding=self.padding,
            **kwargs,
        )


def pool_out_size(size: int, window: int = 3, strides: int = 2) -> int:
    """Output size of a ceil-mode pool (Caffe, torchvision); 0 if the window does not fit."""
    return 0 if size < window else -(-(size - window) // strides) + 1


def ceil_mode_pool(
    x: jax.Array, kind: str, name: str, window: int = 3, strides: int = 2
) -> jax.Array:
    """Pooling that keeps the last partial window, as bvlc_googlenet: 112 -> 56 -> 28 -> 14 -> 7."""
    pads = tuple(
        (0, (pool_out_size(s, window, strides) - 1) * strides + window - s) for s in x.shape[1:3]
    )
    return Pool(kind, window, strides, padding=pads, name=name)(x)


class GlobalAvgPool(nn.Module):
    """Averages over height and width: (N, H, W, C) -> (N, C)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2))


class AdaptiveAvgPool(nn.Module):
    """PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i*H/out), ceil((i+1)*H/out))."""

    output_size: tuple[int, int] = (7, 7)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[1], x.shape[2]
        oh, ow = self.output_size
        if (h, w) == (oh, ow):
            return x
        if h % oh == 0 and w % ow == 0:
            return nn.avg_pool(x, (h // oh, w // ow), strides=(h // oh, w // ow))

        def bins(n: int, out: int) -> list[tuple[int, int]]:
            return [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]

        rows = [jnp.mean(x[:, a:b], axis=1, keepdims=True) for a, b in bins(h, oh)]
        x = jnp.concatenate(rows, axis=1)
        cols = [jnp.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in bins(w, ow)]
        return jnp.concatenate(cols, axis=2)


class LocalResponseNorm(nn.Module):
    """Krizhevsky et al. (2012) eq. (1): a / (k + alpha * sum over n channels of a^2)^beta."""

    size: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        half = self.size // 2
        sq = jnp.square(x.astype(jnp.float32))
        window_sum = jax.lax.reduce_window(
            sq,
            0.0,
            jax.lax.add,
            window_dimensions=(1, 1, 1, self.size),
            window_strides=(1, 1, 1, 1),
            padding=((0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)),
        )
        return (x / jnp.power(self.k + self.alpha * window_sum, self.beta)).astype(x.dtype)


class Flatten(nn.Module):
    """(N, ...) -> (N, prod(...))."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x.reshape((x.shape[0], -1))


def classifier(
    x: jax.Array, num_classes: int, dropout: float, train: bool, dtype: Any
) -> jax.Array:
    """AlexNet/VGG head: dropout, FC 4096, dropout, FC 4096, FC num_classes."""
    x = Flatten(name="flatten")(x)
    for i in (6, 7):
        x = nn.Dropout(dropout, deterministic=not train, name=f"drop{i}")(x)
        x = nn.relu(nn.Dense(4096, dtype=dtype, name=f"fc{i}")(x))
    return nn.Dense(num_classes, dtype=dtype, name="fc8")(x).astype(jnp.float32)
