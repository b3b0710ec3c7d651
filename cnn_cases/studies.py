"""Inception naive vs bottleneck, GoogLeNet's auxiliary classifiers, LeNet-5 classic vs modern.

Each study trains a few variants of one model with `train.train_and_evaluate` (one
workdir per variant under `workdir/nets/<variant>`: a finished variant is skipped, an
unfinished one resumes), then writes `results.json` (keyed by variant), `curves.csv`
and a figure into `workdir`:

    run_inception(config, workdir)  -> inception_bottleneck.png   (Szegedy et al. Fig. 2)
    run_aux(config, workdir)        -> googlenet_aux.png          (side classifiers)
    run_lenet(config, workdir)      -> lenet5.png                 (LeCun et al. 1998)
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections

from cnn_cases import costs, lecture, plotting, train
from cnn_cases import data as data_lib
from cnn_cases.models import inception

Curves = dict[str, list[dict[str, float]]]

# ----------------------------------------------------------------------------- shared


def study_config(**knobs: Any) -> ml_collections.ConfigDict:
    """The training defaults plus `preset`, `expected_minutes` and a study's own `knobs`."""
    c = train.default_config()
    c.preset = ""
    c.expected_minutes = 0.0
    for key, value in knobs.items():
        c[key] = value
    return c


def variant_config(
    config: ml_collections.ConfigDict, model: str, **model_kwargs: Any
) -> ml_collections.ConfigDict:
    """The training config of one variant: every training key of `config`, this model.

    The study's own `model_kwargs` (e.g. fewer stages for a smoke run) go to every variant.
    """
    c = train.default_config()
    for key in c:
        if key not in ("model", "model_kwargs"):
            c[key] = config[key]
    c.model = model
    c.model_kwargs = ml_collections.ConfigDict({**config.model_kwargs.to_dict(), **model_kwargs})
    return c


def _say(config: ml_collections.ConfigDict) -> Callable[[str], None]:
    if config.verbose and jax.process_index() == 0:
        return lambda msg: print(msg, flush=True)
    return lambda msg: None


def run_variants(
    configs: Mapping[str, ml_collections.ConfigDict],
    workdir: str,
    *,
    stop_after: int | None = None,
) -> dict[str, train.RunResult] | None:
    """Trains each variant in `workdir/nets/<name>`; None if `stop_after` interrupted one."""
    train.check_workdir(workdir)
    results = {}
    for i, (name, c) in enumerate(configs.items()):
        _say(c)(f"[{i + 1}/{len(configs)}] {name}")
        r = train.train_and_evaluate(c, net_dir(workdir, name), stop_after=stop_after)
        if r is None:
            return None
        results[name] = r
    return results


def net_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "nets", name)


def read_curves(workdir: str, name: str) -> list[dict[str, float]]:
    """The evaluation curve of a finished variant (from its `result.json`)."""
    with open(os.path.join(net_dir(workdir, name), "result.json")) as f:
        return json.load(f)["curves"]


# One module per stage, (3a) at 16x16 and (4a) at 8x8: compiles in seconds for smoke runs.
SMOKE_STAGES = (inception.GOOGLENET_STAGES[0][:1], inception.GOOGLENET_STAGES[1][:1])


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


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(H, W, C) of the study's training images (the split is cached; no second decode)."""
    split = data_lib.load_split(
        config.dataset, config.train_split, data_dir=config.data_dir, download=config.download
    )
    return data_lib.image_shape(data_lib.downsample(split, config.downsample), config.pad_to)


