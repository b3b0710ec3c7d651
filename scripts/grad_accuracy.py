"""How far a model's f32 gradients are from float64 ones, under this process's XLA flags.

    python scripts/grad_accuracy.py --model=resnet20
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce \\
        python scripts/grad_accuracy.py --model=resnet20

Computes the loss gradient of one batch (random normal images, fixed seed, BatchNorm in
training mode) in float32 under the current XLA_FLAGS, and the same gradient in float64 in a
child process run without XLA_FLAGS (the reference). Prints the relative error over all
parameters, ||g32 - g64|| / ||g64||, and the worst single tensor. Use it before trusting a speed
flag: an f32 gradient usually agrees with float64 to about 1e-6. `--kernels` picks the f32
run's convolutions and BatchNorm (the float64 reference always runs on XLA's). `--vs_torch`
also measures PyTorch's own f32 gradient of the same CIFAR net against its float64 one, on the
same batch (`cnn_cases.interop.pytorch`, PyTorch's initialisation): the yardstick for
"f32-faithful". The measurements: `cnn_cases.perf.gradients`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from absl import flags

from cnn_cases.perf import cli, gradients


def define_flags(flag_values: flags.FlagValues) -> None:
    """The measurement's flags, on `flag_values`."""
    cli.define_workload_flags(flag_values)
    cli.define_report_flags(
        flag_values, vs_torch_help="PyTorch's own f32 error too", torch_threads=False
    )


def run(flag_values: flags.FlagValues, *, out: Callable[[str], Any] = print) -> dict[str, Any]:
    """Measures with the parsed `flag_values`; prints and returns the dict."""
    values = flag_values.flag_values_dict()
    return cli.report(gradients.measure, gradients.format_report, values, out=out)


if __name__ == "__main__":
    cli.run_program(define_flags, run, flags.FLAGS)
