"""What every study shares: configs of its variants, the run loop, result files and tables.

A study trains a few variants (one config each) with `train.train_seeds`, one run directory
per variant under `workdir/nets/<variant>` (a finished variant is skipped, an unfinished one
resumes), then writes into `workdir`:

    results.json   one entry per variant (errors, parameters, steps, seconds, study columns)
    curves.csv     every evaluation of every variant: step, variant, error columns
    <study>.png    the study's figure
"""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.data import splits
from cnn_cases.engine import defaults, rundir, train
from cnn_cases.engine.rundir import RunResult
from cnn_cases.report import tables

Results = dict[str, dict[str, Any]]
Curves = dict[str, list[dict[str, float]]]


def base_config(**knobs: Any) -> ml_collections.ConfigDict:
    """The training defaults plus `preset`, `expected_minutes` and a study's own `knobs`."""
    c = defaults.default_config()
    c.preset = ""
    c.expected_minutes = 0.0
    for key, value in knobs.items():
        c[key] = value
    return c


# How often the presets evaluate, log and checkpoint: a full run's curves on all 10,000 test
# images every 2,000 steps; a CPU run's on 1,000 images every 100 steps.
FULL_CADENCE = dict(
    eval_every=2_000, curve_eval_examples=10_000, checkpoint_every=2_000, log_every=500
)
CPU_CADENCE = dict(
    eval_every=100,
    curve_eval_examples=1_000,
    final_train_eval_examples=5_000,
    checkpoint_every=100,
    log_every=50,
    weight_decay=5e-4,
)


# The CIFAR nets' recipe on a 2-core CPU: width 8, CIFAR averaged down to 16x16 (pad-2 crop +
# flip), 900 steps (lr 0.1, 0.01 from step 720), residual branches' last BN scale 0.
# resnet_depth and why_resnets share it, so that why_resnets can read resnet_depth's nets.
CPU_CIFAR = dict(
    width=8,
    downsample=2,
    crop_padding=2,
    zero_init_residual=True,
    num_steps=900,
    lr_boundaries=(720,),
    final_train_eval_examples=10_000,
)


# The colab presets are sized for one Colab session on its free GPU, a T4: about 15 minutes by
# an estimate from multiply-adds and the card's peak (8.1 TFLOP/s in f32), assuming a train
# step of these small nets reaches a fifth of it. Not a measurement.
T4_F32_TFLOPS = 8.1
ASSUMED_PEAK_FRACTION = 0.2
# A CIFAR recipe sized so: He et al.'s nets at full width and resolution, 3,000 steps of 128
# (lr 0.1, /10 at half and three quarters, as 32k and 48k of 64k), curves every 500 steps.
# resnet_depth and why_resnets share it, so that why_resnets can read resnet_depth's nets.
COLAB_CADENCE = dict(eval_every=500, curve_eval_examples=2_000, checkpoint_every=500, log_every=100)
COLAB_CIFAR = dict(num_steps=3_000, lr_boundaries=(1_500, 2_250), **COLAB_CADENCE)


def estimate_minutes(
    variants: Mapping[str, ml_collections.ConfigDict],
    image_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    tflops: float = T4_F32_TFLOPS,
    peak_fraction: float = ASSUMED_PEAK_FRACTION,
    extra: Sequence[tuple[ml_collections.ConfigDict, int]] = (),
) -> float:
    """Estimated minutes to train and evaluate `variants` on a card of `tflops`.

    Per image, a train step costs three forward passes (forward, and the backward's two
    products), an evaluation one; a multiply-add is 2 FLOPs. `extra` adds (variant, steps)
    trained on top (why_resnets' continued nets). An estimate from multiply-adds, not a
    measurement: it ignores what is not a multiply-add and launch overheads.
    """
    flops = 0.0
    for c, steps in [*((c, c.num_steps) for c in variants.values()), *extra]:
        macs = costs.model_cost(defaults.create_model(c, num_classes), image_shape).macs
        evals = steps // c.eval_every if c.eval_every else 0
        eval_images = 2 * evals * c.curve_eval_examples + c.final_train_eval_examples
        eval_images += c.final_test_eval_examples or 10_000
        flops += 2 * macs * (3 * steps * c.batch_size * c.seeds + eval_images)
    return flops / (tflops * 1e12 * peak_fraction) / 60


