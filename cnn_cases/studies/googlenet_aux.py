"""GoogLeNet's auxiliary classifiers: trained with and without them (Szegedy et al. 2015).

`run(config, workdir)` trains GoogLeNetCifar with its two side classifiers (their losses added
with weight `aux_loss_weight`) and without them, then writes results.json (errors, the
train-test gap, each head's test error, parameters with and without the heads), curves.csv and
googlenet_aux.png.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.engine import launch
from cnn_cases.models import inception
from cnn_cases.report import plotting, tables
from cnn_cases.studies import common

NAME = "googlenet_aux"
PRESETS = launch.PRESETS
WITHOUT_MODES = ("no_heads", "zero_weight")


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    Knobs: `width_multiplier`; `without`, how the run without heads is made: "no_heads" builds
    the net with aux_logits=False (same main-net initialisation: flax derives each module's
    key from its name); "zero_weight" keeps the heads but gives their loss weight 0 (they then
    stay untrained, so their errors are chance level).

    full: the CIFAR-10 recipe of He et al. (batch 128, SGD momentum 0.9, weight decay 1e-4,
        lr 0.1 divided by 10 at 32k and 48k, 64k iterations, pad-4 crop + flip) for
        GoogLeNetCifar at 1/4 width (372,578 parameters at inference, 452,214 with the
        heads), aux loss weight 0.3. Cost: 2 x 64k steps; not measured on an accelerator here.
    colab: one Colab session on its T4: GoogLeNetCifar at GoogLeNet's full widths (365.8M
        multiply-adds per image), 2,500 steps of 128, lr 0.1 /10 at 1,250 and 1,875. About 15
        minutes by an estimate from multiply-adds (`common.estimate_minutes`); not measured.
    cpu: 1/8 width, 500 steps of 128 (lr 0.1, /10 at 400, weight decay 5e-4) on cifar10, for
        2 CPU cores (about 6.5 minutes; see the README for the measured errors).
    smoke: seconds; for tests and notebooks (1/16 width, modules (3a) and (4a) only with a
        head on each, 3 steps of 16).
    """
    c = common.base_config(width_multiplier=0.25, without="no_heads")
    c.preset = common.check_preset(preset, PRESETS)
    if c.preset == launch.ACCELERATOR_PRESET:
        c.update(common.FULL_CADENCE)
        c.expected_minutes = 2 * 25.0
    elif c.preset == launch.COLAB_PRESET:
        c.update(common.COLAB_CADENCE)
        c.update(width_multiplier=1.0, num_steps=2_500, lr_boundaries=(1_250, 1_875))
        c.expected_minutes = 15.0
    elif c.preset == "smoke":
        common.smoke(c).width_multiplier = 0.0625
        c.model_kwargs.update(stages=inception.SMOKE_STAGES, aux_after=("3a", "4a"))
    else:
        c.update(common.CPU_CADENCE)
        c.update(width_multiplier=0.125, num_steps=500, lr_boundaries=(400,), expected_minutes=6.5)
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    if config.without not in WITHOUT_MODES:
        raise ValueError(f"without={config.without!r} (valid: {', '.join(WITHOUT_MODES)})")
    if config.aux_loss_weight <= 0:
        raise ValueError(f"aux_loss_weight must be > 0, not {config.aux_loss_weight}")


def variant_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """with_aux and without_aux: the same GoogLeNetCifar and recipe."""
    validate(config)
    with_aux = common.variant_config(
        config, "googlenet_cifar", width_multiplier=config.width_multiplier
    )
    without = common.variant_config(
        config,
        "googlenet_cifar",
        width_multiplier=config.width_multiplier,
        aux_logits=config.without == "zero_weight",
    )
    if config.without == "zero_weight":
        without.aux_loss_weight = 0.0
    return {"with_aux": with_aux, "without_aux": without}


def run(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> common.Results | None:
    """Trains GoogLeNetCifar with and without its side classifiers; writes the study's files."""
    configs = variant_configs(config)
    shape = common.image_shape(config)
    runs = common.run_variants(configs, workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {}
    for v, rs in runs.items():
        model = common.create_model(config, configs[v])
        row = common.base_row(rs)
        results[v] = {
            **row,
            "gap": row["test_error"] - row["train_error"],
            "aux_test_errors": common.aux_test_errors(rs),
            "aux_loss_weight": configs[v].aux_loss_weight,
            "inference_params": costs.count_params(model, shape, train=False),
        }
    curves = {v: common.seed_curves(rs) for v, rs in runs.items()}
    after = configs["with_aux"].model_kwargs.get("aux_after", ("4a", "4d"))
    title = common.title(config, f", width x{config.width_multiplier:g}")
    common.write_outputs(
        workdir,
        results,
        curves,
        lambda path: figure(curves, path, aux_after=after, title=title),
        f"{NAME}.png",
    )
    return results


def figure(curves: common.Curves, path: str, *, aux_after: Sequence[str], title: str = "") -> None:
    """Left: the three heads of the run with them; right: train vs test of both runs."""
    plotting.panels_figure(
        [
            (
                "heads of the run with aux classifiers: test error",
                {"with_aux": curves["with_aux"]},
                (
                    ("test_error", "-", "main"),
                    ("aux1_test_error", "--", f"aux1 ({aux_after[0]})"),
                    ("aux2_test_error", ":", f"aux2 ({aux_after[1]})"),
                ),
            ),
            (
                "main head: train (dashed) vs test (solid)",
                curves,
                (("train_error", "--", "train"), ("test_error", "-", "test")),
            ),
        ],
        path,
        title=title,
    )


COLUMNS = (
    ("params", "train params"),
    ("inference_params", "infer params"),
    ("aux_test_errors", "aux1 / aux2 test err"),
    ("gap", "test-train gap"),
    *common.RUN_COLUMNS,
)


def curve_text(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Per evaluation of the run with heads: main, aux1, aux2 test accuracy."""
    rows = []
    for r in curves.get("with_aux", []):
        accs = [r.get(k) for k in ("test_error", "aux1_test_error", "aux2_test_error")]
        rows.append([r["step"], *("-" if a is None else f"{100 * (1 - a):.2f}%" for a in accs)])
    return tables.format_table(("step", "main", "aux1", "aux2"), rows) + (
        "\n(test accuracy of each head, run with aux heads)"
    )


def summary(results: common.Results, workdir: str) -> str:
    """Each head's accuracy along the run with heads, then the table of both runs."""
    curves = {"with_aux": common.read_curves(workdir, "with_aux")}
    return f"{curve_text(curves)}\n\n{common.table(results, COLUMNS)}"
