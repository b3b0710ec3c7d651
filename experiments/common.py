"""What every launcher does: flags, multi-host set-up, one-line errors, and a study's run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import jax
import ml_collections
from absl import app, flags

from cnn_cases.engine import guard, launch, parallel, periodic, steps, train
from cnn_cases.studies import template

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where experiments/ is

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


def show_progress() -> None:
    """The runs' progress at INFO, without Orbax's and TFDS's INFO lines (`--verbosity` given:
    absl's own levels, for every library)."""
    if not flags.FLAGS["verbosity"].present:
        periodic.log_progress()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _one_line(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:  # a full disk, a file that cannot be read
        return f"{e.strerror}: {e.filename!r}" if e.filename else e.strerror
    return str(e)


def run(
    main: Callable[[Sequence[str]], None],
    flags_parser: Callable[[Sequence[str]], Sequence[str]] | None = None,
) -> None:
    """`app.run(main)`, with bad input reported as one line (set CNN_CASES_TRACEBACK=1 for more)."""

    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except guard.Interrupted as e:
            print(str(e), file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            print("interrupted; rerun the same command to resume", file=sys.stderr)
            sys.exit(guard.EXIT_INTERRUPTED)
        except (ValueError, train.NonFiniteLossError, OSError) as e:
            if os.environ.get("CNN_CASES_TRACEBACK"):
                raise
            _fail(_one_line(e))

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
    try:  # presets and keys first; the default is parsed (with the overrides) right here
        sys.argv[1:] = launch.resolve_config_path(sys.argv[1:], _ROOT)
        launch.check_config_args(sys.argv[1:], get_config)
        launch.define_config_flag(launcher_file, flags.FLAGS)
    except ValueError as e:
        _fail(str(e))
    except (flags.Error, AttributeError, KeyError) as e:
        _fail(launch.first_line(e))
    workdir_flag = flags.DEFINE_string("workdir", workdir, "Results and checkpoints.")

    def parse(argv: Sequence[str]) -> Sequence[str]:
        try:
            return flags.FLAGS(argv)
        except (flags.Error, AttributeError, KeyError) as e:
            _fail(launch.first_line(e))
            raise  # unreachable: _fail exits

    return workdir_flag, parse


def main(
    study: template.Study,
    get_config: Callable[..., ml_collections.ConfigDict],
    launcher_file: str,
) -> None:
    """The whole program of a study's launcher.

    Flags: `--config=LAUNCHER[:PRESET]` (default: this launcher, preset chosen by the backend)
    with `--config.KEY=VALUE` overrides, `--workdir`, and the multi-host flags above.
    """
    workdir, parse = define_flags(launcher_file, get_config, f"runs/{study.name}")

    def study_main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        show_progress()
        initialize_distributed()
        config, automatic = launch.resolve_preset(flags.FLAGS["config"], get_config)
        study.validate(config)  # fail before any training
        minutes = study.expected_minutes(config)
        minutes *= len(steps.seed_list(config))  # vmapped seeds take about as long as in turn
        launcher = os.path.relpath(launcher_file)
        launch.announce(config.preset, automatic, minutes, workdir.value, launcher)
        results = study.run(config, workdir.value)
        if results is not None and jax.process_index() == 0:
            print()
            print(study.summary(results, workdir.value))
            print(f"wrote results.json, curves.csv, {study.name}.png to {workdir.value}")

    run(study_main, flags_parser=parse)