def check_preset(preset: str | None, presets: Sequence[str]) -> str:
    """`preset`, or the backend's when it is None/"" (resolved later); ValueError if unknown."""
    if preset and preset not in presets:
        raise ValueError(f"unknown preset {preset!r} (valid: {', '.join(presets)})")
    return preset or ""


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds-long runs for tests and notebooks: 3 steps of 16, 100-image evaluations."""
    c.batch_size = 16
    c.eval_batch_size = 50
    c.num_steps = 3
    c.lr_boundaries = (2,)
    c.eval_every = 2
    c.curve_eval_examples = 50
    c.final_train_eval_examples = 100
    c.final_test_eval_examples = 100
    c.checkpoint_every = 2
    c.log_every = 1
    c.expected_minutes = 0.5
    return c


def variant_config(
    config: ml_collections.ConfigDict, model: str, **model_kwargs: Any
) -> ml_collections.ConfigDict:
    """The training config of one variant: every training key of `config`, this model.

    The study's own `model_kwargs` (e.g. fewer stages for a smoke run) go to every variant.
    """
    c = defaults.default_config()
    for key in c:
        if key not in ("model", "model_kwargs"):
            c[key] = config[key]
    c.model = model
    c.model_kwargs = ml_collections.ConfigDict({**config.model_kwargs.to_dict(), **model_kwargs})
    return c


def cifar_depth(name: str) -> int:
    """D of `plainD` / `resnetD`."""
    return int(name.removeprefix("resnet").removeprefix("plain"))


def cifar_net_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """`plainD` / `resnetD` of a study with the CIFAR keys width, shortcut, zero_init_residual
    and warmup_from_depth (He et al.: only ResNet-110 and deeper warm up)."""
    kwargs: dict[str, Any] = {"width": config.width, "shortcut": config.shortcut}
    if name.startswith("resnet") and config.zero_init_residual:
        kwargs["zero_init_residual"] = True
    c = variant_config(config, name, **kwargs)
    if cifar_depth(name) < config.warmup_from_depth:
        c.warmup_steps = 0
    return c


def say(config: ml_collections.ConfigDict) -> Callable[[str], None]:
    """print on process 0 when `config.verbose`, else nothing."""
    if config.verbose and jax.process_index() == 0:
        return lambda msg: print(msg, flush=True)
    return lambda msg: None


def net_dir(workdir: str, name: str) -> str:
    """The run directory of variant `name`."""
    return os.path.join(workdir, "nets", name)


def run_variants(
    configs: Mapping[str, ml_collections.ConfigDict],
    workdir: str,
    *,
    stop_after: int | None = None,
) -> dict[str, list[RunResult]] | None:
    """Trains each variant in its run directory, all its seeds (`config.seeds`) as one
    program; one result per seed. None if `stop_after` interrupted a variant."""
    rundir.check_workdir(workdir)
    results = {}
    for i, (name, c) in enumerate(configs.items()):
        say(c)(f"[{i + 1}/{len(configs)}] {name}")
        r = train.train_seeds(c, net_dir(workdir, name), stop_after=stop_after)
        if r is None:
            return None
        results[name] = r
    return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the seeds' values."""
    return statistics.fmean(values), statistics.stdev(values)


def base_row(runs: Sequence[RunResult]) -> dict[str, Any]:
    """The columns every study reports for a finished variant.

    Several seeds: train_error and test_error are the seeds' means, with `*_std` (sample
    standard deviation) and `*_errors` (each seed's, in seed order) beside them.
    """
    r = runs[0]
    row = {
        "train_error": r.train_error,
        "test_error": r.test_error,
        "params": r.params,
        "steps": r.steps,
        "seconds": r.seconds,
    }
    if len(runs) > 1:
        row["seeds"] = len(runs)
        for key in ("train_error", "test_error"):
            values = [getattr(x, key) for x in runs]
            row[key], row[f"{key}_std"] = _mean_std(values)
            row[f"{key}s"] = values
    return row


def aux_test_errors(runs: Sequence[RunResult]) -> list[float]:
    """Each auxiliary head's test error (the seeds' mean)."""
    return [statistics.fmean(e) for e in zip(*(r.aux_test_errors for r in runs), strict=True)]


def seed_curves(runs: Sequence[RunResult]) -> list[dict[str, float]]:
    """A variant's evaluation curve: its one seed's, or every column's mean over the seeds
    with `<column>_std` beside it."""
    if len(runs) == 1:
        return runs[0].curves
    out = []
    for rows in zip(*(r.curves for r in runs), strict=True):
        row = {"step": rows[0]["step"]}
        for key in rows[0]:
            if key != "step":
                row[key], row[f"{key}_std"] = _mean_std([r[key] for r in rows])
        out.append(row)
    return out


