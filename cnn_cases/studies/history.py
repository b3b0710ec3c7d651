"""The lecture's history in one figure: every case study trained on the same data and budget.

`STUDY.run(config, workdir)` trains LeNet-5, AlexNet, VGG-16 with and without BatchNorm,
Network in Network, GoogLeNet with and without its auxiliary heads, and ResNet-20/56 with their
plain twins, all on the study's dataset with one recipe (steps, batch, schedule, augmentation,
data order), each at its own width (`config.widths`, a multiplier of the paper's widths).
Writes results.json (per net: its label and year, width, parameters and multiply-adds at
inference, measured seconds per step, errors), curves.csv and history.png (test error
against multiply-adds and against parameters, seconds per step). The summary names the nets
on the error-cost frontier and says, for each of the lecture's orderings (`ORDERINGS`),
whether the run reproduced it, and when not whether the seeds' spread or the budget explains
it. Configs: `experiments/history.py`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import ml_collections

from cnn_cases.analysis import costs
from cnn_cases.models import layers
from cnn_cases.report import figures
from cnn_cases.studies import results as results_lib
from cnn_cases.studies import template, variants
from cnn_cases.studies.results import Results


@dataclasses.dataclass(frozen=True)
class Net:
    """A network of the history: its registry model, label, year and how it takes a width.

    `base_width` set: the model takes `width` channels (CIFAR ResNets: 16 at multiplier 1);
    else it takes `width_multiplier`.
    """

    model: str
    label: str
    year: int
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    base_width: int | None = None

    def model_kwargs(self, multiplier: float) -> dict[str, Any]:
        """The registry arguments of this net at width `multiplier`."""
        if self.base_width is None:
            return {**self.kwargs, "width_multiplier": multiplier}
        return {**self.kwargs, "width": layers.scaled(self.base_width, multiplier)}


NETS: dict[str, Net] = {
    "lenet5": Net("lenet5", "LeNet-5", 1998),
    "alexnet": Net("alexnet_cifar", "AlexNet", 2012),
    "vgg16": Net("vgg16_cifar", "VGG-16", 2015),
    "vgg16_bn": Net("vgg16_cifar_bn", "VGG-16 + BN", 2015),
    "nin": Net("nin", "NiN", 2014),
    "googlenet": Net("googlenet_cifar", "GoogLeNet + aux", 2015),
    "googlenet_noaux": Net("googlenet_cifar", "GoogLeNet", 2015, {"aux_logits": False}),
    "plain20": Net("plain20", "plain-20", 2016, base_width=16),
    "resnet20": Net("resnet20", "ResNet-20", 2016, base_width=16),
    "plain56": Net("plain56", "plain-56", 2016, base_width=16),
    "resnet56": Net("resnet56", "ResNet-56", 2016, base_width=16),
}


def net_names(config: ml_collections.ConfigDict) -> list[str]:
    """`config.nets` as names; `--config.nets=lenet5,alexnet` arrives as one string."""
    return [n.strip() for item in config.nets for n in item.split(",") if n.strip()]


def frontier(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The names of the (cost, error) points that no other point dominates (at most its cost
    and its error, and less of one), by increasing cost."""
    on = [
        n
        for n, (c, e) in points.items()
        if not any(
            c2 <= c and e2 <= e and (c2 < c or e2 < e) for m, (c2, e2) in points.items() if m != n
        )
    ]
    return sorted(on, key=lambda n: points[n])


def frontier_text(results: Results, key: str = "test_error", seed: int | None = None) -> str:
    """The MACs frontier as "label (year)" names, by the seeds' mean or one seed's errors."""
    points = {
        n: (r["macs"], r[key] if seed is None else r[f"{key}s"][seed]) for n, r in results.items()
    }
    return ", ".join(results[n]["net"] for n in frontier(points))


@dataclasses.dataclass(frozen=True)
class Ordering:
    """A claim of the lecture: net `lower` ends below net `higher` in test error."""

    lower: str
    higher: str
    claim: str


