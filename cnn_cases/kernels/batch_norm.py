"""oneDNN BatchNorm over N, H, W of NHWC tensors, fused with the ReLU (and the residual
addition) that follows it in the models; flax's BatchNorm variables and semantics.

`batch_norm` (training mode: batch statistics) and `batch_norm_inference` (given statistics)
are `jax.custom_vjp` functions over the handlers of `batch_norm.cc`. Under a multi-device
mesh the statistics are taken over the global batch by XLA's reductions, each device
normalises its shard on oneDNN, and the backward pass is XLA's.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_cases.kernels.library import batch_axes, call, per_shard


def _stat(c: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((c,), jnp.float32)


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance over N, H, W in f32 (the global batch under a mesh)."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
    return mean, var


def _placeholder(x: jax.Array, residual: jax.Array | None) -> jax.Array:
    """The residual, or a one-element stand-in that the handlers do not read."""
    return jnp.zeros((1,), x.dtype) if residual is None else residual


def _bn_inference_call(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    residual: jax.Array | None,
    eps: float,
    relu: bool,
) -> jax.Array:
    add = residual is not None

    def fn(x: jax.Array, *args: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return call("bn_inference", out, x, *args, eps=np.float32(eps), relu=relu, add=add)

    axes = batch_axes(x.shape[0])
    specs = ("b", None, None, None, None, "b" if add else None)
    args = (x, scale, bias, mean, var, _placeholder(x, residual))
    return per_shard(fn, axes, specs, "b")(*args)


def _bn_backward_xla(
    x: jax.Array,
    y: jax.Array | None,
    dy: jax.Array,
    scale: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    eps: float,
    relu: bool,
    train: bool,
) -> tuple[jax.Array, ...]:
    """Gradients of y = relu?((x - mean) * rsqrt(var + eps) * scale + bias [+ r]), in XLA.

    `train`: mean and var are the batch's own statistics, so dx carries their terms too.
    Returns (dx, dscale, dbias, dmean, dvar, dr); dmean and dvar are zero in training mode,
    dr is the gradient of an added residual r.
    """
    if relu:
        dy = jnp.where(y > 0, dy, jnp.zeros_like(dy))
    dy32 = dy.astype(jnp.float32)
    rstd = lax.rsqrt(var + eps)
    xhat = (x.astype(jnp.float32) - mean) * rstd
    dbias = jnp.sum(dy32, axis=(0, 1, 2))
    dscale = jnp.sum(dy32 * xhat, axis=(0, 1, 2))
    if train:
        count = x.shape[0] * x.shape[1] * x.shape[2]
        dx = scale * rstd * (dy32 - (dbias + xhat * dscale) / count)
        zero = jnp.zeros_like(mean)
        return dx.astype(x.dtype), dscale, dbias, zero, zero, dy
    dx = (dy32 * (scale * rstd)).astype(x.dtype)
    dmean = -dbias * scale * rstd
    dvar = -0.5 * dscale * scale / (var + eps)
    return dx, dscale, dbias, dmean, dvar, dy


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _bn_train(*args: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`_bn_train_fwd`'s output: (x, scale, bias, residual, eps, relu) -> (y, mean, var)."""
    return _bn_train_fwd(*args)[0]


def _bn_train_fwd(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    residual: jax.Array | None,
    eps: float,
    relu: bool,
) -> tuple[Any, Any]:
    sharded = batch_axes(x.shape[0]) is not None
    add = residual is not None
    if not sharded:
        c = x.shape[-1]
        out = (jax.ShapeDtypeStruct(x.shape, x.dtype), _stat(c), _stat(c))
        args = (x, scale, bias, _placeholder(x, residual))
        y, mean, var = call("bn_train", out, *args, eps=np.float32(eps), relu=relu, add=add)
    else:
        # Statistics of the global batch: XLA splits the reductions over the mesh.
        mean, var = _moments(x)
        y = _bn_inference_call(x, scale, bias, mean, var, residual, eps, relu)
    # The backward pass reads y only for the ReLU's mask.
    return (y, mean, var), (x, y if relu else None, scale, mean, var, sharded, add)


def _bn_train_bwd(eps: float, relu: bool, res: Any, g: Any) -> tuple[Any, ...]:
    x, y, scale, mean, var, sharded, add = res
    dy = g[0]  # the statistics only feed the running averages, outside the loss
    if sharded:
        dx, dscale, dbias, _, _, dres = _bn_backward_xla(
            x, y, dy, scale, mean, var, eps, relu, train=True
        )
    else:
        c = x.shape[-1]
        shape = x.shape if add else (1,)
        out = (
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            _stat(c),
            _stat(c),
            jax.ShapeDtypeStruct(shape, x.dtype),
        )
        args = (x, dy, x if y is None else y, scale, mean, var)
        dx, dscale, dbias, dres = call(
            "bn_backward", out, *args, eps=np.float32(eps), relu=relu, add=add
        )
    return dx, dscale, dbias, dres if add else None


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


# Given statistics: y = _bn_inference_call(x, scale, bias, mean, var, residual, eps, relu).
_bn_inference = jax.custom_vjp(_bn_inference_call, nondiff_argnums=(6, 7))


def _bn_inference_fwd(*args: Any) -> tuple[jax.Array, Any]:
    x, scale, _, mean, var, residual, _, _ = args
    y = _bn_inference_call(*args)
    return y, (x, y, scale, mean, var, residual is not None)


def _bn_inference_bwd(eps: float, relu: bool, res: Any, dy: jax.Array) -> tuple[Any, ...]:
    x, y, scale, mean, var, add = res
    *grads, dres = _bn_backward_xla(x, y, dy, scale, mean, var, eps, relu, train=False)
    return (*grads, dres if add else None)


_bn_inference.defvjp(_bn_inference_fwd, _bn_inference_bwd)


def _check_residual(x: jax.Array, residual: jax.Array | None, relu: bool) -> None:
    if residual is None:
        return
    if not relu:
        raise ValueError("a residual is fused only with relu=True; add it outside otherwise")
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(
            f"residual {residual.shape} {residual.dtype} does not match x {x.shape} {x.dtype}"
        )


def batch_norm(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    epsilon: float,
    relu: bool = False,
    residual: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BatchNorm of NHWC `x`: (y, batch mean, biased batch variance).

    y = bn(x), relu(bn(x)) with `relu`, relu(bn(x) + residual) with a `residual` as well.
    """
    _check_residual(x, residual, relu)
    return _bn_train(x, scale, bias, residual, float(epsilon), relu)


def batch_norm_inference(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    mean: jax.Array,  # the running statistics, f32 (C,)
    var: jax.Array,
    *,
    epsilon: float,
    relu: bool = False,
    residual: jax.Array | None = None,
) -> jax.Array:
    """BatchNorm of NHWC `x` with given statistics (the running averages); see `batch_norm`."""
    _check_residual(x, residual, relu)
    return _bn_inference(x, scale, bias, mean, var, residual, float(epsilon), relu)
