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
    "study:variant" (cpu preset), "study:variant@preset" (the others) or "imagenet:preset"."""
    named = []
    for study_name in STUDIES:
        launcher = importlib.import_module(f"experiments.{study_name}")
        study = importlib.import_module(f"cnn_cases.studies.{study_name}").STUDY
        for preset in presets:
            config = launcher.get_config(preset)
            suffix = "" if preset == "cpu" else f"@{preset}"
            for variant, c in study.variants(config).items():
                named.append((f"{study_name}:{variant}{suffix}", c))
    imagenet = importlib.import_module("experiments.imagenet")
    for preset in imagenet.RECIPES:
        named.append((f"imagenet:{preset}", imagenet.get_config(preset)))
    return named


def preset_nets(presets: Sequence[str] = PRESETS) -> dict[str, ml_collections.ConfigDict]:
    """`preset_configs`, once per distinct model and recipe (the first name that has it)."""
    return learns.distinct(preset_configs(presets))


def define_flags(flag_values: flags.FlagValues) -> None:
    """The script's flags, on `flag_values` (defined when it runs, not when it is imported)."""
    fv = flag_values
    flags.DEFINE_list("nets", [], "study:variant names to check (default: all)", flag_values=fv)
    flags.DEFINE_string("dataset", "blobs", "TFDS name, or blobs (generated)", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "TFDS data dir", flag_values=fv)
    flags.DEFINE_integer("steps", 60, "training steps per net", flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "batch size", flag_values=fv)
    flags.DEFINE_string("init", None, "every net's init (reference, paper, flax)", flag_values=fv)
    flags.DEFINE_integer("print_every", 10, "print the loss every this many steps", flag_values=fv)


def main(argv: Sequence[str]) -> None:
    del argv
    fv = flags.FLAGS
    nets = {n: learns.narrowed(c) for n, c in preset_nets().items()}
    if fv.nets:
        unknown = sorted(set(fv.nets) - set(nets))
        if unknown:
            sys.exit(f"error: unknown nets {unknown} (valid: {', '.join(nets)})")
        nets = {n: nets[n] for n in fv.nets}
    if fv.init:
        for c in nets.values():
            c.init = fv.init
    data = None
    if fv.dataset != "blobs":
        split = splits.load_split(fv.dataset, "train", data_dir=fv.data_dir, download=False)
        data = {split.images.shape[1]: split}  # nets that need larger images: blobs
    failed = []
    for name, c in nets.items():
        curve = learns.check({name: c}, data, num_steps=fv.steps, batch_size=fv.batch_size)[0]
        points = " ".join(f"{x:.2f}" for x in curve.losses[:: fv.print_every])
        verdict = "learns" if curve.learned else "DOES NOT LEARN"
        print(f"{name:32s} {verdict:15s} final {curve.final:.3f}  losses: {points}", flush=True)
        if not curve.learned:
            failed.append(name)
    if failed:
        sys.exit(f"did not learn: {', '.join(failed)}")


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