def read_curves(workdir: str, name: str) -> list[dict[str, float]]:
    """The evaluation curve of a finished variant (means and stds over its seeds)."""
    results = rundir.read_results(net_dir(workdir, name))
    if results is None:
        raise ValueError(f"variant {name!r} has not finished in {workdir!r}")
    return seed_curves(results)


def load_train_split(config: ml_collections.ConfigDict) -> splits.Split:
    """The study's training split as the variants see it (cached; downsampled)."""
    split = splits.load_split(
        config.dataset, config.train_split, data_dir=config.data_dir, download=config.download
    )
    return splits.downsample(split, config.downsample)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(H, W, C) of the study's training images."""
    return splits.image_shape(load_train_split(config), config.pad_to)


def create_model(config: ml_collections.ConfigDict, variant: ml_collections.ConfigDict) -> Any:
    """The model of `variant` with the number of classes of the study's dataset."""
    return defaults.create_model(variant, load_train_split(config).num_classes)


def median_step_seconds(run_dir: str, batch_size: int) -> float | None:
    """Median seconds per train step over the logged intervals of a run.

    Each logged `train` row after the first carries images/s over the steps since the previous
    log (compilation and evaluations excluded, input pipeline included).
    """
    rows = rundir.read_metrics(run_dir, "train")
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
    return batch_size / statistics.median(rates) if rates else None


def write_curves_csv(path: str, curves: Mapping[str, Sequence[Mapping[str, float]]]) -> None:
    """Rows of step, variant and every error column any curve has."""
    columns: list[str] = []
    for rows in curves.values():
        for r in rows:
            columns += [k for k in r if k != "step" and k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "variant", *columns])
        for name, rows in curves.items():
            for r in rows:
                w.writerow([r["step"], name, *(f"{r[k]:.6f}" if k in r else "" for k in columns)])


def write_outputs(
    workdir: str,
    results: Results,
    curves: Curves,
    figure: Callable[[str], None],
    figure_name: str,
) -> None:
    """results.json, curves.csv and the figure (`figure(path)`) in `workdir`; process 0 only."""
    if jax.process_index() != 0:
        return
    rundir.write_json(os.path.join(workdir, "results.json"), results)
    write_curves_csv(os.path.join(workdir, "curves.csv"), curves)
    figure(os.path.join(workdir, figure_name))


def format_value(key: str, v: Any) -> str:
    """How a results column prints: errors in %, counts with separators, '-' when missing."""
    if v is None or v == []:
        return "-"
    if isinstance(v, list | tuple):
        return " / ".join(format_value(key, x) for x in v)
    if key.endswith(("error", "errors")) or key == "gap":
        return f"{100 * v:.2f}%"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}" if key in ("step_seconds", "width_multiplier") else f"{v:.1f}"


# The columns of every study's table, after its own.
RUN_COLUMNS = (
    ("train_error", "train err"),
    ("test_error", "test err"),
    ("steps", "steps"),
    ("seconds", "seconds"),
)


def _cell(key: str, row: Mapping[str, Any]) -> str:
    """A table cell: the value, and "± std" over the seeds when the row has one."""
    cell = format_value(key, row.get(key))
    if f"{key}_std" in row:
        std = format_value(key, row[f"{key}_std"])
        unit = "%" if cell.endswith("%") and std.endswith("%") else ""
        cell = f"{cell.removesuffix(unit)} ± {std}"
    return cell


def table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """One row per variant; `columns` are (results key, header). Values averaged over seeds
    print as mean ± standard deviation."""
    rows = [[name, *(_cell(k, r) for k, _ in columns)] for name, r in results.items()]
    return tables.format_table(["variant", *(h for _, h in columns)], rows)


def title(config: ml_collections.ConfigDict, extra: str = "") -> str:
    """The figure title: dataset (and resolution), budget, seeds, preset."""
    size = f" at 1/{config.downsample} resolution" if config.downsample > 1 else ""
    seeds = (
        f", mean ± std of seeds {config.seed}-{config.seed + config.seeds - 1}"
        if config.seeds > 1
        else ""
    )
    return (
        f"{config.dataset}{size}{extra}, {config.num_steps} steps of {config.batch_size}"
        f"{seeds}, preset {config.preset or 'custom'}"
    )
