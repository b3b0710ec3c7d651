"""A run directory: every file one training run keeps, and the only code that reads or writes them.

    workdir/
      config.json       the run's config; a resumed run must match it (`check_config`)
      metrics.jsonl     one JSON object per log line: {"step", "kind": "train"|"eval", ...}
      tensorboard/      the same scalars as TensorBoard event files
      mean.npy          the per-pixel training mean the run normalises with
      checkpoints/      Orbax checkpoints by step: the train state, the run's history and,
                        streamed, each process's input pipeline position (grain's state)
      result.json       written once, when the run has finished (`RunResult`; a list of them,
                        one per seed, for a run of several seeds)
      .lock             held by the process writing here (`guard.workdir_lock`)
      checkpoints_damaged/  checkpoints that could not be read, moved aside on resume

Only process 0 writes files; every process reads them. Files are rewritten whole
(`write_atomic`: a temporary file, fsynced, renamed), so a failure part-way leaves the old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


@dataclasses.dataclass
class RunResult:
    """What a finished run reports; stored as `result.json`."""

    train_error: float
    test_error: float
    train_loss: float
    test_loss: float
    steps: int
    seconds: float
    params: int
    curves: list[dict[str, float]]
    aux_test_errors: list[float] = dataclasses.field(default_factory=list)
    step_seconds: float | None = None  # median over the logged intervals (input included)
    train_top5_error: float | None = None  # with more than 10 classes
    test_top5_error: float | None = None


def check_workdir(workdir: str) -> None:
    """Creates `workdir` or raises a one-line ValueError if it cannot be written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is a file, not a directory; pass another --workdir")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"workdir {workdir!r} is not writable ({e.strerror or e}); "
            "pass a --workdir you can write to"
        ) from None


def write_atomic(path: str, text: str) -> None:
    """`text` into `path` whole or not at all: a temporary file of this process, fsynced,
    then renamed over `path` (a failure part-way leaves the old file as it was)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON write (a reader never sees half a file); process 0 only."""
    if jax.process_index() == 0:
        write_atomic(path, json.dumps(obj, indent=2, sort_keys=False))


def read_json(path: str) -> Any:
    """A JSON file of the run directory; a one-line ValueError naming it if it is damaged."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path!r} is damaged ({e}); restore it or remove it to start that run again"
        ) from None


def check_config(
    workdir: str,
    config: ml_collections.ConfigDict,
    resumable: Collection[str] = (),
    added: Mapping[str, Any] | None = None,
) -> None:
    """A workdir belongs to one config: resuming with another would mix two runs.

    Writes `config.json` on first use; later raises a one-line ValueError naming every key
    that differs, except the `resumable` keys (logging, paths: they may change on resume).
    `added` holds keys newer than some stored configs, with the value an older config means.
    """
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json())
    if os.path.exists(path):
        old = {**(added or {}), **read_json(path)}
        diff = sorted(
            k for k in set(old) | set(new) if k not in resumable and old.get(k) != new.get(k)
        )
        if diff:
            raise ValueError(
                f"workdir {workdir!r} holds a run with a different config "
                f"({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)}); "
                "use a new --workdir or restore the old settings"
            )
    write_json(path, dict(sorted(new.items())))


def read_results(workdir: str) -> list[RunResult] | None:
    """The stored results of a finished run, one per seed; None while it has not finished."""
    path = os.path.join(workdir, "result.json")
    if not os.path.exists(path):
        return None
    stored = read_json(path)
    return [RunResult(**r) for r in (stored if isinstance(stored, list) else [stored])]


def read_result(workdir: str) -> RunResult | None:
    """The stored result of a finished one-seed run; None while it has not finished."""
    results = read_results(workdir)
    if results is not None and len(results) != 1:
        raise ValueError(f"{workdir!r} holds {len(results)} seeds; read them with read_results")
    return None if results is None else results[0]


def write_results(workdir: str, results: list[RunResult]) -> None:
    """`result.json`: the result (one seed) or the list of results (several seeds)."""
    stored = [dataclasses.asdict(r) for r in results]
    write_json(os.path.join(workdir, "result.json"), stored[0] if len(stored) == 1 else stored)


def read_metrics(workdir: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of `metrics.jsonl` (of one `kind`, "train" or "eval", if given). A torn last line
    (a crash or a full disk mid-append) is dropped with one warning."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path!r} is damaged at line {i + 1}") from None
            logging.warning("%s: dropped its torn last line %d", path, i + 1)
    return [r for r in rows if kind is None or r["kind"] == kind]


class EventWriter:
    """TensorBoard event files of scalars, written without TensorFlow.

    The records are framed by TensorBoard's own `RecordWriter`; the file is opened here, not
    through `tensorboard.compat`'s gfile, which imports TensorFlow wherever it is installed.
    Every file starts with a `SessionLog.START` at the run's first step, so that TensorBoard
    hides what an interrupted run had logged past the checkpoint its resumption starts from.
    """

    _files = itertools.count()  # a process may open several in one second (tests do)

    def __init__(self, logdir: str, first_step: int):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2 = event_pb2
        os.makedirs(logdir, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(self._files):04d}"
        )
        self.path = os.path.join(logdir, name)
        self._records = RecordWriter(open(self.path, "wb"))
        self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        log = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._add(event_pb2.Event(wall_time=time.time(), step=first_step, session_log=log))
        self.flush()

    def _add(self, event: Any) -> None:
        self._records.write(event.SerializeToString())

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        self._add(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        if not self._records.closed:
            self._records.close()


@dataclasses.dataclass
class History:
    """Every logged row of a run, in memory: {"step", "kind": "train"|"eval", ...values}.

    Saved inside each checkpoint, so a resumed run continues the rows of the step it resumes
    from (what an interrupted run logged after that step is dropped with it).
    """

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, step: int, kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
        row = {"step": step, "kind": kind, **values}
        self.rows.append(row)
        return row

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The rows of one kind, without their `kind`."""
        return [{k: v for k, v in r.items() if k != "kind"} for r in self.rows if r["kind"] == kind]

    def seconds(self) -> float:
        """The run's seconds at its latest train row (0 before one)."""
        return max([r["seconds"] for r in self.rows if r["kind"] == "train"] or [0.0])


