"""What a training loop does every so many steps, in the shape of `clu.periodic_actions`.

`Every(n, action)` runs `action(step, state, metrics)` when `step` is a multiple of `n` (never
when n is 0), and at the steps of `also`, but not at those of `skip`. `Progress` keeps the
clock of a run: its elapsed seconds across resumptions, and images/s and ETA over the steps
since the last mark (compilation and evaluations are marked off, not counted). Progress is
logged with `absl.logging`; `log_progress()` shows it.
(clu's own module imports TensorFlow through its metric writers, hence these few lines.)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Collection
from typing import Any

from absl import logging as absl_logging

Action = Callable[[int, Any, dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Every:
    """`action` at every `every_steps`-th step, plus `also`, minus `skip`."""

    every_steps: int
    action: Action
    also: Collection[int] = ()
    skip: Collection[int] = ()

    def due(self, step: int) -> bool:
        if step in self.skip:
            return False
        return step in self.also or bool(self.every_steps and step % self.every_steps == 0)

    def __call__(self, step: int, state: Any, metrics: dict[str, Any]) -> None:
        self.action(step, state, metrics)


def format_seconds(seconds: float) -> str:
    """1m05s, 2h03m09s."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """The clock of a run of `num_steps` steps of `batch_size` images, resumed at
    `seconds_before` (what earlier sessions of the run took)."""

    def __init__(self, num_steps: int, batch_size: int, seconds_before: float = 0.0) -> None:
        self.num_steps, self.batch_size = num_steps, batch_size
        self.seconds_before = seconds_before
        self._start = self._mark_time = time.perf_counter()
        self._mark_step: int | None = None

    def seconds(self) -> float:
        """Seconds of the whole run so far, earlier sessions included."""
        return self.seconds_before + time.perf_counter() - self._start

    def since_start(self) -> float:
        return time.perf_counter() - self._start

    def mark(self, step: int) -> None:
        """Rates count from here (after compilation, an evaluation, a log line)."""
        self._mark_time, self._mark_step = time.perf_counter(), step

    def rate(self, step: int) -> tuple[float, float] | None:
        """(images/s, ETA seconds) over the steps since the last mark; None right after it."""
        if self._mark_step is None or step <= self._mark_step:
            return None
        elapsed = max(time.perf_counter() - self._mark_time, 1e-9)
        images_per_s = (step - self._mark_step) * self.batch_size / elapsed
        return images_per_s, (self.num_steps - step) * self.batch_size / images_per_s


_OWN_CODE = tuple(os.sep + d + os.sep for d in ("cnn_cases", "experiments"))


class _OwnInfo(logging.Filter):
    """INFO and below only from this project's code: Orbax, TFDS and JAX log every save, read
    and backend they try."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(d in record.pathname for d in _OWN_CODE)


def log_progress() -> None:
    """Shows the runs' progress lines (absl INFO from cnn_cases and experiments) on stderr,
    and the warnings of every library; the launchers call it unless --verbosity is given."""
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.use_absl_handler()
    handler = absl_logging.get_absl_handler()  # every logger's records reach it, JAX's too
    if not any(isinstance(f, _OwnInfo) for f in handler.filters):
        handler.addFilter(_OwnInfo())
