"""GoogLeNet's auxiliary classifiers: trained with and without them (Szegedy et al. 2015).

`STUDY.run(config, workdir)` trains GoogLeNetCifar with its two side classifiers (their losses
added with weight `aux_loss_weight`) and without them, then writes results.json (errors, the
train-test gap, each head's test error, parameters with and without the heads), curves.csv and
googlenet_aux.png. Configs: `experiments/googlenet_aux.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.report import figures, tables
from cnn_cases.studies import results as results_lib
from cnn_cases.studies import template, variants
from cnn_cases.studies.results import Results

WITHOUT_MODES = ("no_heads", "zero_weight")


def curve_text(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Per evaluation of the run with heads: main, aux1, aux2 test accuracy."""
    rows = []
    for r in curves.get("with_aux", []):
        accs = [r.get(k) for k in ("test_error", "aux1_test_error", "aux2_test_error")]
        rows.append([r["step"], *("-" if a is None else f"{100 * (1 - a):.2f}%" for a in accs)])
    return tables.format_table(("step", "main", "aux1", "aux2"), rows) + (
        "\n(test accuracy of each head, run with aux heads)"
    )


class GoogLeNetAux(template.Study):
    name = "googlenet_aux"
    columns = (
        ("params", "train params"),
        ("inference_params", "infer params"),
        ("aux_test_errors", "aux1 / aux2 test err"),
        ("gap", "test-train gap"),
    )

    def validate(self, config: ml_collections.ConfigDict) -> None:
        if config.without not in WITHOUT_MODES:
            raise ValueError(f"without={config.without!r} (valid: {', '.join(WITHOUT_MODES)})")
        if config.aux_loss_weight <= 0:
            raise ValueError(f"aux_loss_weight must be > 0, not {config.aux_loss_weight}")

    def variants(self, config: ml_collections.ConfigDict) -> template.Configs:
        """with_aux and without_aux: the same GoogLeNetCifar and recipe."""
        self.validate(config)
        width = config.width_multiplier
        with_aux = variants.variant_config(config, "googlenet_cifar", width_multiplier=width)
        without = variants.variant_config(
            config,
            "googlenet_cifar",
            width_multiplier=width,
            aux_logits=config.without == "zero_weight",
        )
        if config.without == "zero_weight":
            without.aux_loss_weight = 0.0
        return {"with_aux": with_aux, "without_aux": without}

    def row(self, variant: template.Trained) -> dict[str, Any]:
        model = template.create_model(variant.study, variant.config)
        row = results_lib.base_row(variant.runs)
        return {
            **row,
            "gap": row["test_error"] - row["train_error"],
            "aux_test_errors": results_lib.aux_test_errors(variant.runs),
            "aux_loss_weight": variant.config.aux_loss_weight,
            "inference_params": costs.count_params(
                model, template.image_shape(variant.study), train=False
            ),
        }

    def title_extra(self, config: ml_collections.ConfigDict) -> str:
        return f", width x{config.width_multiplier:g}"

    def figure(self, figure: template.Figure) -> None:
        after = figure.config.model_kwargs.get("aux_after", ("4a", "4d"))
        figures.googlenet_aux(figure.curves, figure.path, aux_after=after, title=figure.title)

    def summary(self, results: Results, workdir: str) -> str:
        """Each head's accuracy along the run with heads, then the table of both runs."""
        curves = {"with_aux": template.read_curves(workdir, "with_aux")}
        return f"{curve_text(curves)}\n\n{super().summary(results, workdir)}"


STUDY = GoogLeNetAux()