# The lecture's orderings that one history run can test, in its order.
ORDERINGS = (
    Ordering("alexnet", "lenet5", "AlexNet below LeNet-5"),
    Ordering("vgg16_bn", "vgg16", "VGG-16 + BN below VGG-16"),
    Ordering("nin", "alexnet", "NiN below AlexNet, at a fraction of its parameters"),
    Ordering("googlenet", "googlenet_noaux", "GoogLeNet + aux below GoogLeNet"),
    Ordering("resnet20", "plain20", "ResNet-20 below plain-20"),
    Ordering("resnet56", "plain56", "ResNet-56 below plain-56"),
    Ordering("resnet56", "resnet20", "ResNet-56 below ResNet-20"),
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def ordering_line(o: Ordering, results: Results) -> str:
    """Whether `results` reproduce `o`, with the errors, and when not, whether the seeds'
    spread or the budget explains it."""
    low, high = results[o.lower], results[o.higher]
    gap = high["test_error"] - low["test_error"]  # > 0: reproduced
    text = f"{o.claim}: {_pct(low['test_error'])} vs {_pct(high['test_error'])}"
    if o.lower == "nin":
        text += f" with {low['params'] / high['params']:.2f}x its parameters"
    lows, highs = low.get("test_errors"), high.get("test_errors")
    if gap > 0:
        every = lows is None or all(a < b for a, b in zip(lows, highs, strict=True))
        return f"{text}: reproduced" + ("" if every else " by the mean, not by every seed")
    if lows is None:
        return (
            f"{text}: not reproduced (one seed: more seeds would tell the spread from the budget)"
        )
    spread = math.hypot(low.get("test_error_std", 0.0), high.get("test_error_std", 0.0))
    if any(a < b for a, b in zip(lows, highs, strict=True)) or -gap <= spread:
        return (
            f"{text}: not reproduced, within the seeds' spread (gap {100 * -gap:.1f} points, "
            f"spread {100 * spread:.1f}; some seeds order it either way)"
        )
    return (
        f"{text}: not reproduced: the budget; every seed reverses it by more than the seeds' "
        f"spread ({100 * -gap:.1f} points against {100 * spread:.1f}) after {low['steps']:,} "
        "steps, too few for what the papers' longer training shows"
    )


def orderings_text(results: Results) -> str:
    """One line per ordering of `ORDERINGS` whose nets `results` hold."""
    lines = [
        f"  {ordering_line(o, results)}"
        for o in ORDERINGS
        if o.lower in results and o.higher in results
    ]
    return "\n".join(["the lecture's orderings at this budget:", *lines]) if lines else ""


def machine() -> str:
    """What runs this process: the CPU's model name and core count, or the accelerators."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{jax.device_count()} x {device.device_kind}"
    name = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        name = names[0] if names else name
    return f"{name}, {os.cpu_count()} cores"


class History(template.Study):
    name = "history"
    columns = (
        ("net", "net"),
        ("width_multiplier", "width"),
        ("params", "params"),
        ("macs", "mult-adds"),
        ("step_seconds", "s/step"),
    )

    def validate(self, config: ml_collections.ConfigDict) -> None:
        names = net_names(config)
        if not names or any(n not in NETS for n in names):
            raise ValueError(f"nets={names} (valid: {', '.join(NETS)})")
        for n in names:
            width = config.widths.get(n)
            if width is None or not width > 0:
                raise ValueError(f"widths.{n}={width!r} must be > 0")

    def variants(self, config: ml_collections.ConfigDict) -> template.Configs:
        """Every net of `config.nets` at its width, all with the study's one recipe."""
        self.validate(config)
        return {
            n: variants.variant_config(
                config, NETS[n].model, **NETS[n].model_kwargs(config.widths[n])
            )
            for n in net_names(config)
        }

    def introduce(self, job: template.Job) -> Iterable[str]:
        shape = template.image_shape(job.config)
        for n, c in job.configs.items():
            cost = costs.model_cost(template.create_model(job.config, c), shape)
            yield (
                f"{n} (width x{job.config.widths[n]:g}): {cost.params:,} parameters, "
                f"{cost.macs:,} multiply-adds per image"
            )

    def row(self, variant: template.Trained) -> dict[str, Any]:
        """Errors of the run; parameters and multiply-adds at inference (no aux heads)."""
        net = NETS[variant.name]
        model = template.create_model(variant.study, variant.config)
        cost = costs.model_cost(model, template.image_shape(variant.study))
        return {
            **results_lib.base_row(variant.runs),
            "net": f"{net.label} ({net.year})",
            "year": net.year,
            "seed": variant.config.seed,
            "width_multiplier": variant.study.widths[variant.name],
            "params": cost.params,
            "macs": cost.macs,
            "step_seconds": variant.runs[0].step_seconds,
        }

    def title_extra(self, config: ml_collections.ConfigDict) -> str:
        return ", each net at its own width"

    def extra_files(self, config: ml_collections.ConfigDict) -> Mapping[str, Any]:
        return {"machine.json": {"machine": machine(), "backend": jax.default_backend()}}

    def figure(self, figure: template.Figure) -> None:
        frontier_names = frontier(
            {n: (r["macs"], r["test_error"]) for n, r in figure.results.items()}
        )
        figures.history(
            figure.results,
            figure.path,
            frontier=frontier_names,
            machine=machine(),
            title=figure.title,
        )

    def summary(self, results: Results, workdir: str) -> str:
        """The table, the nets on the error-MACs frontier (per seed too) and the lowest error."""
        del workdir  # every number is in `results`
        text = super().summary(results, "")
        best = min(results, key=lambda n: results[n]["test_error"])
        seeds = next(iter(results.values())).get("seeds", 1)
        what = f"the mean of {seeds} seeds' test errors" if seeds > 1 else "test error"
        text += (
            f"\non the error-cost frontier (by {what}; no other net has at most its "
            f"multiply-adds and its error, and less of one): {frontier_text(results)}"
        )
        first = next(iter(results.values()))["seed"]
        for s in range(seeds if seeds > 1 else 0):
            text += f"\n  by seed {first + s}'s test errors: {frontier_text(results, seed=s)}"
        r = results[best]
        text += f"\nlowest test error: {r['net']}, {100 * r['test_error']:.2f} %"
        orderings = orderings_text(results)
        if orderings:
            text += f"\n{orderings}"
        if seeds > 1:
            text += f"\n(s/step: one step of all {seeds} seeds, trained as one program)"
        return text


STUDY = History()
