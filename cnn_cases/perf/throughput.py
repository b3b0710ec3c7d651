"""Train-step throughput of a registry model, against the machine's matmul peak and PyTorch.

`benchmark` measures, all in one run: images/s of the jitted train step (`JaxTrainStep`,
random normal inputs; median over repetitions of a few steps each, after warm-up steps), the
achieved GFLOP/s (conventional count from `cnn_cases.analysis.costs`: 2 FLOPs per
multiply-add, x3 for forward + backward), the f32 matmul GFLOP/s of this machine and the
percentage of it, the first step's trace + compile seconds, and the input pipeline's images/s
on its own
(`input_pipeline.Pipeline`, augment=True). With `vs_torch` it also times the same CIFAR ResNet
in PyTorch (`pytorch.TorchTrainStep`), eager and (`torch_compile`) compiled with
`torch.compile`, alternating JAX and PyTorch repetitions so that all see the same machine
load, and reports the ratios JAX / PyTorch. A bfloat16 workload runs PyTorch under bf16
autocast; `vs_f32` times JAX's f32 step beside it too, for bf16's speed-up over f32.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import statistics
from typing import Any

import jax
import jax.numpy as jnp

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.data import input_pipeline, splits
from cnn_cases.interop import pytorch
from cnn_cases.kernels import library
from cnn_cases.perf.timing import Timing, time_calls
from cnn_cases.perf.workload import JaxTrainStep, Workload
from cnn_cases.report.tables import format_table


def matmul_gflops(n: int, reps: int = 5) -> float:
    """Median f32 GFLOP/s of a jitted n x n matmul (random normal operands, >= 5 repetitions)."""
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    number = max(1, math.ceil(2e9 / (2 * n**3)))  # >= ~2 GFLOP per timing: above timer noise
    timing = time_calls({"matmul": lambda: mm(a, b)}, reps=max(reps, 5), warmup=1, number=number)
    return 2 * n**3 / timing["matmul"].median / 1e9


def pipeline_images_per_s(
    dataset: str, *, batch_size: int, batches: int, seed: int = 0, data_dir: str | None = None
) -> float:
    """Median images/s of `input_pipeline.Pipeline.batch` (augment=True) over `batches` batches,
    after the first (which draws the epoch's permutation)."""
    split = splits.load_split(dataset, "train", data_dir=data_dir, download=False)
    size = min(batch_size, len(split.images))
    pipe = input_pipeline.Pipeline(
        split,
        global_batch_size=size,
        seed=seed,
        augment=True,
        mean=splits.per_pixel_mean(split.images),
    )
    step = itertools.count()
    timing = time_calls({"pipeline": lambda: pipe.batch(next(step))}, reps=batches, warmup=1)
    return size / timing["pipeline"].median


def _measured(workload: Workload, jax_step: JaxTrainStep, macs: float) -> dict[str, Any]:
    """What was measured: the model, its settings, its parameters and multiply-adds."""
    return {
        "model": workload.model,
        "batch_size": workload.batch_size,
        "dtype": workload.dtype,
        "scan": workload.scan,
        "kernels": workload.kernels,
        "onednn": library.use_onednn(jax_step.model.kernels),
        "width": workload.width,
        "params": jax_step.params,
        "macs_per_image": int(macs),
    }


def _machine() -> dict[str, Any]:
    """Where it was measured: JAX, its backend and flags, the CPUs and their load."""
    return {
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _conventional_macs(workload: Workload) -> float:
    """The conventional multiply-adds per image, counted on the unscanned model.

    costs.py sees a scanned body only once.
    """
    cost_model = models.get_model(
        workload.model, num_classes=workload.num_classes, **workload.model_kwargs(scan=False)
    )
    return costs.model_cost(cost_model, workload.input_shape).macs


def _jax_rates(
    timing: Timing, batch_size: int, macs: float, peak: float, peak_tflops: float | None
) -> dict[str, Any]:
    """The JAX step's images/s and GFLOP/s, against the matmul peak and `peak_tflops`."""
    jax_ips = timing.rates(batch_size)
    images_per_s = statistics.median(jax_ips)
    gflops = images_per_s * 3 * 2 * macs / 1e9
    return {
        "images_per_s": images_per_s,
        "step_ms": 1e3 * batch_size / images_per_s,
        "images_per_s_reps": jax_ips,
        "gflops": gflops,
        "peak_gflops": peak,
        "pct_of_peak": 100 * gflops / peak,
        "mfu": gflops / (1e3 * peak_tflops) if peak_tflops else None,
        "mfu_peak_tflops": peak_tflops,
    }


def _ratios(timings: dict[str, Timing], name: str, other: str, key: str) -> dict[str, float]:
    """`name`'s speed over `other`'s: of the medians, and the median of paired repetitions."""
    a, b = timings[name], timings[other]
    return {
        f"ratio_{key}": b.median / a.median,
        f"ratio_{key}_paired": statistics.median(
            t / s for s, t in zip(a.seconds, b.seconds, strict=True)
        ),
    }


def _torch_results(
    timings: dict[str, Timing], name: str, first: Timing, macs: float, batch_size: int
) -> dict[str, Any]:
    """One PyTorch step's images/s and GFLOP/s, and JAX's speed over it, from the
    alternated reps; `name` is "torch" (eager) or "torch_compiled"."""
    ips = timings[name].rates(batch_size)
    median = statistics.median(ips)
    first_key = "torch_first_step_s" if name == "torch" else "torch_compile_s"
    return {
        f"{name}_images_per_s": median,
        f"{name}_images_per_s_reps": ips,
        f"{name}_gflops": median * 3 * 2 * macs / 1e9,
        # eager: the first step; compiled: the first two, which compile
        first_key: first.median if name == "torch" else sum(first.seconds),
        **_ratios(timings, "jax", name, f"jax_over_{name}"),
    }


def benchmark(
    workload: Workload,
    *,
    warmup: int = 2,
    reps: int = 5,
    steps_per_rep: int = 2,
    dataset: str = "synthetic",
    data_dir: str | None = None,
    pipeline_batches: int = 10,
    matmul_size: int = 2048,
    peak_tflops: float | None = None,
    vs_torch: bool = False,
    torch_threads: int = 2,
    torch_compile: bool = True,
    vs_f32: bool = False,
    vs_unrolled: bool = False,
) -> dict[str, Any]:
    """Every measurement of one run, as a flat dict (see the module docstring).

    `warmup` untimed steps, then `reps` timed repetitions of `steps_per_rep` steps each.
    `peak_tflops`, the device's nominal dense peak for the dtype, adds model-FLOPs utilisation
    `mfu`. `vs_torch` times PyTorch eager and, with `torch_compile`, compiled; `vs_f32` (for a
    bfloat16 workload) JAX's f32 step, `vs_unrolled` (for a scanned one) the unrolled step.
    Raises ValueError when `vs_torch` has no PyTorch reference for the model, or `vs_f32` is
    asked of an f32 workload, `vs_unrolled` of an unrolled one.
    """
    if vs_f32 and workload.dtype == "float32":
        raise ValueError("--vs_f32 compares a bfloat16 step with f32: add --dtype=bfloat16")
    if vs_unrolled and not workload.scan:
        raise ValueError("--vs_unrolled compares a scanned step with the unrolled one: add --scan")
    steps: dict[str, Any] = {}
    first: dict[str, Timing] = {}
    if vs_torch:  # first: a model without a PyTorch reference fails before any timing
        torch_threads = pytorch.set_threads(torch_threads)
        for name, compiled in (("torch", False), ("torch_compiled", True))[: 1 + torch_compile]:
            torch_step = pytorch.TorchTrainStep(workload, compile=compiled)
            steps[name] = torch_step.step
            first[name] = time_calls({name: torch_step.step}, reps=1 + compiled)[name]
    peak = matmul_gflops(matmul_size)
    jax_step = JaxTrainStep(workload)
    macs = _conventional_macs(workload)
    steps = {"jax": jax_step.step, **steps}
    if vs_f32:
        f32_step = JaxTrainStep(dataclasses.replace(workload, dtype="float32"))
        steps["jax_f32"] = f32_step.step
    if vs_unrolled:
        unrolled_step = JaxTrainStep(dataclasses.replace(workload, scan=False))
        steps["jax_unrolled"] = unrolled_step.step
    timings = time_calls(steps, reps=reps, warmup=warmup, number=steps_per_rep)
    rates = _jax_rates(timings["jax"], workload.batch_size, macs, peak, peak_tflops)
    pipe_ips = pipeline_images_per_s(
        dataset,
        batch_size=workload.batch_size,
        batches=pipeline_batches,
        seed=workload.seed,
        data_dir=data_dir,
    )
    out: dict[str, Any] = {
        **_measured(workload, jax_step, macs),
        **rates,
        "compile_s": jax_step.compile_s,
        "pipeline_images_per_s": pipe_ips,
        "pipeline_ratio": pipe_ips / rates["images_per_s"],
        "dataset": dataset,
        **_machine(),
    }
    for other in ("f32", "unrolled"):
        if f"jax_{other}" in timings:
            ips = timings[f"jax_{other}"].rates(workload.batch_size)
            out[f"{other}_images_per_s"] = statistics.median(ips)
            out[f"{other}_images_per_s_reps"] = ips
            out.update(_ratios(timings, "jax", f"jax_{other}", f"over_{other}"))
    if vs_unrolled:
        out["unrolled_compile_s"] = unrolled_step.compile_s
    if vs_torch:
        out.update(
            torch_params=torch_step.params,
            torch_threads=torch_threads,
            torch_version=pytorch.import_torch().__version__,
        )
        for name in first:
            out.update(_torch_results(timings, name, first[name], macs, workload.batch_size))
    return out


def format_report(r: dict[str, Any]) -> str:
    """`benchmark`'s dict as a title line and a table of the measurements."""
    title = (
        f"{r['model']}  batch {r['batch_size']}  {r['dtype']}{'  scan' if r['scan'] else ''}  "
        f"kernels {'oneDNN' if r['onednn'] else 'XLA'}  ({r['params']:,} params, "
        f"{r['macs_per_image'] / 1e6:.1f}M mult-adds/image)"
    )
    rows = [
        ("train step", f"{r['images_per_s']:.1f}", "images/s", f"{r['step_ms']:.1f} ms/step"),
        (
            "achieved",
            f"{r['gflops']:.1f}",
            "GFLOP/s",
            f"{r['pct_of_peak']:.1f}% of f32 matmul {r['peak_gflops']:.1f} GFLOP/s",
        ),
    ]
    if r["mfu"] is not None:
        rows.append(("MFU", f"{100 * r['mfu']:.1f}", "%", f"of {r['mfu_peak_tflops']:g} TFLOP/s"))
    rows += [
        ("first compile", f"{r['compile_s']:.2f}", "s", ""),
        (
            "input pipeline",
            f"{r['pipeline_images_per_s']:.1f}",
            "images/s",
            f"{r['dataset']}, augment; {r['pipeline_ratio']:.1f}x the train step",
        ),
    ]
    if "f32_images_per_s" in r:
        rows += [
            ("JAX f32 step", f"{r['f32_images_per_s']:.1f}", "images/s", "same run"),
            (
                f"{r['dtype']} / f32",
                f"{r['ratio_over_f32']:.2f}",
                "x",
                f"median of paired reps {r['ratio_over_f32_paired']:.2f}x",
            ),
        ]
    if "unrolled_images_per_s" in r:
        rows += [
            (
                "JAX unrolled step",
                f"{r['unrolled_images_per_s']:.1f}",
                "images/s",
                f"same run; compiles in {r['unrolled_compile_s']:.2f} s",
            ),
            (
                "scan / unrolled",
                f"{r['ratio_over_unrolled']:.2f}",
                "x",
                f"median of paired reps {r['ratio_over_unrolled_paired']:.2f}x",
            ),
        ]
    autocast = " bf16 autocast" if r["dtype"] == "bfloat16" else ""
    for name, label in (("torch", "eager"), ("torch_compiled", "torch.compile")):
        if f"{name}_images_per_s" not in r:
            continue
        first = (
            f"first step {r['torch_first_step_s']:.1f} s"
            if name == "torch"
            else f"compiling (first 2 steps) {r['torch_compile_s']:.1f} s"
        )
        rows += [
            (
                f"PyTorch {r['torch_version']} {label}{autocast}",
                f"{r[f'{name}_images_per_s']:.1f}",
                "images/s",
                f"{r[f'{name}_gflops']:.1f} GFLOP/s, {r['torch_threads']} threads, {first}",
            ),
            (
                f"JAX / PyTorch {label}",
                f"{r[f'ratio_jax_over_{name}']:.2f}",
                "x",
                f"median of paired reps {r[f'ratio_jax_over_{name}_paired']:.2f}x",
            ),
        ]
    table = format_table(("measurement", "value", "unit", ""), rows, align="<><<")
    return f"{title}\n{table}"
