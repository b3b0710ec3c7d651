"""Whether every preset's nets learn: a few dozen steps of each recipe on a narrow copy.

    python -m scripts.learns                                   # blobs, 60 steps
    python -m scripts.learns --dataset=cifar10_jpeg --data_dir=../shared/tfds --steps=100
    python -m scripts.learns --nets=history:vgg16,imagenet:vgg16 --init=flax

Every net of every study's cpu, colab and full presets, and every ImageNet preset's model,
once per distinct model and recipe (optimiser, learning rate, warm-up, weight decay,
auxiliary-loss weight), at 1/8 of its paper's widths (CIFAR ResNets: 8 filters), on the
smallest square input of at least 16x16 that it takes (a real dataset's images where that is
their size, else `blobs`, generated), without dropout. Prints
each net's loss every few steps and whether its last steps' mean fell below 0.8 ln(classes)
(`cnn_cases.analysis.learns`); exits 1 if a net did not learn.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import ml_collections
from absl import app, flags

from cnn_cases.analysis import learns
from cnn_cases.data import splits

# Each study's launcher (its configs) and study module.
STUDIES = (
    "resnet_depth",
    "why_resnets",
    "inception_bottleneck",
    "googlenet_aux",
    "lenet5",
    "history",
)
PRESETS = ("cpu", "colab", "full")


def preset_configs(
    presets: Sequence[str] = PRESETS,
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """Every study's variants under `presets` and every ImageNet preset's config, by
    "study:variant"."""
    named = []
    for study_name in STUDIES:
        launcher = importlib.import_module(f"experiments.{study_name}")
        study = importlib.import_module(f"cnn_cases.studies.{study_name}").STUDY
        for preset in presets:
            config = launcher.get_config(preset)
            for variant, c in study.variants(config).items():
                named.append((f"{study_name}:{variant}", c))
    imagenet = importlib.import_module("experiments.imagenet")
    for preset in imagenet.RECIPES:
        named.append((f"imagenet:{preset}", imagenet.get_config(preset)))
    return named


def preset_nets(presets: Sequence[str] = PRESETS) -> dict[str, ml_collections.ConfigDict]:
    """`preset_configs`, once per distinct model and recipe (the first name that has it)."""
    return learns.distinct(preset_configs(presets))


_NETS = flags.DEFINE_list("nets", [], "study:variant names to check (default: all)")
_DATASET = flags.DEFINE_string("dataset", "blobs", "TFDS name, or blobs (generated)")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir")
_STEPS = flags.DEFINE_integer("steps", 60, "training steps per net")
_BATCH = flags.DEFINE_integer("batch_size", 64, "batch size")
_INIT = flags.DEFINE_string("init", None, "override every net's init (reference, paper, flax)")
_EVERY = flags.DEFINE_integer("print_every", 10, "print the loss every this many steps")


def main(argv: Sequence[str]) -> None:
    del argv
    nets = {n: learns.narrowed(c) for n, c in preset_nets().items()}
    if _NETS.value:
        unknown = sorted(set(_NETS.value) - set(nets))
        if unknown:
            sys.exit(f"error: unknown nets {unknown} (valid: {', '.join(nets)})")
        nets = {n: nets[n] for n in _NETS.value}
    if _INIT.value:
        for c in nets.values():
            c.init = _INIT.value
    data = None
    if _DATASET.value != "blobs":
        split = splits.load_split(_DATASET.value, "train", data_dir=_DATA_DIR.value, download=False)
        data = {split.images.shape[1]: split}  # nets that need larger images: synthetic
    failed = []
    for name, c in nets.items():
        curve = learns.check({name: c}, data, num_steps=_STEPS.value, batch_size=_BATCH.value)[0]
        points = " ".join(f"{x:.2f}" for x in curve.losses[:: _EVERY.value])
        verdict = "learns" if curve.learned else "DOES NOT LEARN"
        print(f"{name:32s} {verdict:15s} final {curve.final:.3f}  losses: {points}", flush=True)
        if not curve.learned:
            failed.append(name)
    if failed:
        sys.exit(f"did not learn: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
