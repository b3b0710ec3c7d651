"""oneDNN convolution on the CPU (the handlers of `conv.cc`), with lax's signature.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature and falls back to it for
anything the kernels do not cover (other layouts or dtypes, input dilation, negative
padding). It is a `jax.custom_vjp`: the forward pass and both gradients run on oneDNN.
Under a multi-device mesh every device convolves its shard of the batch and the kernel
gradient is summed over devices, as XLA's would be. bf16 convolutions run on oneDNN's bf16
kernels where the CPU has bf16 dot products (`library.native_bf16`), and as f32 convolutions
of the bf16 values elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_cases.kernels.library import batch_axes, call, native_bf16, per_shard

_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
# lax's dimension numbers for NHWC activations and HWIO kernels.
_NHWC_HWIO = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


class Window(NamedTuple):
    """A convolution's window: the handlers' attributes (`ConvAttrs` in conv.cc)."""

    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int  # of the kernel; 1 is none
    dilation_w: int
    groups: int

    def attrs(self) -> dict[str, np.int64]:
        """The window as the handlers' named int64 attributes."""
        return {name: np.int64(value) for name, value in self._asdict().items()}


def _window(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None,
    rhs_dilation: Sequence[int] | None,
    dimension_numbers: Any,
    feature_group_count: int,
    batch_group_count: int,
    preferred_element_type: Any,
) -> Window | None:
    """The handlers' window for this convolution, or None if they do not cover it."""
    if lhs.ndim != 4 or rhs.ndim != 4 or batch_group_count != 1:
        return None
    if lhs.dtype != rhs.dtype or lhs.dtype not in _DTYPES:
        return None
    if preferred_element_type is not None and jnp.dtype(preferred_element_type) != lhs.dtype:
        return None
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if dn != _NHWC_HWIO or any(d != 1 for d in (lhs_dilation or (1, 1))):
        return None
    dil = tuple(rhs_dilation or (1, 1))
    strides = tuple(window_strides)
    if isinstance(padding, str):
        window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dil, strict=True)]
        padding = lax.padtype_to_pads(lhs.shape[1:3], window, strides, padding)
    pads = tuple(tuple(p) for p in padding)
    if any(p < 0 for pair in pads for p in pair):
        return None
    (pt, pb), (pl, pr) = pads
    return Window(*strides, pt, pb, pl, pr, *dil, feature_group_count)


def _out_shape(x: Any, w: Any, win: Window) -> jax.ShapeDtypeStruct:
    oh = x.shape[1] + win.pad_top + win.pad_bottom - (w.shape[0] - 1) * win.dilation_h - 1
    ow = x.shape[2] + win.pad_left + win.pad_right - (w.shape[1] - 1) * win.dilation_w - 1
    shape = (x.shape[0], oh // win.stride_h + 1, ow // win.stride_w + 1, w.shape[3])
    return jax.ShapeDtypeStruct(shape, x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, win: Window) -> jax.Array:
    return _conv_fwd(x, w, win)[0]


def _conv_fwd(x: jax.Array, w: jax.Array, win: Window) -> tuple[jax.Array, Any]:
    axes = batch_axes(x.shape[0])

    def fwd(x: jax.Array, w: jax.Array) -> jax.Array:
        return call("conv_forward", _out_shape(x, w, win), x, w, **win.attrs())

    return per_shard(fwd, axes, ("b", None), "b")(x, w), (x, w)


def _conv_bwd(win: Window, res: Any, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = res
    axes = batch_axes(x.shape[0])
    attrs = win.attrs()

    def data(dy: jax.Array, w: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct((dy.shape[0], *x.shape[1:]), x.dtype)
        return call("conv_backward_data", out, dy, w, **attrs)

    def weights(x: jax.Array, dy: jax.Array) -> jax.Array:
        dw = call("conv_backward_weights", jax.ShapeDtypeStruct(w.shape, w.dtype), x, dy, **attrs)
        return dw if axes is None else lax.psum(dw, axes)

    dx = per_shard(data, axes, ("b", None), "b")(dy, w)
    dw = per_shard(weights, axes, ("b", "b"), None)(x, dy)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """`lax.conv_general_dilated` on oneDNN's kernels where they apply, else on XLA's."""
    geometry = (
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    win = _window(lhs, rhs, *geometry, preferred_element_type)
    if win is None:
        return lax.conv_general_dilated(lhs, rhs, *geometry, precision, preferred_element_type)
    if lhs.dtype == jnp.bfloat16 and not native_bf16():
        # f32 on the bf16 values, rounded back: what a bf16 convolution computes (products
        # exact, sums in f32), at f32's speed, where oneDNN has no fast bf16 convolution.
        f32 = jnp.float32
        return _conv(lhs.astype(f32), rhs.astype(f32), win).astype(jnp.bfloat16)
    return _conv(lhs, rhs, win)
