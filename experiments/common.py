"""Flags shared by the launchers: multi-host set-up."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging

from cnn_cases import launch, parallel, train

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 for a multi-host run (or set JAX_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")


def initialize_distributed() -> bool:
    """jax.distributed.initialize from the flags or the environment, if a run asks for it."""
    return parallel.initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
    )


def quiet_logs() -> None:
    """Orbax and TFDS log every save and read at INFO; keep the launcher's own lines readable."""
    if logging.get_verbosity() <= logging.INFO and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def setup() -> bool:
    """What every launcher does first: quiet logs, multi-host initialisation."""
    quiet_logs()
    return initialize_distributed()


def run(main: Callable[[Sequence[str]], None]) -> None:
    """`app.run(main)`, with bad input reported as one line (set CNN_CASES_TRACEBACK=1 for more)."""

    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except (ValueError, train.NonFiniteLossError) as e:
            if os.environ.get("CNN_CASES_TRACEBACK"):
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(wrapped)


def define_flags(presets: Sequence[str], workdir: str, dataset_help: str) -> None:
    """The flags every launcher has. Defined when the launcher runs as a program, so that
    launchers (and their `get_config`) can be imported side by side in one process."""
    flags.DEFINE_enum("preset", None, presets, "Default: cpu on a CPU backend, else the full run.")
    flags.DEFINE_string("workdir", workdir, "Where results and checkpoints go.")
    flags.DEFINE_string("dataset", None, dataset_help)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS_DATA_DIR).")
    flags.DEFINE_integer("seed", None, "Random seed (data order, init, augmentation).")
    flags.DEFINE_multi_string("set", [], "Config override KEY=VALUE, e.g. --set=num_steps=500.")


def prepare(
    argv: Sequence[str],
    get_config: Callable[[str], ml_collections.ConfigDict],
    *,
    accelerator: str,
    **overrides: Any,
) -> ml_collections.ConfigDict:
    """The start of every launcher's main: set-up, preset, config with the flags applied.

    `overrides` are launcher-specific flag values (None: not given).
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    setup()
    f = flags.FLAGS
    preset = launch.choose_preset(f.preset, accelerator=accelerator, cpu="cpu")
    config = get_config(preset)
    launch.apply_overrides(
        config, dataset=f.dataset, data_dir=f.data_dir, seed=f.seed, sets=f.set, **overrides
    )
    return config


def announce(config: ml_collections.ConfigDict) -> None:
    """Says which preset runs (and why), how long it should take and where output goes."""
    f = flags.FLAGS
    launch.announce(config.preset, f.preset is None, config.expected_minutes, f.workdir)
