"""Tables behind `python -m experiments.counts`."""

from __future__ import annotations

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.report import tables


def _fmt_diff(ours: int, published: int | None, rng: tuple[int, int] | None) -> str:
    if published is not None:
        return f"{ours - published:+,}"
    if rng is not None:
        return "in range" if rng[0] <= ours <= rng[1] else "OUT OF RANGE"
    return ""


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f}{unit}" if unit == "G" else f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def summary_table() -> str:
    """One row per registry model: input, parameters, multiply-adds, published figures."""
    header = ("model", "input", "params", "published", "diff", "mult-adds", "published", "diff %")
    rows = []
    for name, entry in models.MODELS.items():
        cost = costs.model_cost(models.get_model(name), entry.input_shape)
        if entry.published_params is not None:
            pub_p = f"{entry.published_params:,}"
        elif entry.params_range:
            pub_p = f"{entry.params_range[0] / 1e6:.1f}M-{entry.params_range[1] / 1e6:.1f}M"
        else:
            pub_p = ""
        pub_m = _si(entry.published_macs) if entry.published_macs else ""
        diff_m = (
            f"{100 * (cost.macs - entry.published_macs) / entry.published_macs:+.2f}"
            if entry.published_macs
            else ""
        )
        rows.append(
            (
                name,
                costs.format_shape(entry.input_shape),
                f"{cost.params:,}",
                pub_p,
                _fmt_diff(cost.params, entry.published_params, entry.params_range),
                _si(cost.macs),
                pub_m,
                diff_m,
            )
        )
    table = tables.format_table(header, rows, align="<<>>>>>>")
    note = (
        "params: entries of the `params` collection (BN scale/bias included, running\n"
        "statistics not). mult-adds: per image, convs and dense layers, padding included\n"
        "(torchvision's 'GFLOPS' count these); published figures have 3-4 significant digits.\n"
        "GoogLeNet: the paper gives ~6.8M parameters and ~1.5G mult-adds, rounded."
    )
    return f"{table}\n\n{note}"


def layer_table(name: str, *, train: bool = False, max_rows: int | None = None) -> str:
    """Per-layer table of registry model `name` at its default input."""
    cost = costs.model_cost(models.get_model(name), models.input_shape(name), train=train)
    return f"{name}\n{cost.table(max_rows=max_rows)}"
