"""Command-line flags the performance scripts share, and how they run and report.

Each script defines its flags on a `flags.FlagValues` with `define_workload_flags`,
`define_report_flags` and its own, and runs through `run_program` (on `flags.FLAGS`, with
`absl.app`). Nothing here reads `flags.FLAGS`: every function works on the flag values it is
given, so a test parses a fresh `FlagValues` (`parse`) and calls a script's measurement on it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app, flags, logging

from cnn_cases.perf.workload import Workload


def define_workload_flags(
    flag_values: flags.FlagValues,
    *,
    dtype: bool = False,
    scan: bool = False,
    num_classes: bool = False,
) -> None:
    """--model, --batch_size, --width, --image_size, --kernels and --seed; the keyword-named
    flags if True."""
    fv = flag_values
    flags.DEFINE_string(
        "model", "resnet20", "registry name (resnet20, resnet56, ...)", flag_values=fv
    )
    flags.DEFINE_integer("batch_size", 128, "images per step", flag_values=fv)
    if dtype:
        flags.DEFINE_string(
            "dtype", "float32", "compute dtype: float32 or bfloat16", flag_values=fv
        )
    flags.DEFINE_integer("width", None, "CIFAR nets: first-stage width", flag_values=fv)
    flags.DEFINE_integer(
        "image_size", None, "square input size (default: the model's)", flag_values=fv
    )
    if scan:
        flags.DEFINE_bool("scan", False, "ResNets: nn.scan over repeated blocks", flag_values=fv)
    flags.DEFINE_enum(
        "kernels",
        "auto",
        ("auto", "onednn", "xla"),
        "convolutions and BatchNorm: auto (oneDNN on a CPU), onednn, xla",
        flag_values=fv,
    )
    if num_classes:
        flags.DEFINE_integer("num_classes", 10, "classes of the model's output", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "seed of the parameters and the random batches", flag_values=fv)


def define_peak_flag(flag_values: flags.FlagValues) -> None:
    """--matmul_size: the side of the f32 matmul whose rate is the machine's peak."""
    flags.DEFINE_integer(
        "matmul_size", 2048, "side of the f32 matmul that sets the peak", flag_values=flag_values
    )


def define_report_flags(
    flag_values: flags.FlagValues, *, vs_torch_help: str, torch_threads: bool = True
) -> None:
    """--vs_torch, --torch_threads (if `torch_threads`) and --json."""
    flags.DEFINE_bool("vs_torch", False, vs_torch_help, flag_values=flag_values)
    if torch_threads:
        flags.DEFINE_integer("torch_threads", 2, "PyTorch's threads", flag_values=flag_values)
    flags.DEFINE_bool("json", False, "print one JSON object only", flag_values=flag_values)


def require_positive(flag_values: flags.FlagValues, *names: str) -> None:
    """Validators: every flag in `names` must be >= 1 (a bad value fails the parse)."""
    for name in names:
        flags.register_validator(
            name, lambda v: v >= 1, message=f"--{name} must be >= 1", flag_values=flag_values
        )


def workload(values: Mapping[str, Any]) -> Workload:
    """The `Workload` of parsed flag values; fields without a flag keep their defaults."""
    fields = (f.name for f in dataclasses.fields(Workload))
    return Workload(**{name: values[name] for name in fields if name in values})


def parse(define: Callable[[flags.FlagValues], None], argv: Sequence[str] = ()) -> flags.FlagValues:
    """A fresh `FlagValues` with the flags of `define`, parsed from `argv` (flags only).

    A bad value raises `flags.IllegalFlagValueError`, an unknown flag `flags.Error`.
    """
    flag_values = flags.FlagValues()
    define(flag_values)
    flag_values(["", *argv])
    return flag_values


def run_program(
    define: Callable[[flags.FlagValues], None],
    run: Callable[[flags.FlagValues], Any],
    flag_values: flags.FlagValues,
) -> None:
    """A script's program: `define`'s flags on `flag_values`, `app.run`, then `run(flag_values)`.

    absl reports a bad flag value in one line; so does this an argument that is not a flag.
    Logs below WARNING (JAX's start-up lines) stay off unless --verbosity asks for them.
    """
    define(flag_values)

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
        if "verbosity" in flag_values and not flag_values["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        run(flag_values)

    app.run(main)


def report(
    measure: Callable[..., dict[str, Any]],
    format_report: Callable[[dict[str, Any]], str],
    values: Mapping[str, Any],
    *,
    out: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """`measure(workload(values), **options)`, printed as one JSON object or as text.

    Each keyword-only parameter of `measure` takes the flag value of the same name when there
    is one; `values["json"]` picks the format. Returns the dict. A ValueError (unknown model,
    no PyTorch, ...) exits with a one-line message.
    """
    params = inspect.signature(measure).parameters.values()
    options = {
        p.name: values[p.name] for p in params if p.kind == p.KEYWORD_ONLY and p.name in values
    }
    try:
        result = measure(workload(values), **options)
    except ValueError as e:
        sys.exit(f"error: {e}")
    out(json.dumps(result) if values["json"] else format_report(result))
    return result
