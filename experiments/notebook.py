"""A study in a notebook: its config built exactly as its launcher builds it, and its progress
shown in the cell.

PRESET: "cpu", "smoke", "colab" (one Colab session on its T4, by an estimate) or "full" (the
paper's whole recipe); by default it follows the runtime: cpu on a CPU, colab on a GPU or TPU.
FLAGS are the launcher's overrides, e.g. "--config.seeds=3" (mean ± std) or
"--config.data_dir=DIR" (a prepared TFDS copy). The environment variables CNN_CASES_PRESET,
CNN_CASES_FLAGS and CNN_CASES_WORKDIR set them too (the tests run every notebook so, offline).
"""

from __future__ import annotations

import importlib
import os
import shlex

import jax
import ml_collections

from cnn_cases.engine import launch, periodic
from cnn_cases.studies import template


def prepare(
    name: str, preset: str = "", flags: str = ""
) -> tuple[template.Study, ml_collections.ConfigDict, str]:
    """(study, config, workdir) of study `name` (its config file `experiments/<name>.py`)."""
    configs = importlib.import_module(f"experiments.{name}")
    study = getattr(configs, name).STUDY
    preset = os.environ.get("CNN_CASES_PRESET") or preset or launch.notebook_preset()
    flags = os.environ.get("CNN_CASES_FLAGS") or flags
    config = launch.parse_config(configs, preset, shlex.split(flags))
    workdir = os.path.join(os.environ.get("CNN_CASES_WORKDIR", "runs"), study.name)
    periodic.log_progress()
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s): preset "
        f"{config.preset}, dataset {config.dataset}, about {study.expected_minutes(config):g} "
        f"minutes; workdir {workdir}"
    )
    return study, config, workdir
