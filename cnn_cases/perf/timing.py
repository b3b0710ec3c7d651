"""One way to time code: warm-up calls, then timed repetitions, medians.

Several functions timed together alternate repetition by repetition, so that all of them see
the same machine load; only ratios measured side by side mean anything on a shared machine.
JAX dispatches asynchronously, so each timed repetition ends with `sync` on the last result
(`jax.block_until_ready` by default, which waits for JAX arrays and passes anything else).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of one function, one entry per timed repetition."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median seconds per call."""
        return statistics.median(self.seconds)

    def rates(self, work: float) -> list[float]:
        """`work` (images, FLOPs, ...) per second of each repetition."""
        return [work / s for s in self.seconds]


def time_calls(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    warmup: int = 0,
    number: int = 1,
    sync: Callable[[Any], Any] = jax.block_until_ready,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Times each of `fns`: `warmup` untimed calls, then `reps` timed repetitions.

    A repetition calls the function `number` times in a row, waits with `sync` on the last
    result and records the seconds per call. Warm-ups run function by function, then the
    repetitions alternate between the functions in the order given. Returns a `Timing` per name.
    """
    if reps < 1 or number < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1, number >= 1, warmup >= 0: {reps}, {number}, {warmup}")
    for fn in fns.values():
        if warmup:
            for _ in range(warmup):
                result = fn()
            sync(result)
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = clock()
            for _ in range(number):
                result = fn()
            sync(result)
            seconds[name].append((clock() - start) / number)
    return {name: Timing(tuple(s)) for name, s in seconds.items()}
