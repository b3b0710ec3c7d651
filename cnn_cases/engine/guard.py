"""What keeps a run's work safe: one writer per workdir, and a clean stop on SIGTERM or SIGINT.

`workdir_lock(workdir)` holds an exclusive `flock` on `workdir/.lock` while a run writes there;
a second process stops at once with one line naming the holder (host and pid). The kernel
drops the lock with its process, so a dead run's lock never blocks. Only process 0 of a
multi-host job takes it: the job's other processes share the workdir through the coordinator.

`stop_signals()` turns SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) into a request
that the training loop honours at the next step boundary: it saves a checkpoint and raises
`Interrupted`; launchers exit with `EXIT_PREEMPTED` (75) or 130, and rerunning the same
command resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator

import jax

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; requeue to resume
EXIT_INTERRUPTED = 130  # 128 + SIGINT

_requested: list[int] = []  # signals received during `stop_signals`


class WorkdirBusyError(ValueError):
    """Another process is writing to the workdir."""


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped training after a checkpoint at `step`."""

    def __init__(self, signum: int, step: int, workdir: str) -> None:
        self.signum, self.step, self.workdir = signum, step, workdir
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}; its checkpoint is in {workdir!r}: rerun the "
            "same command to resume"
        )

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_PREEMPTED


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Exclusive use of `workdir` (created if missing) by this process while the body runs."""
    if jax.process_index() != 0:
        yield
        return
    import fcntl  # POSIX: Linux and macOS

    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkdirBusyError(
            f"workdir {workdir!r} is in use by {holder}; wait for that run to end or pass "
            "another --workdir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode())
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGINT become `stop_requested()` while the body runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    handler = lambda signum, frame: _requested.append(signum)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _requested.clear()


def stop_requested() -> int | None:
    """The first stop signal received inside `stop_signals`, or None."""
    return _requested[0] if _requested else None
