"""Where a train step's time goes: every convolution and BatchNorm of a model, pass by pass.

For each distinct convolution of the model (geometry from `cnn_cases.analysis.costs.model_cost`),
`profile` times its three passes on their own, jitted: the forward convolution, the input
gradient and the kernel gradient (median over repetitions after warm-up, random inputs). Each
distinct BatchNorm (shape, fused ReLU, fused residual addition) has its training-mode forward
pass and its backward pass timed the same way, and the optimiser's update (the real
`TrainState.apply_gradients`) once. Totals are weighted by how many layers share the geometry
(less the images' input gradient, which no step computes) and set beside the whole train step
measured in the same run, so the remainder is everything
else (the residual additions of the gradients, pooling, the head, the loss, copies). The
convolutions' rate is set against the same run's f32 matmul peak, BatchNorm's bytes moved per
second against the machine's memory bandwidth at the same working set (a copy as large as the
largest BatchNorm pass's tensors, one thread per CPU). With
`vs_torch` the same convolution passes run in PyTorch (`aten.convolution_backward`, channels
last), alternating with JAX, and the PyTorch step too.

Passes timed on their own do not add up exactly to the step: each call starts cold and pays its
dispatch. So on the oneDNN kernels the whole step is split a second way too, from the handlers'
own timers inside the real step (`step_split`), with XLA's ops (elementwise, the optimiser,
copies) as the remainder.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.interop import pytorch
from cnn_cases.kernels import library
from cnn_cases.models import layers as model_layers
from cnn_cases.models.layers import conv_function
from cnn_cases.perf.throughput import matmul_gflops
from cnn_cases.perf.timing import time_calls
from cnn_cases.perf.workload import JaxTrainStep, Workload
from cnn_cases.report.tables import format_table

PASSES = ("fwd", "dx", "dw")
NORM_PASSES = ("fwd", "bwd")
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

    def __init__(
        self, conv: dict[str, Any], batch: int, seed: int, kernels: str, dtype: Any = jnp.float32
    ):
        rng = np.random.default_rng(seed)
        conv_general_dilated = conv_function(kernels)
        strides, pads = conv["strides"], conv["pads"]

        def fwd(x: jax.Array, w: jax.Array) -> jax.Array:
            return conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN)

        w_shape = (*conv["kernel"], conv["in_shape"][-1], conv["features"])
        self.x = jnp.asarray(rng.standard_normal((batch, *conv["in_shape"])), dtype)
        self.w = jnp.asarray(rng.standard_normal(w_shape), dtype)
        y = jax.eval_shape(fwd, self.x, self.w)
        self.g = jnp.asarray(rng.standard_normal(y.shape), dtype)
        self._fns = {
            "fwd": jax.jit(fwd),
            "dx": jax.jit(lambda x, w, g: jax.vjp(lambda x_: fwd(x_, w), x)[1](g)[0]),
            "dw": jax.jit(lambda x, w, g: jax.vjp(lambda w_: fwd(x, w_), w)[1](g)[0]),
        }

    def call(self, name: str) -> Callable[[], jax.Array]:
        args = (self.x, self.w) if name == "fwd" else (self.x, self.w, self.g)
        return lambda: self._fns[name](*args)


def distinct_norms(model: nn.Module, input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """The distinct BatchNorm calls of `model` in training, with how many layers share each.

    Each entry: `shape` (H, W, C per example), `relu` (the ReLU fused into it) and `add` (a
    residual added before the ReLU, fused too), `count`; in the order the model first calls
    them. BatchNorms over other shapes than NHWC are left out.
    """
    found: dict[tuple, dict[str, Any]] = {}

    def interceptor(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        module = context.module
        if isinstance(module, model_layers.BatchNorm) and context.method_name == "__call__":
            x, residual = args[0], kwargs.get("residual")
            relu = module.act in (nn.relu, jax.nn.relu)
            if x.ndim == 4:
                add = relu and residual is not None
                entry = {"shape": tuple(x.shape[1:]), "relu": relu, "add": add}
                found.setdefault(tuple(entry.values()), entry | {"count": 0})["count"] += 1
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        costs.init_shapes(model, input_shape, train=True)
    return list(found.values())


def norm_bytes(norm: dict[str, Any], batch: int, itemsize: int) -> dict[str, int]:
    """Bytes each BatchNorm pass reads and writes, at the least, for its algorithm.

    Forward: the statistics read x, the normalisation reads x (and the residual) and writes y.
    Backward: the sums and then dx each read x, dy (and y, for the ReLU's mask); dx is written
    (and the masked dy, the residual's gradient).
    """
    n = batch * int(np.prod(norm["shape"])) * itemsize
    reads = 2 + norm["relu"]
    return {"fwd": n * (3 + norm["add"]), "bwd": n * (2 * reads + 1 + norm["add"])}


class JaxNormPasses:
    """One BatchNorm's training-mode forward and backward passes, jitted: the models' module
    (`layers.norm_factory`) on the kernels `kernels` picks, the ReLU and residual fused as there.

    `norm` is an entry of `distinct_norms`. The backward pass is the VJP on the forward's saved
    values, without the forward. `call(name)` ("fwd", "bwd") gives a callable.
    """

    def __init__(self, norm: dict[str, Any], batch: int, seed: int, dtype: Any, kernels: str):
        rng = np.random.default_rng(seed)
        shape = (batch, *norm["shape"])

        def normal(*s: int) -> jax.Array:
            return jnp.asarray(rng.standard_normal(s), dtype)

        x, dy = normal(*shape), normal(*shape)
        residual = normal(*shape) if norm["add"] else None
        act = nn.relu if norm["relu"] else None
        bn = model_layers.norm_factory(True, kernels, dtype=dtype, act=act)()
        variables = bn.init(jax.random.key(seed), x)
        stats = variables["batch_stats"]

        def fwd(params: Any, x: jax.Array, r: Any) -> jax.Array:
            variables = {"params": params, "batch_stats": stats}
            return bn.apply(variables, x, residual=r, mutable=["batch_stats"])[0]

        fwd_jit = jax.jit(fwd)
        params = variables["params"]
        _, vjp = jax.vjp(fwd_jit, params, x, residual)
        bwd_jit = jax.jit(lambda vjp, dy: vjp(dy))
        self._calls = {
            "fwd": lambda: fwd_jit(params, x, residual),
            "bwd": lambda: bwd_jit(vjp, dy),
        }

    def call(self, name: str) -> Callable[[], Any]:
        return self._calls[name]


def _norm_row(
    norm: dict[str, Any], workload: Workload, seed: int, *, reps: int, warmup: int
) -> dict[str, Any]:
    """`norm` with the median ms of its passes and the bytes they move."""
    dtype = jnp.dtype(workload.dtype)
    passes = JaxNormPasses(norm, workload.batch_size, seed, dtype, workload.kernels)
    timings = time_calls({p: passes.call(p) for p in NORM_PASSES}, reps=reps, warmup=warmup)
    moved = norm_bytes(norm, workload.batch_size, dtype.itemsize)
    return {
        **norm,
        **{f"{p}_ms": 1000 * timings[p].median for p in NORM_PASSES},
        **{f"{p}_bytes": moved[p] for p in NORM_PASSES},
    }


def optimizer_ms(jax_step: JaxTrainStep, *, reps: int, warmup: int) -> float:
    """Median ms of the train state's optimiser update (`apply_gradients`) on its own."""
    state = jax_step.state
    grads = jax.tree.map(jnp.ones_like, state.params)
    update = jax.jit(lambda state, grads: state.apply_gradients(grads=grads))
    timing = time_calls({"update": lambda: update(state, grads)}, reps=reps, warmup=warmup)
    return 1000 * timing["update"].median


def memory_gb_per_s(nbytes: int, reps: int = 9) -> float:
    """Median GB/s (bytes read + written) of copying an f32 array of `nbytes`, split over one
    thread per CPU (numpy copies, which release the GIL): the bandwidth at that working set."""
    n = max(nbytes // 4, 1024)
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    threads = os.cpu_count() or 1
    bounds = np.linspace(0, n, threads + 1).astype(int)

    def part(i: int) -> None:
        np.copyto(dst[bounds[i] : bounds[i + 1]], src[bounds[i] : bounds[i + 1]])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        copy = lambda: list(pool.map(part, range(threads)))
        timing = time_calls({"copy": copy}, reps=reps, warmup=1, sync=lambda r: r)
    return 2 * 4 * n / timing["copy"].median / 1e9


HANDLERS = {
    "conv_forward": "convolution forward",
    "conv_backward_data": "convolution input gradient",
    "conv_backward_weights": "convolution kernel gradient",
    "bn_train": "BatchNorm forward",
    "bn_backward": "BatchNorm backward",
}


def step_split(jax_step: JaxTrainStep, reps: int) -> dict[str, Any]:
    """Where `reps` whole steps spend their time, from the oneDNN handlers' own timers.

    Returns the step's wall ms (mean over the steps, each waited for), each handler's ms and
    calls per step, and `xla_ms`: the rest, the ops XLA compiles itself (elementwise, the
    optimiser, copies) and the time between calls. Needs the oneDNN kernels.
    """
    jax.block_until_ready(jax_step.step())
    library.reset_handler_times()
    start = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(jax_step.step())
    step_ms = 1000 * (time.perf_counter() - start) / reps
    times = library.handler_times()
    split: dict[str, Any] = {"step_ms": step_ms}
    for name in HANDLERS:
        seconds, calls = times[name]
        split[f"{name}_ms"] = 1000 * seconds / reps
        split[f"{name}_calls"] = calls / reps
    split["xla_ms"] = step_ms - sum(split[f"{name}_ms"] for name in HANDLERS)
    return split


def _conv_passes(
    layer: dict[str, Any], workload: Workload, seed: int, vs_torch: bool
) -> dict[str, Any]:
    """`layer`'s passes by framework: JAX, and PyTorch with `vs_torch`."""
    passes: dict[str, Any] = {
        "jax": JaxConvPasses(
            layer, workload.batch_size, seed, workload.kernels, jnp.dtype(workload.dtype)
        )
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


def _runs(row: dict[str, Any], p: str, input_shape: Sequence[int]) -> int:
    """How many times a step runs pass `p` of `row`: once per layer, but no input gradient
    for the layer that reads the images (they need none)."""
    return row["count"] - (p == "dx" and tuple(row["in_shape"]) == tuple(input_shape))


def _totals(
    rows: list[dict[str, Any]], framework: str, step_s: float, input_shape: Sequence[int]
) -> dict[str, float]:
    """A framework's convolution ms per pass, weighted by the passes a step runs, beside its
    step."""
    totals = {
        p: sum(r[f"{framework}_{p}_ms"] * _runs(r, p, input_shape) for r in rows) for p in PASSES
    }
    step_ms = 1000 * step_s
    conv_ms = sum(totals.values())
    return {
        **{f"{p}_ms": v for p, v in totals.items()},
        "conv_ms": conv_ms,
        "step_ms": step_ms,
        "other_ms": step_ms - conv_ms,
        "conv_share": conv_ms / step_ms,
    }


def _norm_totals(
    norms: list[dict[str, Any]], totals: dict[str, float], opt_ms: float, rates: dict[str, float]
) -> dict[str, float]:
    """JAX's BatchNorm and optimiser ms beside its convolutions, what is left of the step
    after all three (`rest_ms`), and their rates."""
    bn = {p: sum(r[f"{p}_ms"] * r["count"] for r in norms) for p in NORM_PASSES}
    bn_ms = sum(bn.values())
    bn_bytes = sum(r[f"{p}_bytes"] * r["count"] for r in norms for p in NORM_PASSES)
    step_ms = totals["step_ms"]
    rest_ms = totals["other_ms"] - bn_ms - opt_ms
    conv_gflops = rates["flops"] / totals["conv_ms"] / 1e6
    bn_gb_per_s = bn_bytes / bn_ms / 1e6 if bn_ms else 0.0
    return {
        **totals,
        **{f"bn_{p}_ms": v for p, v in bn.items()},
        "bn_ms": bn_ms,
        "bn_share": bn_ms / step_ms,
        "optimizer_ms": opt_ms,
        "optimizer_share": opt_ms / step_ms,
        "rest_ms": rest_ms,  # other_ms (everything but the convolutions) less the two
        "rest_share": rest_ms / step_ms,
        "conv_gflops": conv_gflops,
        "conv_pct_of_peak": 100 * conv_gflops / rates["peak_gflops"],
        "bn_gb_per_s": bn_gb_per_s,
        "bn_pct_of_bandwidth": 100 * bn_gb_per_s / rates["bandwidth_gb_per_s"],
    }


def profile(
    workload: Workload,
    *,
    warmup: int = 2,
    reps: int = 7,
    step_reps: int = 5,
    vs_torch: bool = False,
    torch_threads: int = 2,
    matmul_size: int = 2048,
) -> dict[str, Any]:
    """Every distinct convolution's and BatchNorm's passes timed, the optimiser's update, and
    the whole step (see the module docstring).

    `warmup` untimed calls (steps) before `reps` timed calls of each pass and `step_reps` timed
    steps; `matmul_size` sets the peak's matmul. Raises ValueError for a model without
    convolutions or, with `vs_torch`, without a PyTorch reference.
    """
    model = models.get_model(workload.model, **workload.model_kwargs(scan=False))
    layers = distinct_convs(model, workload.input_shape)
    if not layers:
        raise ValueError(f"{workload.model!r} has no convolutions to profile")
    torch_step = None
    if vs_torch:  # first: a model without a PyTorch reference fails before any timing
        pytorch.set_threads(torch_threads)
        torch_step = pytorch.TorchTrainStep(workload)
    jax_step = JaxTrainStep(workload)
    steps = {"jax": jax_step.step}
    if torch_step is not None:
        steps["torch"] = torch_step.step
    rows = []
    for i, layer in enumerate(layers):
        passes = _conv_passes(layer, workload, workload.seed + i, vs_torch)
        rows.append(_layer_row(layer, passes, workload.batch_size, reps=reps, warmup=warmup))
    norms = [
        _norm_row(norm, workload, workload.seed + i, reps=reps, warmup=warmup)
        for i, norm in enumerate(distinct_norms(model, workload.input_shape))
    ]
    opt_ms = optimizer_ms(jax_step, reps=reps, warmup=warmup)
    rates = {
        "peak_gflops": matmul_gflops(matmul_size),
        # at the size of the largest BatchNorm pass's tensors
        "bandwidth_gb_per_s": memory_gb_per_s(max((r["bwd_bytes"] for r in norms), default=0)),
        "flops": 2
        * sum(r["macs"] * _runs(r, p, workload.input_shape) for r in rows for p in PASSES),
    }

    step_timings = time_calls(steps, reps=step_reps, warmup=warmup)
    in_step = step_split(jax_step, step_reps) if library.use_onednn(workload.kernels) else None

    out: dict[str, Any] = {
        "model": workload.model,
        "batch_size": workload.batch_size,
        "dtype": workload.dtype,
        "platform": jax.devices()[0].platform,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "kernels": workload.kernels,
        "peak_gflops": rates["peak_gflops"],
        "bandwidth_gb_per_s": rates["bandwidth_gb_per_s"],
        "layers": rows,
        "norms": norms,
        "in_step": in_step,
    }
    for f in steps:
        out[f] = _totals(rows, f, step_timings[f].median, workload.input_shape)
    out["jax"] = _norm_totals(norms, out["jax"], opt_ms, rates)
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
    if r["norms"]:
        header = ["BatchNorm HxWxC", "fused", "n", "fwd ms", "fwd GB/s", "bwd ms", "bwd GB/s"]
        rows = []
        for n in r["norms"]:
            fused = "+".join(name for name in ("add", "relu") if n[name]) or "-"
            cells = ["x".join(map(str, n["shape"])), fused, n["count"]]
            for p in NORM_PASSES:
                cells += [f"{n[f'{p}_ms']:.2f}", f"{n[f'{p}_bytes'] / n[f'{p}_ms'] / 1e6:.1f}"]
            rows.append(cells)
        lines.append(format_table(header, rows, align="<<>>>>>"))
    t = r["jax"]
    split = [
        ("convolutions", t["conv_ms"], t["conv_share"]),
        ("BatchNorm", t["bn_ms"], t["bn_share"]),
        ("optimiser", t["optimizer_ms"], t["optimizer_share"]),
        ("the rest", t["rest_ms"], t["rest_share"]),
    ]
    notes = {
        "convolutions": f"{t['conv_gflops']:.1f} GFLOP/s, {t['conv_pct_of_peak']:.0f}% of the "
        f"f32 matmul peak {r['peak_gflops']:.1f} GFLOP/s",
        "BatchNorm": f"forward {t['bn_fwd_ms']:.1f}, backward {t['bn_bwd_ms']:.1f} ms; "
        f"{t['bn_gb_per_s']:.1f} GB/s, {t['bn_pct_of_bandwidth']:.0f}% of memory bandwidth "
        f"{r['bandwidth_gb_per_s']:.1f} GB/s",
    }
    rows = [
        (name, f"{ms:.1f}", f"{100 * share:.0f}%", notes.get(name, "")) for name, ms, share in split
    ]
    rows.append(("whole step", f"{t['step_ms']:.1f}", "100%", ""))
    lines.append("Each pass timed on its own:")
    lines.append(format_table(("jax step", "ms", "share", ""), rows, align="<>><"))
    in_step = r["in_step"]
    if in_step is not None:
        parts = [(label, in_step[f"{name}_ms"]) for name, label in HANDLERS.items()]
        parts += [("XLA's ops and between calls", in_step["xla_ms"])]
        parts += [("whole step", in_step["step_ms"])]
        rows = [(p, f"{ms:.1f}", f"{100 * ms / in_step['step_ms']:.0f}%") for p, ms in parts]
        lines.append("Inside the whole step (the oneDNN handlers' own timers):")
        lines.append(format_table(("jax step", "ms", "share"), rows, align="<>>"))
    for f in frameworks:
        t = r[f]
        lines.append(
            f"{f:>5}: convolutions {t['conv_ms']:.1f} ms per step (forward {t['fwd_ms']:.1f}, "
            f"input gradient {t['dx_ms']:.1f}, kernel gradient {t['dw_ms']:.1f}); whole step "
            f"{t['step_ms']:.1f} ms, so {100 * t['conv_share']:.0f}% convolutions, "
            f"{t['step_ms'] - t['conv_ms']:.1f} ms the rest"
        )
    if "torch" in r:
        ratios = [
            (p, f"{r['jax'][f'{p}_ms'] / r['torch'][f'{p}_ms']:.2f}x")
            for p in (*PASSES, "conv", "other", "step")
        ]
        lines.append(format_table(("time of", "jax / torch"), ratios))
    return "\n".join(lines)
