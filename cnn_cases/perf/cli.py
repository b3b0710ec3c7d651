"""Command-line flags the performance scripts share, and how they report.

Each script builds its own `argparse` parser, adds the shared flags here, turns them into a
`Workload` with `workload(args)` and prints through `report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

from cnn_cases.perf.workload import Workload


def add_workload_arguments(
    parser: argparse.ArgumentParser,
    *,
    dtype: bool = False,
    scan: bool = False,
    num_classes: bool = False,
) -> None:
    """--model, --batch_size, --width, --image_size, --kernels and --seed; the keyword-named
    flags if True."""
    p = parser
    p.add_argument("--model", default="resnet20", help="registry name (resnet20, resnet56, ...)")
    p.add_argument("--batch_size", type=int, default=128)
    if dtype:
        p.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    p.add_argument("--width", type=int, default=None, help="CIFAR nets: first-stage width")
    p.add_argument(
        "--image_size", type=int, default=None, help="square input size (default: the model's)"
    )
    if scan:
        p.add_argument("--scan", action="store_true", help="ResNets: nn.scan over repeated blocks")
    p.add_argument(
        "--kernels",
        default="auto",
        choices=("auto", "onednn", "xla"),
        help="convolutions and BatchNorm: auto (oneDNN on a CPU), onednn, xla",
    )
    if num_classes:
        p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def add_report_arguments(
    parser: argparse.ArgumentParser, *, vs_torch_help: str, torch_threads: bool = True
) -> None:
    """--vs_torch, --torch_threads (if `torch_threads`) and --json."""
    parser.add_argument("--vs_torch", action="store_true", help=vs_torch_help)
    if torch_threads:
        parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")


def require_positive(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Exits through `parser.error` unless every flag in `names` is >= 1."""
    if min(getattr(args, name) for name in names) < 1:
        listed = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
        parser.error(f"{listed} must be >= 1")


def workload(args: argparse.Namespace) -> Workload:
    """The `Workload` of parsed flags; fields without a flag keep their defaults."""
    fields = (f.name for f in dataclasses.fields(Workload))
    return Workload(**{name: getattr(args, name) for name in fields if hasattr(args, name)})


def report(
    measure: Callable[[], dict[str, Any]],
    format_report: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
    out: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Runs `measure`, prints its dict as one JSON object or as text; returns the dict.

    A ValueError (unknown model, no PyTorch, ...) exits with a one-line message.
    """
    try:
        result = measure()
    except ValueError as e:
        sys.exit(f"error: {e}")
    out(json.dumps(result) if as_json else format_report(result))
    return result
