"""Where a train step's time goes: every convolution of a model, timed pass by pass.

For each distinct convolution of the model (geometry from `cnn_cases.analysis.costs.model_cost`),
`profile` times its three passes on their own, jitted: the forward convolution, the input
gradient and the kernel gradient (median over repetitions after warm-up, random inputs). Totals
are weighted by how many layers share the geometry and set beside the whole train step
measured in the same run, so the remainder is everything that is not a convolution
(BatchNorm, ReLU, the optimiser, ...). With `vs_torch` the same passes run in PyTorch
(`aten.convolution_backward`, channels last), alternating with JAX, and the PyTorch step too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.interop import pytorch
from cnn_cases.models.layers import conv_function
from cnn_cases.perf.timing import time_calls
from cnn_cases.perf.workload import JaxTrainStep, Workload
from cnn_cases.report.tables import format_table

PASSES = ("fwd", "dx", "dw")
_DN = ("NHWC", "HWIO", "NHWC")


def distinct_convs(model: nn.Module, input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """The distinct convolutions of `model` with how many layers share each (`count`).

    Each entry: `in_shape` (H, W, C per example), `kernel` (kh, kw), `features`, `strides`,
    `pads` ((lo, hi) per spatial dimension), `macs` per image, `count`; in the order the model
    first calls them. Grouped, dilated or other than 2-D convolutions are left out (none in the
    CIFAR nets).
    """
    found: dict[tuple, dict[str, Any]] = {}
    for layer in costs.model_cost(model, input_shape, train=True).layers:
        conv = layer.conv
        plain_2d = conv is not None and conv.dilation == (1, 1) and conv.feature_groups == 1
        if not plain_2d:
            continue
        entry = {
            "in_shape": conv.input_shape,
            "kernel": conv.kernel_size,
            "features": layer.output_shape[-1],
            "strides": conv.strides,
            "pads": conv.padding,
            "macs": layer.macs,
        }
        found.setdefault(tuple(entry.values()), entry | {"count": 0})["count"] += 1
    return list(found.values())


class JaxConvPasses:
    """One convolution's forward, input-gradient and kernel-gradient passes, jitted.

    `conv` is an entry of `distinct_convs`; `kernels` picks the convolution (auto: oneDNN on a
    CPU). `call(name)` ("fwd", "dx", "dw") gives a callable returning the pass's output.
    """

    def __init__(self, conv: dict[str, Any], batch: int, seed: int, kernels: str):
        rng = np.random.default_rng(seed)
        conv_general_dilated = conv_function(kernels)
        strides, pads = conv["strides"], conv["pads"]

        def fwd(x: jax.Array, w: jax.Array) -> jax.Array:
            return conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN)

        w_shape = (*conv["kernel"], conv["in_shape"][-1], conv["features"])
        self.x = jnp.asarray(rng.standard_normal((batch, *conv["in_shape"]), np.float32))
        self.w = jnp.asarray(rng.standard_normal(w_shape, np.float32))
        y = jax.eval_shape(fwd, self.x, self.w)
        self.g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
        self._fns = {
            "fwd": jax.jit(fwd),
            "dx": jax.jit(lambda x, w, g: jax.vjp(lambda x_: fwd(x_, w), x)[1](g)[0]),
            "dw": jax.jit(lambda x, w, g: jax.vjp(lambda w_: fwd(x, w_), w)[1](g)[0]),
        }

    def call(self, name: str) -> Callable[[], jax.Array]:
        args = (self.x, self.w) if name == "fwd" else (self.x, self.w, self.g)
        return lambda: self._fns[name](*args)


def _conv_passes(
    layer: dict[str, Any], workload: Workload, seed: int, vs_torch: bool
) -> dict[str, Any]:
    """`layer`'s passes by framework: JAX, and PyTorch with `vs_torch`."""
    passes: dict[str, Any] = {
        "jax": JaxConvPasses(layer, workload.batch_size, seed, workload.kernels)
    }
    if vs_torch:
        passes["torch"] = pytorch.TorchConvPasses(
            workload.batch_size,
            layer["in_shape"],
            layer["kernel"],
            layer["features"],
            layer["strides"],
            seed,
        )
    return passes


def _layer_row(
    layer: dict[str, Any], passes: dict[str, Any], batch_size: int, *, reps: int, warmup: int
) -> dict[str, Any]:
    """`layer` with the batch's multiply-adds and the median ms of each pass per framework."""
    row = {**layer, "macs": layer["macs"] * batch_size}
    for p in PASSES:  # alternate the frameworks call by call
        timings = time_calls({f: passes[f].call(p) for f in passes}, reps=reps, warmup=warmup)
        row.update({f"{f}_{p}_ms": 1000 * timings[f].median for f in passes})
    return row