class MetricsWriter:
    """Writes a run's `History` to `metrics.jsonl` and TensorBoard event files; process 0 only.

    Opening rewrites `metrics.jsonl` (atomically) with the rows the history already holds;
    `write` then appends each new row to both.
    """

    def __init__(self, workdir: str, history: History, first_step: int):
        self.workdir = workdir
        self.enabled = jax.process_index() == 0
        self._path = os.path.join(workdir, "metrics.jsonl")
        self._tb: EventWriter | None = None
        if not self.enabled:
            return
        write_atomic(self._path, "".join(json.dumps(r) + "\n" for r in history.rows))
        self._tb = EventWriter(os.path.join(workdir, "tensorboard"), first_step)

    def write(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self._path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            kind = row["kind"]
            scalars = {}
            for k, v in row.items():
                if k in ("step", "kind"):
                    continue
                if isinstance(v, list):  # one value per seed
                    scalars.update({f"{kind}/{k}/seed_{i}": x for i, x in enumerate(v)})
                else:
                    scalars[f"{kind}/{k}"] = v
            self._tb.scalars(row["step"], scalars)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def dataset_mean(workdir: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The run's per-pixel mean: `mean.npy` if stored, else `compute()`, stored for resumption."""
    path = os.path.join(workdir, "mean.npy")
    if os.path.exists(path):
        return np.load(path)
    mean = compute()
    if jax.process_index() == 0:
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, mean)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return mean


def checkpoint_manager(workdir: str, *, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    """Orbax manager of `workdir/checkpoints` (created if missing)."""
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        ),
    )


class _DataState:
    """An input pipeline's position as grain's checkpoint handler saves it: one JSON file
    per process (`process_I-of-N.json`), since each process reads its own rows."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def get_state(self) -> bytes:
        return json.dumps(self.value).encode()

    def set_state(self, state: bytes) -> None:
        self.value = json.loads(state)

    def start_prefetch(self) -> None:  # grain's handler starts an iterator it restored
        pass


class Restored(NamedTuple):
    """What `restore_latest` gives: the state, history and step of the newest readable
    checkpoint, and the input pipeline's position saved with it (None if none was)."""

    state: Any
    history: History
    step: int
    data: Any = None


def save_checkpoint(
    mngr: ocp.CheckpointManager,
    step: int,
    state: Any,
    history: History,
    *,
    data: Any = None,
    force: bool = False,
) -> None:
    """Saves the train state, the history and (if given) this process's input pipeline
    position `data` (JSON-able) at `step`, asynchronously."""
    import grain

    items = {
        "state": ocp.args.StandardSave(state),
        "history": ocp.args.JsonSave({"rows": history.rows}),
    }
    if data is not None:
        items["data"] = grain.checkpoint.CheckpointSave(_DataState(data))
    mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore_latest(mngr: ocp.CheckpointManager, state: Any) -> Restored:
    """The newest readable checkpoint's state (in `state`'s structure and shardings), history,
    step and pipeline position; `state`, an empty history and 0 when there is none.

    A checkpoint that cannot be read is moved aside to `checkpoints_damaged/` (with one
    warning saying which step and why) and the next older one is tried.
    """
    import grain

    skipped = False
    while (step := mngr.latest_step()) is not None:
        items = {"state": ocp.args.StandardRestore(state), "history": ocp.args.JsonRestore()}
        data = None
        # This process's position, if it was saved by as many processes as run now; without
        # it the pipeline seeks by step (a position is never a reason to drop a checkpoint).
        mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if os.path.exists(os.path.join(str(mngr.directory), str(step), "data", mine)):
            data = _DataState()
            items["data"] = grain.checkpoint.CheckpointRestore(data)
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(**items))
            history = History(restored.history["rows"])
            return Restored(restored.state, history, step, None if data is None else data.value)
        except Exception as e:  # any unreadable file: keep it aside, say why, go back one
            _move_aside(mngr, step, e)
            skipped = True
    if skipped:
        logging.warning("%s: no readable checkpoint; the run starts at step 0", mngr.directory)
    return Restored(state, History(), 0)


def _move_aside(mngr: ocp.CheckpointManager, step: int, error: Exception) -> None:
    """Moves checkpoint `step` out of the manager's directory, keeping it, and says why."""
    src = os.path.join(str(mngr.directory), str(step))
    aside = os.path.join(os.path.dirname(str(mngr.directory)), "checkpoints_damaged")
    dst = os.path.join(aside, f"{step}.{int(time.time())}")
    lines = str(error).strip().splitlines()
    reason = lines[0][:200] if lines else type(error).__name__
    if jax.process_index() == 0:
        os.makedirs(aside, exist_ok=True)
        os.replace(src, dst)
    logging.warning("checkpoint at step %d is unreadable (%s); moved to %s", step, reason, dst)
    mngr.reload()


def restore_checkpoint(workdir: str, step: int | None = None) -> dict[str, Any]:
    """The saved train state of `workdir` (latest step by default) as nested dicts of arrays."""
    path = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(path):
        raise ValueError(f"no checkpoint in {workdir!r}")
    with ocp.CheckpointManager(os.path.abspath(path)) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {workdir!r}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        return mngr.restore(step, args=args).state
