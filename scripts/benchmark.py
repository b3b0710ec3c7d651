"""Train-step throughput of a registry model, against the machine's matmul peak and PyTorch.

    python scripts/benchmark.py --model=resnet20 --batch_size=128 --dtype=float32
    python scripts/benchmark.py --model=resnet56 --vs_torch --json
    python scripts/benchmark.py --model=resnet110 --scan          # compile time flat in depth
    XLA_FLAGS=--xla_cpu_... python scripts/benchmark.py ...       # try an XLA flag

Reports, all measured in the same run: images/s of the jitted `cnn_cases.engine.train.train_step`
(real TrainState, SGD momentum + weight decay, random normal inputs; median over --reps
repetitions of --steps_per_rep steps after --warmup steps), the achieved GFLOP/s (conventional
count from `cnn_cases.analysis.costs`: 2 FLOPs per multiply-add, x3 for forward + backward), the f32
matmul GFLOP/s of this machine and the percentage of it, the first step's trace + compile
seconds, and the input pipeline's images/s on its own (augment=True).
`--vs_torch` also times the same CIFAR ResNet in PyTorch (`cnn_cases.interop.pytorch`,
channels last, `--torch_threads` threads), alternating JAX and PyTorch repetitions so that both
see the same machine load, and prints the ratio JAX / PyTorch. Only ratios measured side by
side mean anything on a shared machine. The measurements: `cnn_cases.perf.throughput`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cnn_cases.perf import cli, throughput


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cli.add_workload_arguments(p, dtype=True, scan=True, num_classes=True)
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
    cli.add_report_arguments(p, vs_torch_help="time the PyTorch reference too")
    args = p.parse_args(argv)
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        p.error(f"--peak_tflops must be positive, not {args.peak_tflops}")
    cli.require_positive(p, args, "batch_size", "reps", "steps_per_rep", "pipeline_batches")
    return args


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    """Runs the benchmark for command-line `argv` (without the program name); returns the dict."""
    args = parse_args(argv)
    measure = lambda: throughput.benchmark(
        cli.workload(args),
        warmup=args.warmup,
        reps=args.reps,
        steps_per_rep=args.steps_per_rep,
        dataset=args.dataset,
        data_dir=args.data_dir,
        pipeline_batches=args.pipeline_batches,
        matmul_size=args.matmul_size,
        peak_tflops=args.peak_tflops,
        vs_torch=args.vs_torch,
        torch_threads=args.torch_threads,
    )
    return cli.report(measure, throughput.format_report, as_json=args.json, out=out)


if __name__ == "__main__":
    main(sys.argv[1:])
