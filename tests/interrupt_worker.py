"""`python -m experiments.train ARGS` held at step PAUSE, after its log line, until a stop
signal arrives: a step boundary that a test waits for before it signals.

    python tests/interrupt_worker.py PAUSE MARKER_FILE [launcher flags...]
"""

import runpy
import sys
import time

from cnn_cases.engine import guard, train

pause, marker = int(sys.argv[1]), sys.argv[2]
_log_train = train._log_train


def _held(run, clock, step, state, means):
    _log_train(run, clock, step, state, means)
    if step == pause:
        open(marker, "w").close()
        deadline = time.time() + 120
        while guard.stop_requested() is None and time.time() < deadline:
            time.sleep(0.01)


train._log_train = _held
sys.argv = ["experiments.train", *sys.argv[3:]]
runpy.run_module("experiments.train", run_name="__main__")
