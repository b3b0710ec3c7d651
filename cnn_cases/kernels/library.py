"""The oneDNN handlers' library: loading, registration with XLA, and how they are called.

XLA:CPU's convolutions run 2-4x slower than oneDNN's (the kernels PyTorch uses on a CPU),
so on a CPU the models run their convolutions and BatchNorm through the handlers in
`conv.cc` and `batch_norm.cc`, built by the project's install against the oneDNN wheel
into one library, `_onednn`. The library lists its own targets (`cnn_cases_targets()`)
and their interface version (`cnn_cases_abi_version()`); this module registers every
target it lists. Each operation (`cnn_cases.kernels.conv`, `cnn_cases.kernels.batch_norm`)
is a `jax.custom_vjp` over `jax.ffi.ffi_call`s, so it composes with `jit`, `grad`,
`nn.scan` and `vmap` (the handlers take the mapped axes in front and run once per index of
them, on the slices in place). Under a multi-device mesh (`jax.set_mesh`), every device
runs the kernels on its own shard of the batch through `shard_map`.
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
from typing import Any

import jax
from jax.sharding import PartitionSpec as P

_PREFIX = "cnn_cases_"
# The targets that cnn_cases.kernels.conv and cnn_cases.kernels.batch_norm call, in the order
# of the library's target table (and of its handler times).
_CALLED = (
    "conv_forward",
    "conv_backward_data",
    "conv_backward_weights",
    "bn_train",
    "bn_inference",
    "bn_backward",
)


class _Target(ctypes.Structure):
    """One record of `cnn_cases_targets()` (onednn_common.h's `Target`)."""

    _fields_ = (("name", ctypes.c_char_p), ("handler", ctypes.c_void_p))


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


def _targets(lib: ctypes.CDLL) -> dict[str, int]:
    """The library's targets: name (without the prefix) -> handler address."""
    lib.cnn_cases_targets.restype = ctypes.POINTER(_Target)
    records = lib.cnn_cases_targets()
    found, i = {}, 0
    while records[i].name is not None:  # the table ends with a null record
        found[records[i].name.decode()] = records[i].handler
        i += 1
    return found


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
    except OSError as e:
        return None, f"{built[0]} did not load: {e}"
    if not hasattr(lib, "cnn_cases_targets"):
        return None, f"{built[0]} is a stale build (reinstall with `pip install -e .`)"
    lib.cnn_cases_abi_version.restype = ctypes.c_int64
    lib.cnn_cases_onednn_version.restype = ctypes.c_int64
    targets = _targets(lib)
    missing = [name for name in _CALLED if name not in targets]
    if missing:
        return None, (
            f"{built[0]} has no target {_PREFIX}{missing[0]} (a stale build? reinstall with "
            "`pip install -e .`)"
        )
    for name, handler in targets.items():
        jax.ffi.register_ffi_target(_PREFIX + name, jax.ffi.pycapsule(handler), platform="cpu")
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


def abi_version() -> int | None:
    """The handlers' interface version, as the library states it, or None when not loaded."""
    lib = _load()[0]
    return None if lib is None else lib.cnn_cases_abi_version()


@functools.cache
def native_bf16() -> bool:
    """Whether oneDNN's convolutions run bf16 at its own rate on this CPU: AVX-512 with bf16
    dot products (avx512_bf16) or AMX. False when the library does not load, or is a build
    that cannot tell."""
    lib = _load()[0]
    if lib is None or not hasattr(lib, "cnn_cases_native_bf16"):
        return False
    lib.cnn_cases_native_bf16.restype = ctypes.c_int64
    return bool(lib.cnn_cases_native_bf16())


def reset_handler_times() -> None:
    """Zeroes the time and calls counted inside each handler (`handler_times`)."""
    _timed_lib().cnn_cases_reset_handler_times()


def handler_times() -> dict[str, tuple[float, int]]:
    """Seconds spent inside each handler and its calls since `reset_handler_times`, by target
    name ("conv_forward", ..., "bn_backward"): the wall time of each call, from XLA's call
    into the handler to its return, inside whatever program runs it."""
    lib = _timed_lib()
    n = len(_CALLED)
    ns, calls = (ctypes.c_int64 * n)(), (ctypes.c_int64 * n)()
    lib.cnn_cases_handler_times.restype = ctypes.c_int64
    timed = lib.cnn_cases_handler_times(ns, calls, ctypes.c_int64(n))
    return {_CALLED[i]: (ns[i] / 1e9, calls[i]) for i in range(min(n, timed))}


def _loaded() -> ctypes.CDLL:
    """The loaded library, or a RuntimeError saying why it did not load."""
    lib, why = _load()
    if lib is None:
        raise RuntimeError(f"cnn_cases: oneDNN kernels unavailable: {why}")
    return lib


def _timed_lib() -> ctypes.CDLL:
    lib = _loaded()
    if not hasattr(lib, "cnn_cases_handler_times"):
        raise RuntimeError("the oneDNN library is a stale build: reinstall with `pip install -e .`")
    return lib


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
# Calls, and sharding: each device runs the kernel on its shard of the batch.
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
    """Calls the handler `target` (a name of `cnn_cases_targets()`) with named attributes."""
    _loaded()
    # Under vmap every operand gets the mapped axes in front; the handlers loop over them.
    return jax.ffi.ffi_call(_PREFIX + target, out, vmap_method="broadcast_all")(*args, **attrs)
