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

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from cnn_cases.perf import cli, gradients


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_workload_arguments(p)
    cli.add_report_arguments(p, vs_torch_help="PyTorch's own f32 error too", torch_threads=False)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    """Measures for command-line `argv` (default: sys.argv[1:]); returns the dict."""
    args = parse_args(argv)
    measure = lambda: gradients.measure(cli.workload(args), vs_torch=args.vs_torch)
    return cli.report(measure, gradients.format_report, as_json=args.json, out=out)


if __name__ == "__main__":
    main()
