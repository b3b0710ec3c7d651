"""Keeps freed host memory mapped between train steps (glibc only).

XLA:CPU allocates each step's temporaries, hundreds of MB for a CIFAR ResNet at batch 128,
with `posix_memalign` from its worker threads and frees them when the step ends. glibc
serves a block that large from a fresh `mmap`, so every step page-faults and zeroes all of
it again and `munmap`s it at the end; on a 2-core CPU that was a fifth of a resnet20 step.
With one malloc arena, no mmap for large blocks and no trimming, the block stays in the
heap and the next step reuses it. The process keeps its peak host memory instead of
returning it to the system.

It must run before XLA's threads first allocate, so `cnn_cases` applies it on import; a
process that set any `MALLOC_*` variable of its own is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Applies the glibc settings once; returns whether they are in force."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = all(
        mallopt(param, value)
        for param, value in (
            (_M_ARENA_MAX, 1),
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, 2**31 - 1),
        )
    )
    return _applied