def median_step_seconds(run_dir: str, batch_size: int) -> float | None:
    """Median seconds per train step over the logged intervals of a run (`metrics.jsonl`).

    Each `train` row after the first carries images/s over the steps since the previous log
    (compilation and evaluations excluded, input pipeline included).
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rates = [r["images_per_s"] for r in rows if r["kind"] == "train" and "images_per_s" in r]
    return batch_size / statistics.median(rates) if rates else None


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON write (a reader never sees half a file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def write_curves_csv(
    path: str, curves: Mapping[str, Sequence[Mapping[str, float]]], *, key: str = "variant"
) -> None:
    """Rows of step, `key` (the run's name) and every error column any curve has."""
    columns: list[str] = []
    for rows in curves.values():
        for r in rows:
            columns += [k for k in r if k != "step" and k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", key, *columns])
        for name, rows in curves.items():
            for r in rows:
                w.writerow([r["step"], name, *(f"{r[k]:.6f}" if k in r else "" for k in columns)])


def table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A fixed-width text table, one row per variant; `columns` are (key, header)."""

    def fmt(key: str, v: Any) -> str:
        if v is None or v == []:
            return "-"
        if isinstance(v, list | tuple):
            return " / ".join(fmt(key, x) for x in v)
        if key.endswith(("error", "errors")) or key == "gap":
            return f"{100 * v:.2f}%"
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.4g}" if key in ("step_seconds", "width_multiplier") else f"{v:.1f}"
        return str(v)

    rows = [["variant", *(h for _, h in columns)]]
    rows += [[name, *(fmt(k, r.get(k)) for k, _ in columns)] for name, r in results.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    return "\n".join(line(r) for r in rows)


def _title(config: ml_collections.ConfigDict, extra: str = "") -> str:
    return (
        f"{config.dataset}{extra}, {config.num_steps} steps of {config.batch_size}, "
        f"preset {config.preset or 'custom'}"
    )


def _base(r: train.RunResult) -> dict[str, Any]:
    return {
        "train_error": r.train_error,
        "test_error": r.test_error,
        "params": r.params,
        "steps": r.steps,
        "seconds": r.seconds,
    }


# ----------------------------------------------------------------------------- inception

INCEPTION_VARIANTS = ("naive", "bottleneck")
EQUAL_MACS_VARIANT = "bottleneck_equal_macs"


def inception_config() -> ml_collections.ConfigDict:
    """Training defaults plus `width_multiplier` (of GoogLeNet's widths) for both networks.

    `equal_macs` adds a third run: the bottleneck network widened until it costs as many
    multiply-adds per image as the naive one (see `equal_macs_width`).
    """
    return study_config(width_multiplier=0.25, equal_macs=False)


def inception_variant_configs(
    config: ml_collections.ConfigDict,
) -> dict[str, ml_collections.ConfigDict]:
    """naive and bottleneck: the same InceptionCifar widths, the same recipe (plus
    `bottleneck_equal_macs` at its own width when `config.equal_macs`)."""
    widths = {v: config.width_multiplier for v in INCEPTION_VARIANTS}
    if config.equal_macs:
        widths[EQUAL_MACS_VARIANT] = equal_macs_width(config)
    return {
        v: variant_config(
            config, "inception_cifar", bottleneck=v != "naive", width_multiplier=width
        )
        for v, width in widths.items()
    }


def variant_cost(
    config: ml_collections.ConfigDict, variant: ml_collections.ConfigDict
) -> costs.ModelCost:
    """Parameters and multiply-adds of one variant on the study's images and classes."""
    return costs.model_cost(train.create_model(variant, _num_classes(config)), image_shape(config))


def _inception_macs(config: ml_collections.ConfigDict, bottleneck: bool, width: float) -> int:
    c = variant_config(config, "inception_cifar", bottleneck=bottleneck, width_multiplier=width)
    return variant_cost(config, c).macs


def equal_macs_width(config: ml_collections.ConfigDict, iterations: int = 12) -> float:
    """The smallest width multiplier (to 3 decimals) at which the bottleneck network costs at
    least the naive network's multiply-adds at `config.width_multiplier` (bisection; widths
    are rounded to whole channels, so the costs match to within a channel's worth)."""
    target = _inception_macs(config, False, config.width_multiplier)
    lo, hi = config.width_multiplier, 2 * config.width_multiplier
    while _inception_macs(config, True, hi) < target:
        lo, hi = hi, 2 * hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _inception_macs(config, True, mid) < target else (lo, mid)
    return math.ceil(hi * 1000) / 1000


def module_arithmetic() -> dict[str, dict[str, int]]:
    """The lecture's 5x5 example and inception (3a), naive vs with reductions, on 28x28x192."""
    ex = lecture.bottleneck_example()
    out = {
        "5x5/32 on 28x28x192": {"params": ex.direct.params, "macs": ex.direct.macs},
        "1x1/16 then 5x5/32 on 28x28x192": {
            "params": ex.bottleneck.params,
            "macs": ex.bottleneck.macs,
        },
    }
    widths = inception.GOOGLENET_STAGES[0][0]
    for bottleneck in (False, True):
        cost = costs.model_cost(
            inception.InceptionModule(*widths, bottleneck=bottleneck), (28, 28, 192)
        )
        name = "inception(3a) " + ("with 1x1 reductions" if bottleneck else "naive")
        out[name] = {"params": cost.params, "macs": cost.macs}
    return out


def arithmetic_text(arith: Mapping[str, Mapping[str, int]]) -> str:
    rows = [(k, f"{v['params']:,}", f"{v['macs']:,}") for k, v in arith.items()]
    rows.insert(0, ("module (per image)", "parameters", "multiply-adds"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}" for a, b, c in rows)


def run_inception(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, dict[str, Any]] | None:
    """Trains the naive and the bottleneck network; writes results.json, curves.csv, figure."""
    say = _say(config)
    arith = module_arithmetic()
    say(arithmetic_text(arith))
    configs = inception_variant_configs(config)
    model_costs = {v: variant_cost(config, c) for v, c in configs.items()}
    for v, cost in model_costs.items():
        say(f"{v}: {cost.params:,} parameters, {cost.macs:,} multiply-adds per image")
    runs = run_variants(configs, workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {
        v: {
            "width_multiplier": configs[v].model_kwargs.width_multiplier,
            "params": r.params,
            "macs": model_costs[v].macs,
            "step_seconds": median_step_seconds(net_dir(workdir, v), config.batch_size),
            "train_error": r.train_error,
            "test_error": r.test_error,
            "steps": r.steps,
            "seconds": r.seconds,
        }
        for v, r in runs.items()
    }
    curves = {v: r.curves for v, r in runs.items()}
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "results.json"), results)
        write_json(os.path.join(workdir, "module_arithmetic.json"), arith)
        write_curves_csv(os.path.join(workdir, "curves.csv"), curves)
        plotting.cost_error_figure(
            results,
            curves,
            os.path.join(workdir, "inception_bottleneck.png"),
            title=_title(config, f", width x{config.width_multiplier:g}"),
        )
    return results


INCEPTION_COLUMNS = (
    ("width_multiplier", "width"),
    ("params", "params"),
    ("macs", "mult-adds"),
    ("step_seconds", "s/step"),
    ("train_error", "train err"),
    ("test_error", "test err"),
    ("steps", "steps"),
    ("seconds", "seconds"),
)


def inception_summary(results: Mapping[str, Mapping[str, Any]]) -> str:
    """How many times cheaper the bottleneck net is, and the test error difference."""
    n, b = results["naive"], results["bottleneck"]
    text = (
        f"bottleneck vs naive: {n['macs'] / b['macs']:.1f}x fewer multiply-adds, "
        f"{n['params'] / b['params']:.1f}x fewer parameters, test error "
        f"{100 * (b['test_error'] - n['test_error']):+.2f} points"
    )
    if EQUAL_MACS_VARIANT in results:
        e = results[EQUAL_MACS_VARIANT]
        text += (
            f"\nbottleneck at equal multiply-adds vs naive: {e['macs'] / n['macs']:.2f}x the "
            f"multiply-adds, {n['params'] / e['params']:.1f}x fewer parameters, test error "
            f"{100 * (e['test_error'] - n['test_error']):+.2f} points"
        )
    return text


# ----------------------------------------------------------------------------- aux heads

AUX_VARIANTS = ("with_aux", "without_aux")
WITHOUT_MODES = ("no_heads", "zero_weight")


def aux_config() -> ml_collections.ConfigDict:
    """Training defaults (aux_loss_weight 0.3) plus width and how "without" is made.

    without: "no_heads" builds the net with aux_logits=False (same main-net initialisation:
    flax derives each module's key from its name); "zero_weight" keeps the heads but gives
    their loss weight 0 (they then stay untrained, so their errors are chance level).
    """
    return study_config(width_multiplier=0.25, without="no_heads")


def aux_variant_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    if config.without not in WITHOUT_MODES:
        raise ValueError(f"without={config.without!r} (valid: {', '.join(WITHOUT_MODES)})")
    if config.aux_loss_weight <= 0:
        raise ValueError(f"aux_loss_weight must be > 0, not {config.aux_loss_weight}")
    with_aux = variant_config(config, "googlenet_cifar", width_multiplier=config.width_multiplier)
    without = variant_config(
        config,
        "googlenet_cifar",
        width_multiplier=config.width_multiplier,
        aux_logits=config.without == "zero_weight",
    )
    if config.without == "zero_weight":
        without.aux_loss_weight = 0.0
    return {"with_aux": with_aux, "without_aux": without}


def run_aux(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, dict[str, Any]] | None:
    """Trains GoogLeNetCifar with and without its side classifiers; writes the study's files."""
    configs = aux_variant_configs(config)
    shape = image_shape(config)
    runs = run_variants(configs, workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {}
    for v, r in runs.items():
        model = train.create_model(configs[v], _num_classes(config))
        results[v] = {
            **_base(r),
            "gap": r.test_error - r.train_error,
            "aux_test_errors": r.aux_test_errors,
            "aux_loss_weight": configs[v].aux_loss_weight,
            "inference_params": costs.count_params(model, shape, train=False),
        }
    curves = {v: r.curves for v, r in runs.items()}
    after = configs["with_aux"].model_kwargs.get("aux_after", ("4a", "4d"))
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "results.json"), results)
        write_curves_csv(os.path.join(workdir, "curves.csv"), curves)
        plotting.panels_figure(
            [
                (
                    "heads of the run with aux classifiers: test error",
                    {"with_aux": curves["with_aux"]},
                    (
                        ("test_error", "-", "main"),
                        ("aux1_test_error", "--", f"aux1 ({after[0]})"),
                        ("aux2_test_error", ":", f"aux2 ({after[1]})"),
                    ),
                ),
                (
                    "main head: train (dashed) vs test (solid)",
                    curves,
                    (("train_error", "--", "train"), ("test_error", "-", "test")),
                ),
            ],
            os.path.join(workdir, "googlenet_aux.png"),
            title=_title(config, f", width x{config.width_multiplier:g}"),
        )
    return results


def _num_classes(config: ml_collections.ConfigDict) -> int:
    return data_lib.load_split(
        config.dataset, config.train_split, data_dir=config.data_dir, download=config.download
    ).num_classes


AUX_COLUMNS = (
    ("params", "train params"),
    ("inference_params", "infer params"),
    ("train_error", "train err"),
    ("test_error", "test err"),
    ("gap", "gap"),
    ("aux_test_errors", "aux1 / aux2 test err"),
    ("steps", "steps"),
    ("seconds", "seconds"),
)


def aux_curve_text(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Per evaluation of the run with heads: main, aux1, aux2 test accuracy."""
    lines = ["step     main    aux1    aux2   (test accuracy, run with aux heads)"]
    for r in curves.get("with_aux", []):
        accs = [r.get(k) for k in ("test_error", "aux1_test_error", "aux2_test_error")]
        lines.append(
            f"{r['step']:<6} "
            + " ".join("   -   " if a is None else f"{100 * (1 - a):6.2f}%" for a in accs)
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- LeNet-5

LENET_VARIANTS: dict[str, dict[str, str]] = {
    "classic": {"activation": "tanh", "pool": "avg"},
    "modern": {"activation": "relu", "pool": "max"},
}


def lenet_config() -> ml_collections.ConfigDict:
    """Training defaults for digits: mnist, mean subtracted, no crop/flip augmentation."""
    c = study_config()
    c.dataset = "mnist"
    c.augment = False
    return c


def lenet_variant_configs(
    config: ml_collections.ConfigDict,
) -> dict[str, ml_collections.ConfigDict]:
    return {v: variant_config(config, "lenet5", **kw) for v, kw in LENET_VARIANTS.items()}


def lenet_shape_table(config: ml_collections.ConfigDict) -> str:
    """Per-layer output shapes, parameters and multiply-adds of LeNet-5 on the study's images."""
    return variant_cost(config, lenet_variant_configs(config)["classic"]).table()


def run_lenet(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, dict[str, Any]] | None:
    """Trains classic and modern LeNet-5; writes results.json, curves.csv and lenet5.png."""
    say = _say(config)
    say("LeNet-5 (28x28 digits are zero-padded to 32x32 inside the model; both variants have")
    say("the same shapes; pooling has no parameters):")
    say(lenet_shape_table(config))
    runs = run_variants(lenet_variant_configs(config), workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {
        v: {**LENET_VARIANTS[v], **_base(r)}  # activation, pool, errors, params, steps, seconds
        for v, r in runs.items()
    }
    curves = {v: r.curves for v, r in runs.items()}
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "results.json"), results)
        write_curves_csv(os.path.join(workdir, "curves.csv"), curves)
        plotting.panels_figure(
            [
                (
                    "LeNet-5: train (dashed) vs test (solid)",
                    curves,
                    (("train_error", "--", "train"), ("test_error", "-", "test")),
                )
            ],
            os.path.join(workdir, "lenet5.png"),
            title=_title(config),
            log_y=True,
        )
    return results


LENET_COLUMNS = (
    ("activation", "activation"),
    ("pool", "pool"),
    ("params", "params"),
    ("train_error", "train err"),
    ("test_error", "test err"),
    ("steps", "steps"),
    ("seconds", "seconds"),
)
