"""Train-step time of several seeds as one vmapped program, against one seed after another.

    python scripts/seeds_benchmark.py --model=resnet56 --width=8 --image_size=16 --seeds=3
    python scripts/seeds_benchmark.py --model=resnet20 --seeds=5 --json

What `train.train` (and `--config.seeds=N` in the studies) runs: the seeds' train states
stacked and one jitted `jax.vmap` of the train step over them, timed against the jitted
one-seed step called once per seed, repetitions alternated so that both see the same machine
load; medians after --warmup steps. Random normal inputs. The measurement:
`cnn_cases.perf.seeds`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from absl import flags

from cnn_cases.perf import cli, seeds


def define_flags(flag_values: flags.FlagValues) -> None:
    """The benchmark's flags, on `flag_values`."""
    fv = flag_values
    cli.define_workload_flags(fv)
    flags.DEFINE_integer("seeds", 3, "seeds trained together (>= 2)", flag_values=fv)
    flags.register_validator(
        "seeds", lambda v: v >= 2, message="compare at least 2 seeds", flag_values=fv
    )
    flags.DEFINE_integer("warmup", 2, "untimed steps after compiling", flag_values=fv)
    flags.DEFINE_integer("reps", 5, "timed repetitions (median reported)", flag_values=fv)
    flags.DEFINE_integer("steps_per_rep", 2, "steps per timed repetition", flag_values=fv)
    flags.DEFINE_bool("json", False, "print one JSON object only", flag_values=fv)
    cli.require_positive(fv, "batch_size", "reps", "steps_per_rep")


def run(flag_values: flags.FlagValues, *, out: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs the benchmark with the parsed `flag_values`; prints and returns its dict."""
    return cli.report(seeds.benchmark, seeds.format_report, flag_values.flag_values_dict(), out=out)


if __name__ == "__main__":
    cli.run_program(define_flags, run, flags.FLAGS)
