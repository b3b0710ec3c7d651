"""Train-step throughput of a registry model, against the machine's matmul peak and PyTorch.

    python scripts/benchmark.py --model=resnet20 --batch_size=128 --dtype=float32
    python scripts/benchmark.py --model=resnet56 --vs_torch --json
    python scripts/benchmark.py --model=resnet110 --scan          # compile time flat in depth
    XLA_FLAGS=--xla_cpu_... python scripts/benchmark.py ...       # try an XLA flag

Reports, all measured in the same run: images/s of the jitted `cnn_cases.train.train_step`
(real TrainState, SGD momentum + weight decay, random normal inputs; median over --reps
repetitions of --steps_per_rep steps after --warmup steps), the achieved GFLOP/s (conventional
count from `cnn_cases.costs`: 2 FLOPs per multiply-add, x3 for forward + backward), the f32
matmul GFLOP/s of this machine and the percentage of it, the first step's trace + compile
seconds, and the input pipeline's images/s on its own (`data.Pipeline`, augment=True).
`--vs_torch` also times the same CIFAR ResNet in PyTorch (scripts/torch_resnet.py, channels
last, `--torch_threads` threads), alternating JAX and PyTorch repetitions so that both see the
same machine load, and prints the ratio JAX / PyTorch. Only ratios measured side by side mean
anything on a shared machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases import costs, models
from cnn_cases import data as data_lib
from cnn_cases import train as train_lib
from cnn_cases.kernels import onednn

_HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet20", help="registry name (resnet20, resnet56, ...)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    p.add_argument("--width", type=int, default=None, help="CIFAR nets: first-stage width")
    p.add_argument("--scan", action="store_true", help="ResNets: nn.scan over repeated blocks")
    p.add_argument(
        "--kernels",
        default="auto",
        choices=("auto", "onednn", "xla"),
        help="convolutions and BatchNorm: auto (oneDNN on a CPU), onednn, xla",
    )
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--steps_per_rep", type=int, default=2)
    p.add_argument("--dataset", default="synthetic", help="TFDS name for the pipeline timing")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--pipeline_batches", type=int, default=10)
    p.add_argument("--matmul_size", type=int, default=2048)
    p.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="the device's nominal dense peak for --dtype (e.g. 989 for bf16 on an H100 SXM): "
        "adds model-FLOPs utilisation `mfu`",
    )
    p.add_argument("--vs_torch", action="store_true", help="time the PyTorch reference too")
    p.add_argument("--torch_threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args(argv)
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        p.error(f"--peak_tflops must be positive, not {args.peak_tflops}")
    if min(args.batch_size, args.reps, args.steps_per_rep, args.pipeline_batches) < 1:
        p.error("batch_size, reps, steps_per_rep and pipeline_batches must be >= 1")
    return args


def _model_kwargs(args: argparse.Namespace, *, scan: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.width is not None:
        kwargs["width"] = args.width
    if scan:
        kwargs["scan"] = True
    return kwargs


# ----------------------------------------------------------------------------- measurements


def matmul_gflops(n: int, reps: int = 5) -> float:
    """Median f32 GFLOP/s of a jitted n x n matmul (random normal operands)."""
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    inner = max(1, math.ceil(2e9 / (2 * n**3)))  # >= ~2 GFLOP per timing: above timer noise
    times = []
    for _ in range(max(reps, 5)):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = mm(a, b)
        out.block_until_ready()
        times.append((time.perf_counter() - t0) / inner)
    return 2 * n**3 / statistics.median(times) / 1e9


def pipeline_images_per_s(args: argparse.Namespace) -> float:
    """Median images/s of `data.Pipeline.batch` (augment=True), on its own."""
    split = data_lib.load_split(args.dataset, "train", data_dir=args.data_dir, download=False)
    pipe = data_lib.Pipeline(
        split,
        global_batch_size=min(args.batch_size, len(split)),
        seed=args.seed,
        augment=True,
        mean=data_lib.per_pixel_mean(split.images),
    )
    pipe.batch(0)  # first permutation
    times = []
    for step in range(1, args.pipeline_batches + 1):
        t0 = time.perf_counter()
        images, _ = pipe.batch(step)
        times.append(time.perf_counter() - t0)
    return len(images) / statistics.median(times)


class JaxBench:
    """The jitted train step on a real TrainState, fed a few random normal batches."""

    def __init__(self, args: argparse.Namespace):
        config = train_lib.default_config()
        config.model = args.model
        config.dtype = args.dtype
        config.kernels = args.kernels
        config.batch_size = args.batch_size
        config.seed = args.seed
        config.model_kwargs = _model_kwargs(args, scan=args.scan)
        self.model = train_lib.create_model(config, args.num_classes)
        self.image_shape = tuple(models.input_shape(args.model))
        self.state = train_lib.create_train_state(self.model, config, self.image_shape)
        rng = np.random.default_rng(args.seed)
        self.batches = [
            (
                jnp.asarray(rng.standard_normal((args.batch_size, *self.image_shape), np.float32)),
                jnp.asarray(rng.integers(0, args.num_classes, args.batch_size, dtype=np.int32)),
            )
            for _ in range(3)
        ]
        step = functools.partial(
            train_lib.train_step,
            dropout_key=jax.random.PRNGKey(args.seed + 1),
            aux_loss_weight=config.aux_loss_weight,
        )
        t0 = time.perf_counter()
        self.step = jax.jit(step, donate_argnums=0).lower(self.state, *self.batches[0]).compile()
        self.compile_s = time.perf_counter() - t0
        self.steps_done = 0
        self.run(args.warmup)

    def run(self, steps: int) -> float:
        """Seconds for `steps` steps, waiting for the last one."""
        t0 = time.perf_counter()
        metrics = None
        for _ in range(steps):
            images, labels = self.batches[self.steps_done % len(self.batches)]
            self.state, metrics = self.step(self.state, images, labels)
            self.steps_done += 1
        jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - t0


def _load_torch_resnet() -> Any:
    spec = importlib.util.spec_from_file_location(
        "torch_resnet", os.path.join(_HERE, "torch_resnet.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TorchBench:
    """The same CIFAR ResNet train step in PyTorch (channels last)."""

    def __init__(self, args: argparse.Namespace):
        name = args.model
        match = re.fullmatch(r"(resnet|plain)(\d+)", name)
        if match is None or models.input_shape(name) != models.CIFAR:
            raise ValueError(f"--vs_torch needs a CIFAR net (resnetD or plainD), not {name!r}")
        try:
            import torch
        except ImportError:
            raise ValueError("--vs_torch needs PyTorch: pip install -e '.[bench]'") from None
        residual, depth = match.group(1) == "resnet", int(match.group(2))
        torch.set_num_threads(args.torch_threads)
        torch.manual_seed(args.seed)
        tr = _load_torch_resnet()
        width = args.width if args.width is not None else 16
        self.model = tr.CifarResNet(
            depth, width=width, num_classes=args.num_classes, residual=residual
        )
        self.model = self.model.to(memory_format=torch.channels_last)
        self.params = tr.count_params(self.model)
        self.torch_step = tr.make_train_step(self.model)
        h, w, c = models.input_shape(name)
        g = torch.Generator().manual_seed(args.seed)
        self.batches = [
            (
                torch.randn(args.batch_size, c, h, w, generator=g).contiguous(
                    memory_format=torch.channels_last
                ),
                torch.randint(0, args.num_classes, (args.batch_size,), generator=g),
            )
            for _ in range(3)
        ]
        self.autocast = args.dtype == "bfloat16"
        self.steps_done = 0
        self.threads = torch.get_num_threads()
        self.version = torch.__version__
        t0 = time.perf_counter()
        self.run(1)
        self.first_step_s = time.perf_counter() - t0
        self.run(args.warmup)

    def run(self, steps: int) -> float:
        import torch

        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            for _ in range(steps):
                images, labels = self.batches[self.steps_done % len(self.batches)]
                self.torch_step(images, labels)
                self.steps_done += 1
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the run


def _images_per_s(batch: int, steps: int, seconds: Sequence[float]) -> list[float]:
    return [batch * steps / s for s in seconds]


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one run, as a flat dict (see the module docstring)."""
    peak = matmul_gflops(args.matmul_size)
    jb = JaxBench(args)
    # Conventional count from the unscanned model (costs.py sees a scanned body only once).
    cost_model = models.get_model(
        args.model, num_classes=args.num_classes, **_model_kwargs(args, scan=False)
    )
    macs = costs.model_cost(cost_model, jb.image_shape).macs
    tb = TorchBench(args) if args.vs_torch else None

    jax_s, torch_s = [], []
    for _ in range(args.reps):  # alternate, so both frameworks see the same machine load
        jax_s.append(jb.run(args.steps_per_rep))
        if tb is not None:
            torch_s.append(tb.run(args.steps_per_rep))
    jax_ips = _images_per_s(args.batch_size, args.steps_per_rep, jax_s)
    images_per_s = statistics.median(jax_ips)
    gflops = images_per_s * 3 * 2 * macs / 1e9
    pipe_ips = pipeline_images_per_s(args)
    out: dict[str, Any] = {
        "model": args.model,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "scan": args.scan,
        "kernels": args.kernels,
        "onednn": onednn.use_onednn(jb.model.kernels),
        "width": args.width,
        "params": int(sum(x.size for x in jax.tree_util.tree_leaves(jb.state.params))),
        "macs_per_image": int(macs),
        "images_per_s": images_per_s,
        "step_ms": 1e3 * args.batch_size / images_per_s,
        "images_per_s_reps": jax_ips,
        "gflops": gflops,
        "peak_gflops": peak,
        "pct_of_peak": 100 * gflops / peak,
        "mfu": gflops / (1e3 * args.peak_tflops) if args.peak_tflops else None,
        "mfu_peak_tflops": args.peak_tflops,
        "compile_s": jb.compile_s,
        "pipeline_images_per_s": pipe_ips,
        "pipeline_ratio": pipe_ips / images_per_s,
        "dataset": args.dataset,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if tb is not None:
        torch_ips = _images_per_s(args.batch_size, args.steps_per_rep, torch_s)
        torch_median = statistics.median(torch_ips)
        out.update(
            torch_images_per_s=torch_median,
            torch_images_per_s_reps=torch_ips,
            torch_gflops=torch_median * 3 * 2 * macs / 1e9,
            torch_params=tb.params,
            torch_threads=tb.threads,
            torch_version=tb.version,
            torch_first_step_s=tb.first_step_s,
            ratio_jax_over_torch=images_per_s / torch_median,
            ratio_jax_over_torch_paired=statistics.median(
                t / j for j, t in zip(jax_s, torch_s, strict=True)
            ),
        )
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['model']}  batch {r['batch_size']}  {r['dtype']}"
        f"{'  scan' if r['scan'] else ''}  kernels {'oneDNN' if r['onednn'] else 'XLA'}  "
        f"({r['params']:,} params, "
        f"{r['macs_per_image'] / 1e6:.1f}M mult-adds/image)",
        f"  train step      {r['images_per_s']:9.1f} images/s  ({r['step_ms']:.1f} ms/step)",
        f"  achieved        {r['gflops']:9.1f} GFLOP/s  = {r['pct_of_peak']:.1f}% of "
        f"f32 matmul {r['peak_gflops']:.1f} GFLOP/s",
        *(
            [
                f"  MFU             {100 * r['mfu']:9.1f} % of the "
                f"{r['mfu_peak_tflops']:g} TFLOP/s peak"
            ]
            if r["mfu"] is not None
            else []
        ),
        f"  first compile   {r['compile_s']:9.2f} s",
        f"  input pipeline  {r['pipeline_images_per_s']:9.1f} images/s "
        f"({r['dataset']}, augment; {r['pipeline_ratio']:.1f}x the train step)",
    ]
    if "torch_images_per_s" in r:
        lines += [
            f"  PyTorch {r['torch_version']}  {r['torch_images_per_s']:9.1f} images/s  "
            f"({r['torch_gflops']:.1f} GFLOP/s, {r['torch_threads']} threads)",
            f"  JAX / PyTorch   {r['ratio_jax_over_torch']:9.2f}x  "
            f"(median of paired reps {r['ratio_jax_over_torch_paired']:.2f}x)",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    """Runs the benchmark for command-line `argv` (without the program name); returns the dict."""
    args = parse_args(argv)
    result = benchmark(args)
    out(json.dumps(result) if args.json else format_report(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
