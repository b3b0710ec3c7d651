"""LeNet-5 (LeCun et al. 1998): the classic variant (tanh, average pooling) vs the modern one
(ReLU, max pooling), on mnist (default) or fashion_mnist.

`STUDY.run(config, workdir)` says the per-layer shape table, trains both variants and writes
results.json (per variant: activation, pool, errors, params, steps, seconds), curves.csv and
lenet5.png. Configs: `experiments/lenet5.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.report import figures
from cnn_cases.studies import results as results_lib
from cnn_cases.studies import template, variants

VARIANTS: dict[str, dict[str, str]] = {
    "classic": {"activation": "tanh", "pool": "avg"},
    "modern": {"activation": "relu", "pool": "max"},
}


def shape_table(config: ml_collections.ConfigDict) -> str:
    """Per-layer output shapes, parameters and multiply-adds of LeNet-5 on the study's images."""
    variant = STUDY.variants(config)["classic"]
    model = template.create_model(config, variant)
    return costs.model_cost(model, template.image_shape(config)).table()


class LeNet5(template.Study):
    name = "lenet5"
    columns = (("activation", "activation"), ("pool", "pool"), ("params", "params"))

    def validate(self, config: ml_collections.ConfigDict) -> None:
        """LeNet-5 takes 28x28 images (padded to 32x32 inside the model) or 32x32 and larger."""
        h, w, _ = template.image_shape(config)
        if (h, w) != (28, 28) and min(h, w) < 32:
            raise ValueError(
                f"LeNet-5 needs 28x28 or at least 32x32 images; {config.dataset} gives {h}x{w} "
                f"(downsample={config.downsample})"
            )

    def variants(self, config: ml_collections.ConfigDict) -> template.Configs:
        """classic and modern: LeNet-5 with the activation and pooling of each."""
        return {v: variants.variant_config(config, "lenet5", **kw) for v, kw in VARIANTS.items()}

    def introduce(self, job: template.Job) -> Iterable[str]:
        yield "LeNet-5 (28x28 digits are zero-padded to 32x32 inside the model; both variants have"
        yield "the same shapes; pooling has no parameters):"
        yield shape_table(job.config)

    def row(self, variant: template.Trained) -> dict[str, Any]:
        return {**VARIANTS[variant.name], **results_lib.base_row(variant.runs)}

    def figure(self, figure: template.Figure) -> None:
        figures.lenet5(figure.curves, figure.path, title=figure.title)


STUDY = LeNet5()