def _totals(rows: list[dict[str, Any]], framework: str, step_s: float) -> dict[str, float]:
    """A framework's convolution ms per pass, weighted by layer count, beside its step."""
    totals = {p: sum(r[f"{framework}_{p}_ms"] * r["count"] for r in rows) for p in PASSES}
    step_ms = 1000 * step_s
    conv_ms = sum(totals.values())
    return {
        **{f"{p}_ms": v for p, v in totals.items()},
        "conv_ms": conv_ms,
        "step_ms": step_ms,
        "other_ms": step_ms - conv_ms,
        "conv_share": conv_ms / step_ms,
    }


def profile(
    workload: Workload,
    *,
    warmup: int = 2,
    reps: int = 7,
    step_reps: int = 5,
    vs_torch: bool = False,
    torch_threads: int = 2,
) -> dict[str, Any]:
    """Every distinct convolution's passes timed, and the whole step (see the module docstring).

    `warmup` untimed calls (steps) before `reps` timed calls of each pass and `step_reps` timed
    steps. Raises ValueError for a model without convolutions or, with `vs_torch`, without a
    PyTorch reference.
    """
    model = models.get_model(workload.model, **workload.model_kwargs(scan=False))
    layers = distinct_convs(model, workload.input_shape)
    if not layers:
        raise ValueError(f"{workload.model!r} has no convolutions to profile")
    torch_step = None
    if vs_torch:  # first: a model without a PyTorch reference fails before any timing
        pytorch.set_threads(torch_threads)
        torch_step = pytorch.TorchTrainStep(workload)
    steps = {"jax": JaxTrainStep(workload).step}
    if torch_step is not None:
        steps["torch"] = torch_step.step
    rows = []
    for i, layer in enumerate(layers):
        passes = _conv_passes(layer, workload, workload.seed + i, vs_torch)
        rows.append(_layer_row(layer, passes, workload.batch_size, reps=reps, warmup=warmup))

    step_timings = time_calls(steps, reps=step_reps, warmup=warmup)

    out: dict[str, Any] = {
        "model": workload.model,
        "batch_size": workload.batch_size,
        "platform": jax.devices()[0].platform,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "kernels": workload.kernels,
        "layers": rows,
    }
    for f in steps:
        out[f] = _totals(rows, f, step_timings[f].median)
    return out


def format_report(r: dict[str, Any]) -> str:
    """`profile`'s dict as a table of the convolutions, a summary per framework and ratios."""
    frameworks = [f for f in ("jax", "torch") if f in r]
    header = ["input HxWxC", "kernel", "out", "n", "GMAC"]
    header += [f"{f} {p} ms" for f in frameworks for p in PASSES]
    rows = []
    for row in r["layers"]:
        (h, w, c), (kh, kw) = row["in_shape"], row["kernel"]
        cells = [f"{h}x{w}x{c}", f"{kh}x{kw}/{row['strides'][0]}", row["features"], row["count"]]
        cells.append(f"{row['macs'] / 1e9:.3f}")
        cells += [f"{row[f'{f}_{p}_ms']:.2f}" for f in frameworks for p in PASSES]
        rows.append(cells)
    lines = [
        f"{r['model']}, batch {r['batch_size']}, {r['platform']}, kernels {r['kernels']}  "
        f"XLA_FLAGS={r['xla_flags']!r}",
        format_table(header, rows, align=">" * len(header)),
    ]
    for f in frameworks:
        t = r[f]
        lines.append(
            f"{f:>5}: convolutions {t['conv_ms']:.1f} ms per step (forward {t['fwd_ms']:.1f}, "
            f"input gradient {t['dx_ms']:.1f}, kernel gradient {t['dw_ms']:.1f}); whole step "
            f"{t['step_ms']:.1f} ms, so {100 * t['conv_share']:.0f}% convolutions, "
            f"{t['other_ms']:.1f} ms the rest"
        )
    if "torch" in r:
        ratios = [
            (p, f"{r['jax'][f'{p}_ms'] / r['torch'][f'{p}_ms']:.2f}x")
            for p in (*PASSES, "conv", "other", "step")
        ]
        lines.append(format_table(("time of", "jax / torch"), ratios))
    return "\n".join(lines)
