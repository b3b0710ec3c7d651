"""Small layers shared by the case studies, and the factories every model builds on.

Pooling and normalisation are modules (not bare functions) so that
`cnn_cases.analysis.costs` sees them as layers and the per-layer table shows every
shape change, as the lecture draws it.

`conv_factory` and `norm_factory` are the one place where a model's convolutions and
BatchNorm get their implementation: `kernels="auto"` runs them on oneDNN on a CPU
(`cnn_cases.kernels`) and on XLA elsewhere, with the same variables either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnn_cases.kernels import batch_norm as bn_kernels
from cnn_cases.kernels import conv as conv_kernels
from cnn_cases.kernels import library
from cnn_cases.models import inits

# torchvision's BatchNorm: momentum 0.1 (flax: 0.9 for the running average), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_function(kernels: str) -> Callable[..., jax.Array]:
    """`lax.conv_general_dilated`, or its oneDNN twin when `kernels` resolves to oneDNN."""
    if library.use_onednn(kernels):
        return conv_kernels.conv_general_dilated
    return lax.conv_general_dilated


def conv_factory(kernels: str = "auto", **kwargs: Any) -> Callable[..., nn.Conv]:
    """`nn.Conv` with `kwargs` bound and its convolution taken from `kernels`."""
    return functools.partial(nn.Conv, conv_general_dilated=conv_function(kernels), **kwargs)


_RELUS = (nn.relu, jax.nn.relu)


class BatchNorm(nn.BatchNorm):
    """flax's BatchNorm (same variables and defaults), then `act`; on oneDNN if `kernels` says so.

    `bn(x, residual=r)` computes act(bn(x) + r), the end of a residual block. The oneDNN path
    covers NHWC inputs normalised over N, H, W with scale and bias, and fuses a ReLU `act` (and
    the residual before it) into the normalisation; anything else (masks, `axis_name`, other
    axes) runs flax's own code.
    """

    kernels: str = "xla"
    act: Callable[[jax.Array], jax.Array] | None = None

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: Any = None,
        residual: jax.Array | None = None,
    ) -> jax.Array:
        act = self.act or (lambda y: y)
        if not (self._supported(x, mask) and library.use_onednn(self.kernels)):
            y = super().__call__(x, use_running_average, mask=mask)
            self.sow("intermediates", "response", y)  # kept only if "intermediates" is mutable
            return act(y if residual is None else y + residual)
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
        scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
        scale, bias = scale.astype(jnp.float32), bias.astype(jnp.float32)
        # Fused: a ReLU, and a residual of x's shape and type before it; any other residual
        # is added, and the activation applied, outside.
        relu = self.act in _RELUS and (residual is None or _same_type(residual, x))
        fused = residual if relu else None
        kwargs = {"epsilon": self.epsilon, "relu": relu, "residual": fused}
        if use_running_average:
            y = bn_kernels.batch_norm_inference(
                x, scale, bias, ra_mean.value, ra_var.value, **kwargs
            )
        else:
            y, mean, var = bn_kernels.batch_norm(x, scale, bias, **kwargs)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        if residual is not None and fused is None:
            return act(y + residual)
        return y if relu else act(y)

    def _supported(self, x: jax.Array, mask: Any) -> bool:
        return (
            x.ndim == 4
            and self.axis in (-1, 3)
            and mask is None
            and self.axis_name is None
            and self.use_scale
            and self.use_bias
            and self.force_float32_reductions
            and jnp.dtype(self.dtype or x.dtype) == x.dtype
            and x.dtype in (jnp.float32, jnp.bfloat16)
        )


def _same_type(a: jax.Array | None, b: jax.Array) -> bool:
    return a is not None and a.shape == b.shape and a.dtype == b.dtype


def norm_factory(train: bool, kernels: str = "auto", **kwargs: Any) -> Callable[..., BatchNorm]:
    """BatchNorm with the models' constants, batch statistics when `train`, else running ones."""
    return functools.partial(
        BatchNorm,
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        kernels=kernels,
        **kwargs,
    )


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


def scaled(channels: int, multiplier: float) -> int:
    """`channels` times a width multiplier, rounded half up, at least 1."""
    return max(1, int(channels * multiplier + 0.5))


def classifier(
    x: jax.Array,
    num_classes: int,
    dropout: float,
    train: bool,
    dtype: Any,
    width: int = 4096,
    init: inits.Inits = inits.FLAX,
) -> jax.Array:
    """AlexNet/VGG head: dropout, FC `width`, dropout, FC `width`, FC num_classes."""
    x = Flatten(name="flatten")(x)
    for i in (6, 7):
        x = nn.Dropout(dropout, deterministic=not train, name=f"drop{i}")(x)
        name = f"fc{i}"
        bias = init.bias(name, init.dense_bias)
        x = nn.Dense(width, dtype=dtype, kernel_init=init.dense, bias_init=bias, name=name)(x)
        x = nn.relu(x)
    return init.classifier(num_classes, dtype=dtype, name="fc8")(x).astype(jnp.float32)
