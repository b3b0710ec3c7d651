"""Plain nets vs ResNets at several depths (He et al. 2016, section 4.2, Figure 6).

`STUDY.run(config, workdir)` trains `plainD` and `resnetD` for each depth D, then writes
`results.json`, `curves.csv` and `resnet_depth.png`. A plain net's training error rises with
depth (an optimisation problem, not overfitting); a ResNet's does not. Configs:
`experiments/resnet_depth.py`.
"""

from __future__ import annotations

import statistics
from typing import Any

import ml_collections

from cnn_cases.models import resnet
from cnn_cases.report import figures
from cnn_cases.studies import results as results_lib
from cnn_cases.studies import template, variants
from cnn_cases.studies.results import Results


def net_names(depths: Any) -> list[str]:
    return [f"{kind}{d}" for kind in ("plain", "resnet") for d in depths]


def verdict(results: Results, *, tolerance: float = 0.005) -> tuple[bool, str]:
    """Deepest plain net trains worse than the shallowest; deepest ResNet not worse.

    One seed: "worse" and "not worse" allow `tolerance` (0.5 point by default), about what
    one short CPU run's training error moves from seed to seed. Several seeds: the gaps are
    taken seed by seed; the plain gap's mean must exceed twice its standard deviation over the
    seeds (and the tolerance), the ResNet gap's mean must not.
    """
    ends = {}
    for residual in (False, True):
        rows = sorted(
            ((v["depth"], v) for v in results.values() if v["residual"] == residual),
            key=lambda row: row[0],
        )
        if len(rows) < 2:
            return False, "degradation not tested: need at least two depths"
        ends[residual] = rows[0], rows[-1]
    seeds = "train_errors" in next(iter(results.values()))
    parts, ok = [], True
    for residual, must_rise in ((False, True), (True, False)):
        (d0, shallow), (d1, deep) = ends[residual]
        kind = "resnet" if residual else "plain"
        if seeds:
            gaps = [
                a - b for a, b in zip(deep["train_errors"], shallow["train_errors"], strict=True)
            ]
            mean, std = statistics.fmean(gaps), statistics.stdev(gaps)
            bar = max(2 * std, tolerance)
            what = f"{mean * 100:+.2f} ± {std * 100:.2f} points"
        else:
            mean, bar = deep["train_error"] - shallow["train_error"], tolerance
            what = f"{mean * 100:+.2f} points"
        rises = mean > bar
        ok &= rises == must_rise
        parts.append(f"{kind}{d1} train error {what} vs {kind}{d0}")
    n = len(next(iter(results.values())).get("train_errors", [0]))
    rule = (
        f"over {n} seeds; a rise counts above 2 std of the seeds' gaps, at least "
        f"{tolerance * 100:.1f} point"
        if seeds
        else f"tolerance {tolerance * 100:.1f} point"
    )
    what = "REPRODUCED" if ok else "NOT reproduced"
    return ok, f"degradation {what}: {parts[0]}; {parts[1]} ({rule})"


class ResnetDepth(template.Study):
    name = "resnet_depth"
    columns = (("params", "params"),)

    def validate(self, config: ml_collections.ConfigDict) -> None:
        """One-line ValueError for a depth that is not 6n+2 or an unknown shortcut."""
        for d in config.depths:
            resnet.cifar_depth_to_blocks(d)
        if config.shortcut not in ("A", "B"):
            raise ValueError(f"shortcut={config.shortcut!r} (valid: A, B)")

    def variants(self, config: ml_collections.ConfigDict) -> template.Configs:
        """plainD and resnetD for every depth: same widths, recipe and shortcut option."""
        self.validate(config)
        return {n: variants.cifar_net_config(config, n) for n in net_names(config.depths)}

    def row(self, variant: template.Trained) -> dict[str, Any]:
        return {
            "depth": variants.cifar_depth(variant.name),
            "residual": variant.name.startswith("resnet"),
            **results_lib.base_row(variant.runs),
        }

    def title_extra(self, config: ml_collections.ConfigDict) -> str:
        return f", width {config.width}"

    def figure(self, figure: template.Figure) -> None:
        figures.resnet_depth(figure.results, figure.curves, figure.path, title=figure.title)

    def summary(self, results: Results, workdir: str) -> str:
        """The final table and the verdict."""
        del workdir  # every number is in `results`
        columns = (*self.columns, *results_lib.RUN_COLUMNS)
        if any("train_errors" in r for r in results.values()):
            columns = (*columns, ("train_errors", "train err per seed"))
        return f"{results_lib.table(results, columns)}\n{verdict(results)[1]}"


STUDY = ResnetDepth()
