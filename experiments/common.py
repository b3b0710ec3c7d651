"""Flags shared by the launchers: multi-host set-up."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from cnn_cases import parallel, train

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
