"""Train-step time of several seeds as one vmapped program, against one seed after another.

    python scripts/seeds_benchmark.py --model=resnet56 --width=8 --image_size=16 --seeds=3
    python scripts/seeds_benchmark.py --model=resnet20 --seeds=5 --json

What `train.train_seeds` (and `--config.seeds=N` in the studies) runs: the seeds' train states
stacked and one jitted `jax.vmap` of the train step over them, timed against the jitted
one-seed step called once per seed, repetitions alternated so that both see the same machine
load; medians after --warmup steps. Random normal inputs. The measurement:
`cnn_cases.perf.seeds`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cnn_cases.perf import cli, seeds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cli.add_workload_arguments(p)
    p.add_argument("--seeds", type=int, default=3, help="seeds trained together (>= 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--steps_per_rep", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args(argv)
    cli.require_positive(p, args, "batch_size", "reps", "steps_per_rep")
    if args.seeds < 2:
        p.error(f"--seeds={args.seeds}: compare at least 2 seeds")
    return args


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    """Runs the benchmark for command-line `argv` (without the program name); returns the dict."""
    args = parse_args(argv)
    measure = lambda: seeds.benchmark(
        cli.workload(args),
        seeds=args.seeds,
        warmup=args.warmup,
        reps=args.reps,
        steps_per_rep=args.steps_per_rep,
    )
    return cli.report(measure, seeds.format_report, as_json=args.json, out=out)


if __name__ == "__main__":
    main(sys.argv[1:])
