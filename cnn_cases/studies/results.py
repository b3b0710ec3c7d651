"""A study's numbers: its rows (seeds' means and spreads), curves, tables and files."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from cnn_cases.engine.rundir import RunResult
from cnn_cases.report import tables

Results = dict[str, dict[str, Any]]
Curves = dict[str, list[dict[str, float]]]

# The columns of every study's table, after its own.
RUN_COLUMNS = (
    ("train_error", "train err"),
    ("test_error", "test err"),
    ("steps", "steps"),
    ("seconds", "seconds"),
)


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
