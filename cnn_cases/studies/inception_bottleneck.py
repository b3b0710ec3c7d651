"""Inception modules with and without 1x1 bottlenecks (Szegedy et al. 2015, Figure 2).

`STUDY.run(config, workdir)` says the lecture's module arithmetic (28x28x192 -> 5x5/32 with
and without a 16-filter bottleneck; inception (3a) naive vs with reductions), then trains one
CIFAR-scale Inception network twice from the same module widths, naive modules vs bottleneck
modules, with the same recipe (plus, with `equal_macs`, the bottleneck network widened to the
naive network's multiply-adds). Writes results.json (per variant: width, params, macs,
step_seconds, errors, steps, seconds), module_arithmetic.json, curves.csv and
inception_bottleneck.png. Configs: `experiments/inception_bottleneck.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from cnn_cases.analysis import costs, lecture
from cnn_cases.models import inception
from cnn_cases.report import figures, tables
from cnn_cases.studies import results as results_lib
from cnn_cases.studies import template, variants
from cnn_cases.studies.results import Results

VARIANTS = ("naive", "bottleneck")
EQUAL_MACS_VARIANT = "bottleneck_equal_macs"


def _net(config: ml_collections.ConfigDict, bottleneck: bool, width: float) -> Any:
    return variants.variant_config(
        config, "inception_cifar", bottleneck=bottleneck, width_multiplier=width
    )


def variant_cost(
    config: ml_collections.ConfigDict, variant: ml_collections.ConfigDict
) -> costs.ModelCost:
    """Parameters and multiply-adds of one variant on the study's images and classes."""
    model = template.create_model(config, variant)
    return costs.model_cost(model, template.image_shape(config))


def macs(config: ml_collections.ConfigDict, bottleneck: bool, width: float) -> int:
    """Multiply-adds per image of the naive or bottleneck network at `width`."""
    return variant_cost(config, _net(config, bottleneck, width)).macs


def equal_macs_width(config: ml_collections.ConfigDict, iterations: int = 12) -> float:
    """The smallest width multiplier (to 3 decimals) at which the bottleneck network costs at
    least the naive network's multiply-adds at `config.width_multiplier` (bisection; widths
    are rounded to whole channels, so the costs match to within a channel's worth)."""
    target = macs(config, False, config.width_multiplier)
    lo, hi = config.width_multiplier, 2 * config.width_multiplier
    while macs(config, True, hi) < target:
        lo, hi = hi, 2 * hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(config, True, mid) < target else (lo, mid)
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
    return tables.format_table(("module (per image)", "parameters", "multiply-adds"), rows)


class InceptionBottleneck(template.Study):
    name = "inception_bottleneck"
    columns = (
        ("width_multiplier", "width"),
        ("params", "params"),
        ("macs", "mult-adds"),
        ("step_seconds", "s/step"),
    )

    def validate(self, config: ml_collections.ConfigDict) -> None:
        if not config.width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, not {config.width_multiplier}")

    def expected_minutes(self, config: ml_collections.ConfigDict) -> float:
        """The preset's time; the third net costs the naive net's multiply-adds and runs slower
        than it on a CPU (more, thinner convolutions): the cpu preset took twice as long with
        it."""
        return config.expected_minutes * (2 if config.equal_macs else 1)

    def variants(self, config: ml_collections.ConfigDict) -> template.Configs:
        """naive and bottleneck: the same InceptionCifar widths, the same recipe (plus
        `bottleneck_equal_macs` at its own width when `config.equal_macs`)."""
        self.validate(config)
        widths = {v: config.width_multiplier for v in VARIANTS}
        if config.equal_macs:
            widths[EQUAL_MACS_VARIANT] = equal_macs_width(config)
        return {v: _net(config, v != "naive", width) for v, width in widths.items()}

    def introduce(self, job: template.Job) -> Iterable[str]:
        yield arithmetic_text(module_arithmetic())
        for v, c in job.configs.items():
            cost = variant_cost(job.config, c)
            yield f"{v}: {cost.params:,} parameters, {cost.macs:,} multiply-adds per image"

    def row(self, variant: template.Trained) -> dict[str, Any]:
        return {
            "width_multiplier": variant.config.model_kwargs.width_multiplier,
            "macs": variant_cost(variant.study, variant.config).macs,
            "step_seconds": variant.runs[0].step_seconds,
            **results_lib.base_row(variant.runs),
        }

    def extra_files(self, config: ml_collections.ConfigDict) -> Mapping[str, Any]:
        return {"module_arithmetic.json": module_arithmetic()}

    def title_extra(self, config: ml_collections.ConfigDict) -> str:
        return f", width x{config.width_multiplier:g}"

    def figure(self, figure: template.Figure) -> None:
        figures.inception_bottleneck(figure.results, figure.curves, figure.path, title=figure.title)

    def summary(self, results: Results, workdir: str) -> str:
        """The table, how many times cheaper the bottleneck net is, and the test error
        difference."""
        n, b = results["naive"], results["bottleneck"]
        text = (
            f"{super().summary(results, workdir)}\n"
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


STUDY = InceptionBottleneck()
