"""What every launcher does: pick a preset, apply overrides, say what will run."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections


def backend() -> str:
    """'cpu', 'gpu' or 'tpu'."""
    return jax.default_backend()


def choose_preset(preset: str | None, *, accelerator: str, cpu: str) -> str:
    """`preset` if given; otherwise `cpu` on a CPU backend and `accelerator` on GPU/TPU."""
    if preset:
        return preset
    return cpu if backend() == "cpu" else accelerator


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as train[:45000]


def apply_overrides(
    config: ml_collections.ConfigDict, *, sets: Sequence[str] = (), **values: Any
) -> ml_collections.ConfigDict:
    """Sets `values` that are not None, then each KEY=VALUE of `sets` (dotted keys allowed)."""
    for key, value in values.items():
        if value is not None:
            config[key] = value
    for item in sets:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, text = item.split("=", 1)
        node = config
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(node))}")
        value = _parse_value(text)
        if isinstance(node[leaf], tuple) and isinstance(value, int | float):
            value = (value,)
        node[leaf] = tuple(value) if isinstance(value, list) else value
    return config


def announce(preset: str, automatic: bool, expected_minutes: float, workdir: str) -> None:
    """One line before a run: which preset (and why), its expected time, where output goes."""
    if jax.process_index() != 0:
        return
    why = f" (chosen for the {backend()} backend; --preset to change)" if automatic else ""
    print(
        f"preset {preset}{why}; expected time about {expected_minutes:g} minutes on "
        f"{'a 2-core CPU' if backend() == 'cpu' else 'one ' + backend().upper()}; "
        f"workdir {workdir}",
        flush=True,
    )
