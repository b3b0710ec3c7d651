"""oneDNN convolution and batch normalisation on the CPU, called through JAX's FFI.

XLA:CPU's convolutions run 2-4x slower than oneDNN's (the kernels PyTorch uses on a CPU),
so on a CPU the models run their convolutions and BatchNorm through the handlers in
`onednn.cc`, built by the project's install against the oneDNN wheel. Each operation is a
`jax.custom_vjp` over `jax.ffi.ffi_call`s, so it composes with `jit`, `grad`, `nn.scan` and
`vmap` (the handlers take the mapped axes in front and run once per index of them, on the
slices in place). Under a multi-device mesh (`jax.set_mesh`), every device runs the
kernels on its own shard of the batch through `shard_map`; the kernel gradient is summed
over devices and BatchNorm statistics are taken over the global batch, as XLA's would be.

This module loads the handlers and holds the convolution: `conv_general_dilated` has
`lax.conv_general_dilated`'s signature and falls back to it for anything the kernels do not
cover (other layouts or dtypes, input dilation, negative padding). BatchNorm is in
`cnn_cases.kernels.batch_norm`.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.machinery
import importlib.metadata
import os
import platform
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

_PREFIX = "cnn_cases_"
_TARGETS = (
    "conv_forward",
    "conv_backward_data",
    "conv_backward_weights",
    "bn_train",
    "bn_inference",
    "bn_backward",
)
_ABI_VERSION = 4  # cnn_cases_abi_version() of the onednn.cc this module speaks to
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
# lax's dimension numbers for NHWC activations and HWIO kernels.
_NHWC_HWIO = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _libdnnl_candidates() -> list[str]:
    """Where the oneDNN wheel put libdnnl: the environment's lib/, or its RECORD."""
    found = [os.path.join(sys.prefix, "lib", "libdnnl.so.3")]
    for dist in ("onednn-cpu-gomp", "onednn-devel-cpu-gomp"):
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        found += [str(f.locate()) for f in files if f.name.startswith("libdnnl.so")]
    return [p for p in found if os.path.exists(p)]


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """Loads libdnnl and the handlers and registers them with XLA; (lib, why not)."""
    here = os.path.dirname(__file__)
    built = [
        p
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        for p in glob.glob(os.path.join(here, "_onednn" + suffix))
    ]
    if not built:
        machine = platform.machine()
        if not (sys.platform.startswith("linux") and machine in ("x86_64", "AMD64")):
            return None, f"they are built on Linux x86_64 only (this is {sys.platform} {machine})"
        return None, "the oneDNN handlers were not built (reinstall with `pip install -e .`)"
    try:
        for path in _libdnnl_candidates()[:1]:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(built[0])
        lib.cnn_cases_abi_version.restype = ctypes.c_int64
        if lib.cnn_cases_abi_version() != _ABI_VERSION:
            return None, f"{built[0]} is a stale build (reinstall with `pip install -e .`)"
        for name in _TARGETS:
            jax.ffi.register_ffi_target(
                _PREFIX + name, jax.ffi.pycapsule(getattr(lib, _PREFIX + name)), platform="cpu"
            )
    except (OSError, AttributeError) as e:
        return None, f"{built[0]} did not load: {e}"
    lib.cnn_cases_onednn_version.restype = ctypes.c_int64
    return lib, ""


def available() -> bool:
    """Whether the oneDNN handlers are built, loaded and registered."""
    return _load()[0] is not None


def version() -> str | None:
    """oneDNN's version, e.g. "3.2.0", or None when not loaded."""
    lib = _load()[0]
    if lib is None:
        return None
    v = lib.cnn_cases_onednn_version()
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


KERNELS = ("auto", "onednn", "xla")


@functools.cache
def _warn_unavailable(why: str) -> None:
    warnings.warn(f"cnn_cases: oneDNN kernels unavailable, using XLA's: {why}", stacklevel=3)


def use_onednn(kernels: str) -> bool:
    """Resolves the `kernels` setting: oneDNN on a CPU backend when it loads, else XLA.

    "auto" and "onednn" differ only on an accelerator, where "onednn" is an error. A
    library that fails to load gives one warning and XLA's kernels, never a crash.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} is not valid (valid: {', '.join(KERNELS)})")
    if kernels == "xla":
        return False
    backend = jax.default_backend()
    if backend != "cpu":
        if kernels == "onednn":
            raise ValueError(
                f"kernels='onednn' runs on the CPU only, the backend is {backend} "
                "(valid here: 'auto', 'xla')"
            )
        return False
    lib, why = _load()
    if lib is None:
        _warn_unavailable(why)
    return lib is not None


# ----------------------------------------------------------------------------------------
# Sharding: each device runs the kernel on its shard of the batch.
# ----------------------------------------------------------------------------------------


def batch_axes(batch: int) -> tuple[str, ...] | None:
    """Axes of the current mesh that the batch is split over, or None to run unsplit."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or batch % mesh.size:
        return None
    return tuple(mesh.axis_names)


def per_shard(fn: Any, axes: tuple[str, ...] | None, in_specs: Any, out_specs: Any) -> Any:
    """`fn` under `shard_map` with the batch (leading) axis split over `axes`; `"b"` in a
    spec stands for that split, `None` for replication."""
    if axes is None:
        return fn
    spec = lambda s: P(axes) if s == "b" else P()
    tree = lambda s: tuple(map(spec, s)) if isinstance(s, tuple) else spec(s)
    return jax.shard_map(fn, in_specs=tree(in_specs), out_specs=tree(out_specs), check_vma=False)


def call(target: str, out: Any, *args: jax.Array, **attrs: Any) -> Any:
    lib, why = _load()
    if lib is None:
        raise RuntimeError(f"cnn_cases: oneDNN kernels unavailable: {why}")
    # Under vmap every operand gets the mapped axes in front; the handlers loop over them.
    return jax.ffi.ffi_call(_PREFIX + target, out, vmap_method="broadcast_all")(*args, **attrs)


# ----------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------


def _conv_params(
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
) -> tuple[int, ...] | None:
    """The handlers' parameters for this convolution, or None if they do not cover it."""
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
    return (*strides, pt, pb, pl, pr, *dil, feature_group_count)


def _conv_out_shape(x: Any, w: Any, params: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    sh, sw, pt, pb, pl, pr, dh, dw, _ = params
    oh = (x.shape[1] + pt + pb - (w.shape[0] - 1) * dh - 1) // sh + 1
    ow = (x.shape[2] + pl + pr - (w.shape[1] - 1) * dw - 1) // sw + 1
    return jax.ShapeDtypeStruct((x.shape[0], oh, ow, w.shape[3]), x.dtype)


def _attrs(params: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {"params": np.asarray(params, np.int64)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, params: tuple[int, ...]) -> jax.Array:
    return _conv_fwd(x, w, params)[0]


def _conv_fwd(x: jax.Array, w: jax.Array, params: tuple[int, ...]) -> tuple[jax.Array, Any]:
    axes = batch_axes(x.shape[0])

    def fwd(x: jax.Array, w: jax.Array) -> jax.Array:
        return call("conv_forward", _conv_out_shape(x, w, params), x, w, **_attrs(params))

    return per_shard(fwd, axes, ("b", None), "b")(x, w), (x, w)


def _conv_bwd(params: tuple[int, ...], res: Any, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = res
    axes = batch_axes(x.shape[0])
    attrs = _attrs(params)

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
    params = _conv_params(lhs, rhs, *geometry, preferred_element_type)
    if params is None:
        return lax.conv_general_dilated(lhs, rhs, *geometry, precision, preferred_element_type)
    return _conv(lhs, rhs, params)
