"""Every registry model at its default input: parameters and multiply-adds vs the papers.

    python -m experiments.counts                 # the summary table + lecture examples
    python -m experiments.counts --model=lenet5  # one model's per-layer table

Counts come from `jax.eval_shape` (nothing is compiled); the whole table takes seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from cnn_cases.analysis import counts, lecture
from experiments import common

_MODEL = flags.DEFINE_string("model", None, "Print this model's per-layer table.")
_TRAIN = flags.DEFINE_bool("train", False, "Count training-only layers (auxiliary heads).")
_MAX_ROWS = flags.DEFINE_integer("max_rows", None, "Show at most this many layers.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.show_progress()
    if _MODEL.value:
        print(counts.layer_table(_MODEL.value, train=_TRAIN.value, max_rows=_MAX_ROWS.value))
    else:
        print(counts.summary_table())
        print()
        print(lecture.report())


if __name__ == "__main__":
    common.run(main)
