"""Where a train step's time goes: every convolution of a model, timed pass by pass.

    python scripts/profile_convs.py --model=resnet20 --batch_size=128
    python scripts/profile_convs.py --model=resnet56 --vs_torch --json

For each distinct convolution of the model (input shape, kernel, stride; from
`cnn_cases.analysis.costs.model_cost`), times its three passes on their own, jitted: the forward
convolution, the input gradient and the kernel gradient (median over --reps repetitions after
warm-up, random inputs, batch --batch_size). Totals are weighted by how many layers share the
shape and set beside the whole train step measured in the same run, so the remainder is
everything that is not a convolution (BatchNorm, ReLU, the optimiser, ...). `--vs_torch` times
the same passes in PyTorch (`aten.convolution_backward`, channels last), alternating with JAX,
and the PyTorch step too. The measurements: `cnn_cases.perf.convs`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from cnn_cases.perf import cli, convs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_workload_arguments(p)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per pass")
    p.add_argument("--reps", type=int, default=7, help="timed calls per pass (median)")
    p.add_argument("--step_reps", type=int, default=5, help="timed repetitions of the step")
    cli.add_report_arguments(p, vs_torch_help="time PyTorch's passes too")
    args = p.parse_args(argv)
    cli.require_positive(p, args, "batch_size", "reps", "step_reps")
    return args


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    """Profiles for command-line `argv` (default: sys.argv[1:]); returns the dict."""
    args = parse_args(argv)
    measure = lambda: convs.profile(
        cli.workload(args),
        warmup=args.warmup,
        reps=args.reps,
        step_reps=args.step_reps,
        vs_torch=args.vs_torch,
        torch_threads=args.torch_threads,
    )
    return cli.report(measure, convs.format_report, as_json=args.json, out=out)


if __name__ == "__main__":
    main()
