"""Train-step throughput of a registry model, against the machine's matmul peak and PyTorch.

    python scripts/benchmark.py --model=resnet20 --batch_size=128 --dtype=float32
    python scripts/benchmark.py --model=resnet56 --vs_torch --json
    python scripts/benchmark.py --model=resnet110 --scan          # compile time flat in depth
    python scripts/benchmark.py --model=resnet56 --scan --vs_unrolled
    XLA_FLAGS=--xla_cpu_... python scripts/benchmark.py ...       # try an XLA flag

Reports, all measured in the same run: images/s of the jitted `cnn_cases.engine.steps.train_step`
(real TrainState, SGD momentum + weight decay, random normal inputs; median over --reps
repetitions of --steps_per_rep steps after --warmup steps), the achieved GFLOP/s (conventional
count from `cnn_cases.analysis.costs`: 2 FLOPs per multiply-add, x3 for forward + backward), the f32
matmul GFLOP/s of this machine and the percentage of it, the first step's trace + compile
seconds, and the input pipeline's images/s on its own (augment=True).
`--vs_torch` also times the same CIFAR ResNet in PyTorch (`cnn_cases.interop.pytorch`,
channels last, `--torch_threads` threads), eager and compiled with `torch.compile` (inductor;
`--notorch_compile` leaves it out; its first two steps compile, about a minute for resnet20 with a
cold inductor cache, a few seconds with a warm one), alternating JAX and PyTorch repetitions so
that all see the same machine load, and prints the ratios JAX / PyTorch. With
`--dtype=bfloat16` PyTorch runs under bf16 autocast, and `--vs_f32` adds JAX's f32 step to the
alternation for bf16's speed-up, and `--scan --vs_unrolled` the unrolled step for scan's cost.
Only ratios measured side by side mean anything on a shared
machine. The measurements: `cnn_cases.perf.throughput`.

    python scripts/benchmark.py --model=resnet20 --dtype=bfloat16 --vs_f32 --vs_torch
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from absl import flags

from cnn_cases.perf import cli, throughput


def define_flags(flag_values: flags.FlagValues) -> None:
    """The benchmark's flags, on `flag_values`."""
    fv = flag_values
    cli.define_workload_flags(fv, dtype=True, scan=True, num_classes=True)
    flags.DEFINE_integer("warmup", 2, "untimed steps after compiling", flag_values=fv)
    flags.DEFINE_integer("reps", 5, "timed repetitions (median reported)", flag_values=fv)
    flags.DEFINE_integer("steps_per_rep", 2, "steps per timed repetition", flag_values=fv)
    flags.DEFINE_string("dataset", "synthetic", "TFDS name for the pipeline timing", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir of --dataset", flag_values=fv)
    flags.DEFINE_integer(
        "pipeline_batches", 10, "batches the pipeline timing reads", flag_values=fv
    )
    cli.define_peak_flag(fv)
    flags.DEFINE_float(
        "peak_tflops",
        None,
        "the device's nominal dense peak for --dtype (e.g. 989 for bf16 on an H100 SXM): "
        "adds model-FLOPs utilisation `mfu`",
        flag_values=fv,
    )
    flags.register_validator(
        "peak_tflops",
        lambda v: v is None or v > 0,
        message="--peak_tflops must be positive",
        flag_values=fv,
    )
    cli.define_report_flags(fv, vs_torch_help="time the PyTorch reference too")
    flags.DEFINE_bool(
        "torch_compile",
        True,
        "with --vs_torch: PyTorch's step compiled with torch.compile too, beside eager",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "vs_f32", False, "with --dtype=bfloat16: JAX's f32 step too, alternated", flag_values=fv
    )
    flags.DEFINE_bool(
        "vs_unrolled", False, "with --scan: the unrolled step too, alternated", flag_values=fv
    )
    cli.require_positive(fv, "batch_size", "reps", "steps_per_rep", "pipeline_batches")


def run(flag_values: flags.FlagValues, *, out: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs the benchmark with the parsed `flag_values`; prints and returns its dict."""
    values = flag_values.flag_values_dict()
    return cli.report(throughput.benchmark, throughput.format_report, values, out=out)


if __name__ == "__main__":
    cli.run_program(define_flags, run, flags.FLAGS)
