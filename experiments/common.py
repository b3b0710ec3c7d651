"""What every launcher does: flags, multi-host set-up, one-line errors, and a study's run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import jax
import ml_collections
from absl import app, flags, logging

from cnn_cases.engine import launch, parallel, train

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


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run(
    main: Callable[[Sequence[str]], None],
    flags_parser: Callable[[Sequence[str]], Sequence[str]] | None = None,
) -> None:
    """`app.run(main)`, with bad input reported as one line (set CNN_CASES_TRACEBACK=1 for more)."""

    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except (ValueError, train.NonFiniteLossError) as e:
            if os.environ.get("CNN_CASES_TRACEBACK"):
                raise
            _fail(str(e))

    if flags_parser is None:
        app.run(wrapped)
    else:
        app.run(wrapped, flags_parser=flags_parser)


def define_flags(
    launcher_file: str,
    get_config: Callable[..., ml_collections.ConfigDict],
    workdir: str,
) -> tuple[flags.FlagHolder, Callable[[Sequence[str]], Sequence[str]]]:
    """`--config=LAUNCHER[:PRESET]` with `--config.KEY=VALUE` overrides, and `--workdir`.

    Returns the workdir flag and the flags parser for `run`: a bad --config flag is one line.
    """
    try:  # the default is parsed (with the command line's overrides) right here
        launch.define_config_flag(launcher_file, flags.FLAGS)
    except (flags.Error, AttributeError, KeyError) as e:
        _fail(launch.config_error(e, get_config, sys.argv))
    workdir_flag = flags.DEFINE_string("workdir", workdir, "Results and checkpoints.")

    def parse(argv: Sequence[str]) -> Sequence[str]:
        try:
            return flags.FLAGS(argv)
        except (flags.Error, AttributeError, KeyError) as e:
            _fail(launch.config_error(e, get_config, sys.argv))
            raise  # unreachable: _fail exits

    return workdir_flag, parse


def main(study: ModuleType, launcher_file: str) -> None:
    """The whole program of a study's launcher.

    Flags: `--config=LAUNCHER[:PRESET]` (default: this launcher, preset chosen by the backend)
    with `--config.KEY=VALUE` overrides, `--workdir`, and the multi-host flags above.
    """
    workdir, parse = define_flags(launcher_file, study.get_config, f"runs/{study.NAME}")

    def study_main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs()
        initialize_distributed()
        config, automatic = launch.resolve_preset(flags.FLAGS["config"], study.get_config)
        study.validate(config)  # fail before any training
        minutes = getattr(study, "expected_minutes", lambda c: c.expected_minutes)(config)
        minutes *= len(train.seed_list(config))  # vmapped seeds take about as long as in turn
        launcher = os.path.relpath(launcher_file)
        launch.announce(config.preset, automatic, minutes, workdir.value, launcher)
        results = study.run(config, workdir.value)
        if results is not None and jax.process_index() == 0:
            print()
            print(study.summary(results, workdir.value))
            print(f"wrote results.json, curves.csv, {study.NAME}.png to {workdir.value}")

    run(study_main, flags_parser=parse)
