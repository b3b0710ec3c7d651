"""Where a train step's time goes: every convolution and BatchNorm of a model, pass by pass.

    python scripts/profile_convs.py --model=resnet20 --batch_size=128
    python scripts/profile_convs.py --model=resnet56 --vs_torch --json

For each distinct convolution of the model (input shape, kernel, stride; from
`cnn_cases.analysis.costs.model_cost`), times its three passes on their own, jitted: the forward
convolution, the input gradient and the kernel gradient (median over --reps repetitions after
warm-up, random inputs, batch --batch_size). Totals are weighted by how many layers share the
shape and set beside the whole train step measured in the same run. Each distinct BatchNorm
has its forward and backward pass timed too (GB/s against a measured memory bandwidth), and the
optimiser's update, so the step splits into convolutions (against the f32 matmul peak of
--matmul_size), BatchNorm, optimiser and the rest (residual additions of the gradients,
pooling, head, loss, copies). `--vs_torch` times
the same passes in PyTorch (`aten.convolution_backward`, channels last), alternating with JAX,
and the PyTorch step too. The measurements: `cnn_cases.perf.convs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from absl import flags

from cnn_cases.perf import cli, convs


def define_flags(flag_values: flags.FlagValues) -> None:
    """The profile's flags, on `flag_values`."""
    fv = flag_values
    cli.define_workload_flags(fv, dtype=True)
    flags.DEFINE_integer("warmup", 2, "untimed calls per pass", flag_values=fv)
    flags.DEFINE_integer("reps", 7, "timed calls per pass (median)", flag_values=fv)
    flags.DEFINE_integer("step_reps", 5, "timed repetitions of the step", flag_values=fv)
    cli.define_peak_flag(fv)
    cli.define_report_flags(fv, vs_torch_help="time PyTorch's passes too")
    cli.require_positive(fv, "batch_size", "reps", "step_reps")


def run(flag_values: flags.FlagValues, *, out: Callable[[str], Any] = print) -> dict[str, Any]:
    """Profiles with the parsed `flag_values`; prints and returns the dict."""
    return cli.report(convs.profile, convs.format_report, flag_values.flag_values_dict(), out=out)


if __name__ == "__main__":
    cli.run_program(define_flags, run, flags.FLAGS)
