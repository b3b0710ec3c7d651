"""The training engine: `train(config, workdir)` trains `config.seeds` seeds of one config.

The steps (`cnn_cases.engine.steps`) are jitted over a device mesh (batch on `data`, state
replicated, buffers donated). Logging, curve evaluations and checkpoints are periodic actions
of one loop. The run's rows live in memory (`rundir.History`), are written to `metrics.jsonl`
and TensorBoard, and are saved inside every Orbax checkpoint, so a run resumes with its
curves and clock from the checkpoint alone; batch `s` depends only on (seed, s), so it resumes
to the same numbers. Several seeds are one program: their states stacked and every step
`jax.vmap`-ed, each seed with its own initialisation, data order and dropout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import statistics
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.data import input_pipeline, streaming
from cnn_cases.engine import defaults, guard, loading, parallel, periodic, rundir, steps
from cnn_cases.engine.rundir import RunResult


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_after: int | None = None,
    init_variables: Mapping[str, Any] | None = None,
) -> list[RunResult] | None:
    """Trains `config.model` on `config.dataset` into `workdir`: one result per seed.

    Rerunning with the same workdir resumes from the latest checkpoint, or returns the stored
    results of a finished run. `stop_after` ends this call's work after that many steps (as an
    interruption would), returning None; the next call resumes. `init_variables` ({"params",
    "batch_stats"}, one seed only) replace the initialisation from `config.seed` (a checkpoint
    still wins). Seed k of several computes what a run of seed k alone would, up to
    floating-point rounding.
    """
    rundir.check_workdir(workdir)
    with guard.workdir_lock(workdir):
        return _train_locked(config, workdir, stop_after, init_variables)


def _train_locked(
    config: ml_collections.ConfigDict,
    workdir: str,
    stop_after: int | None,
    init_variables: Mapping[str, Any] | None,
) -> list[RunResult] | None:
    if (finished := loading.stored_results(config, workdir)) is not None:
        return finished
    defaults.validate(config)  # the model, its arguments, sizes and steps: before any data
    parallel.check_batch_size(config.batch_size)
    parallel.check_batch_size(config.eval_batch_size, "eval_batch_size")
    data = loading.load_data(config, workdir)
    model = defaults.create_model(config, data.train.num_classes)
    mesh = parallel.create_mesh()
    state = steps.initial_state(model, config, data.image_shape, init_variables)
    with _open_run(config, workdir, data, mesh, models.has_aux_heads(model)) as run:
        state, start = run.restore(parallel.replicate(mesh, state))
        end = config.num_steps if stop_after is None else min(config.num_steps, start + stop_after)
        run.say(_start_line(config, state, len(run.seeds)))
        with guard.stop_signals() if jax.process_count() == 1 else contextlib.nullcontext():
            state = _loop(run, state, start, end)
        if end < config.num_steps:
            return None
        results = _final_results(run, state)
    rundir.write_results(workdir, results)
    for seed, r in zip(run.seeds, results, strict=True):
        run.say(
            f"  done{f' (seed {seed})' if len(run.seeds) > 1 else ''}: train error "
            f"{100 * r.train_error:.2f}%  test error {100 * r.test_error:.2f}%  "
            f"({periodic.format_seconds(r.seconds)})"
        )
    return results


def _start_line(config: ml_collections.ConfigDict, state: steps.TrainState, seeds: int) -> str:
    note = f", seeds {config.seed}..{config.seed + seeds - 1} as one program" if seeds > 1 else ""
    return (
        f"{config.model}: {costs.count(state.params) // seeds:,} parameters, "
        f"{config.num_steps} steps of {config.batch_size} on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s){note}"
    )


@dataclasses.dataclass
class _Run:
    """What one run's loop works with. With several seeds the state has a leading seed axis,
    batches are (seeds, batch, ...) and every metric is a list with one value per seed."""

    config: ml_collections.ConfigDict
    workdir: str
    data: loading.Data
    mesh: jax.sharding.Mesh
    seeds: list[int]
    train_step: parallel.SyncedJit
    eval_step: parallel.SyncedJit
    ckpt: ocp.CheckpointManager
    say: Callable[[str], None]
    history: rundir.History = dataclasses.field(default_factory=rundir.History)
    writer: rundir.MetricsWriter | None = None
    last_good: int = 0
    data_state: dict[str, Any] | None = None  # streamed: the pipeline's position

    def restore(self, state: steps.TrainState) -> tuple[steps.TrainState, int]:
        """The latest checkpoint's state and step (`state` and 0 without one); opens the
        metrics files with the history saved beside that state."""
        state, self.history, start, self.data_state = rundir.restore_latest(self.ckpt, state)
        if start:
            self.say(f"resumed from the checkpoint at step {start}")
        if self.data_state is not None and self.data_state.get("step") != start:
            self.data_state = None  # not this step's position: the pipeline seeks by step
        self.writer = rundir.MetricsWriter(self.workdir, self.history, start + 1)
        self.last_good = start
        return state, start

    def log(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
        row = self.history.add(step, kind, values)
        if self.writer is not None:
            self.writer.write(row)

    def save(self, step: int, state: steps.TrainState, *, force: bool = False) -> None:
        data = self.data_state if self.data.streamed else None
        rundir.save_checkpoint(self.ckpt, step, state, self.history, data=data, force=force)
        self.last_good = step

    def evaluate(self, state: steps.TrainState, split: Any, limit: int | None) -> dict:
        """Error, top-5 error (more than 10 classes) and loss (one value per seed when there
        are several), over exactly the first `limit` examples of `split`."""
        batches = loading.eval_batches(
            self.config,
            self.data,
            split,
            self.config.eval_batch_size,
            limit,
            jax.process_index(),
            jax.process_count(),
        )
        sums = [self.eval_step(state, *parallel.global_batch(self.mesh, *b)) for b in batches]
        total = jax.device_get(jax.tree_util.tree_map(lambda *xs: sum(xs), *sums))
        count = np.asarray(total["count"])
        out = {
            "error": (total["errors"] / count).tolist(),
            "loss": (total["loss"] / count).tolist(),
        }
        if "top5_errors" in total:
            out["top5_error"] = (total["top5_errors"] / count).tolist()
        if "aux_errors" in total:  # (heads,) or (seeds, heads)
            out["aux_errors"] = (total["aux_errors"] / count[..., None]).tolist()
        return out

    def evaluate_both(
        self, state: steps.TrainState, train_limit: int | None, test_limit: int | None
    ) -> tuple[dict, dict]:
        return (
            self.evaluate(state, self.data.train, train_limit),
            self.evaluate(state, self.data.test, test_limit),
        )

    def batches(self, start: int, end: int) -> _Feed:
        """(images, labels, position after them) of steps start+1 .. end, global arrays,
        prefetched; the position is None in memory, where batch s is a function of s."""
        c = self.config
        axis = 0 if len(self.seeds) == 1 else 1
        put = lambda b: parallel.global_batch(self.mesh, *b, batch_axis=axis)
        where = {"process_index": jax.process_index(), "process_count": jax.process_count()}
        if not self.data.streamed:
            pipelines = [
                input_pipeline.Pipeline(
                    self.data.train,
                    global_batch_size=c.batch_size,
                    seed=seed,
                    augment=c.augment,
                    mean=self.data.mean,
                    pad_to=c.pad_to,
                    crop_padding=c.crop_padding,
                    flip=c.flip,
                    **where,
                )
                for seed in self.seeds
            ]
            memory = (
                pipelines[0] if len(pipelines) == 1 else input_pipeline.StackedPipeline(pipelines)
            )
            produce = lambda s: (*put(memory.batch(s)), None)
            return _Feed(input_pipeline.prefetch_steps(produce, range(start, end), c.prefetch), [])
        saved = self.data_state["seeds"] if self.data_state else [None] * len(self.seeds)
        readers = [
            streaming.TrainBatches(
                self.data.train,
                self.data.preprocess,
                global_batch_size=c.batch_size,
                seed=seed,
                num_steps=c.num_steps,
                start=start,
                resume=resume,
                workers=c.data_workers,
                threads=c.data_threads,
                **where,
            )
            for seed, resume in zip(self.seeds, saved, strict=True)
        ]

        def produce(s: int) -> tuple[jax.Array, jax.Array, dict[str, Any]]:
            parts = [next(r) for r in readers]
            batch = parts[0] if len(parts) == 1 else tuple(map(np.stack, zip(*parts, strict=True)))
            return (*put(batch), {"step": s + 1, "seeds": [r.state() for r in readers]})

        return _Feed(input_pipeline.prefetch_steps(produce, range(start, end), c.prefetch), readers)


@dataclasses.dataclass
class _Feed:
    """The loop's batches: a prefetching iterator, and the streamed readers behind it."""

    batches: Iterator[tuple[jax.Array, jax.Array, dict[str, Any] | None]]
    readers: list[streaming.TrainBatches]

    def __next__(self) -> tuple[jax.Array, jax.Array, dict[str, Any] | None]:
        return next(self.batches)

    def close(self) -> None:
        self.batches.close()
        for r in self.readers:
            r.close()


@contextlib.contextmanager
def _open_run(
    config: ml_collections.ConfigDict,
    workdir: str,
    data: loading.Data,
    mesh: jax.sharding.Mesh,
    with_aux: bool,
) -> Iterator[_Run]:
    """The run's jitted steps, checkpoint manager and logger; closed on the way out."""
    seeds = steps.seed_list(config)
    step = functools.partial(
        steps.train_step,
        aux_loss_weight=config.aux_loss_weight,
        accumulate=config.accumulate_steps,
    )
    evaluate = functools.partial(steps.eval_step, with_aux=with_aux)
    if len(seeds) > 1:
        step = jax.vmap(step)
        evaluate = jax.vmap(evaluate, in_axes=(0, None, None, None))
    verbose = config.verbose and jax.process_index() == 0
    parallel.sync("cnn_cases:setup")  # processes start the checkpoint manager together
    run = _Run(
        config,
        workdir,
        data,
        mesh,
        seeds,
        train_step=parallel.SyncedJit(step, "train_step", mesh=mesh, donate_argnums=0),
        eval_step=parallel.SyncedJit(evaluate, "eval_step", mesh=mesh),
        ckpt=rundir.checkpoint_manager(workdir, max_to_keep=config.keep_checkpoints),
        say=logging.info if verbose else lambda msg: None,
    )
    try:
        yield run
    finally:
        if run.writer is not None:
            run.writer.close()
        run.ckpt.close()


def _loop(run: _Run, state: steps.TrainState, start: int, end: int) -> steps.TrainState:
    """Steps start+1 .. end, with the periodic actions; the last step is always saved."""
    c = run.config
    clock = periodic.Progress(c.num_steps, c.batch_size, run.history.seconds())
    keys = [jax.random.fold_in(jax.random.PRNGKey(seed), 2) for seed in run.seeds]
    dropout_key = keys[0] if len(keys) == 1 else jnp.stack(keys)
    final = (c.num_steps,)
    actions = (
        periodic.Every(c.log_every, functools.partial(_log_train, run, clock), also=final),
        periodic.Every(c.eval_every, functools.partial(_log_curves, run, clock), skip=final),
        periodic.Every(c.checkpoint_every, lambda s, st, _: run.save(s, st), skip=final),
    )
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    batches = run.batches(start, end)
    try:
        for step in range(start + 1, end + 1):
            images, labels, run.data_state = next(batches)
            state, metrics = run.train_step(state, images, labels, dropout_key)
            pending.append((step, metrics))
            if step == start + 1:  # the first step includes compilation: rates start after it
                jax.block_until_ready(metrics)
                run.say(f"  first step (compile + run) {clock.since_start():.1f}s")
                clock.mark(step)
            if due := [a for a in actions if a.due(step)]:
                means = _check_finite(pending, run)
                pending = []
                for action in due:
                    action(step, state, means)
            if step < end and (signum := _stop_signal(run, step)) is not None:
                _check_finite(pending, run)  # a non-finite state is never saved
                run.save(step, state, force=True)
                raise guard.Interrupted(signum, step, run.workdir)
    finally:
        batches.close()
        run.ckpt.wait_until_finished()
    _check_finite(pending, run)
    if run.ckpt.latest_step() != end:
        run.save(end, state, force=True)
        run.ckpt.wait_until_finished()
    return state


def _stop_signal(run: _Run, step: int) -> int | None:
    """SIGTERM or SIGINT if one asks the run to stop at this step. Several processes stop
    together, at the step Orbax's preemption sync agrees on."""
    if jax.process_count() > 1:
        return signal.SIGTERM if run.ckpt.reached_preemption(step) else None
    return guard.stop_requested()


def _log_train(run: _Run, clock: periodic.Progress, step: int, _: Any, means: dict) -> None:
    """A train row (loss, error, seconds, images/s) and its progress line with the ETA."""
    values = {**means, "seconds": clock.seconds()}
    line = (
        f"  step {step:>6}/{run.config.num_steps}  loss {np.mean(means['loss']):.4f}  "
        f"train err {100 * np.mean(means['error']):5.1f}%"
    )
    if (rate := clock.rate(step)) is not None:
        values["images_per_s"] = rate[0]
        line += f"  {rate[0]:7.0f} img/s  ETA {periodic.format_seconds(rate[1])}"
    if len(run.seeds) > 1:
        line += f"  (means of {len(run.seeds)} seeds; img/s per seed)"
    run.log(step, "train", values)
    run.say(line)
    clock.mark(step)


def _log_curves(run: _Run, clock: periodic.Progress, step: int, state: Any, _: dict) -> None:
    """An eval row of the curves, on `curve_eval_examples` of each split."""
    limit = run.config.curve_eval_examples
    run.log(step, "eval", _eval_row(*run.evaluate_both(state, limit, limit)))
    clock.mark(step)


def _final_results(run: _Run, state: steps.TrainState) -> list[RunResult]:
    """The finished state evaluated on both splits (one result per seed); its eval row
    closes the curves."""
    c = run.config
    train_m, test_m = run.evaluate_both(
        state, c.final_train_eval_examples, c.final_test_eval_examples
    )
    run.log(c.num_steps, "eval", _eval_row(train_m, test_m))
    curves = run.history.of("eval")
    rates = [r["images_per_s"] for r in run.history.of("train") if "images_per_s" in r]
    per_seed = len(run.seeds) > 1
    pick = (lambda v, k: v[k]) if per_seed else (lambda v, k: v)
    return [
        RunResult(
            train_error=pick(train_m["error"], k),
            test_error=pick(test_m["error"], k),
            train_loss=pick(train_m["loss"], k),
            test_loss=pick(test_m["loss"], k),
            steps=c.num_steps,
            seconds=float(run.history.seconds()),
            params=costs.count(state.params) // len(run.seeds),
            curves=[{n: v if n == "step" else pick(v, k) for n, v in r.items()} for r in curves],
            aux_test_errors=pick(test_m["aux_errors"], k) if "aux_errors" in test_m else [],
            train_top5_error=pick(train_m["top5_error"], k) if "top5_error" in train_m else None,
            test_top5_error=pick(test_m["top5_error"], k) if "top5_error" in test_m else None,
            step_seconds=c.batch_size / statistics.median(rates) if rates else None,
        )
        for k in range(len(run.seeds))
    ]


def _check_finite(pending: list[tuple[int, dict[str, jax.Array]]], run: _Run) -> dict[str, Any]:
    """Means of the pending step metrics, brought to the host (one per seed when there are
    several); raises on a non-finite loss or parameters."""
    host = jax.device_get(pending)
    for s, m in host:
        loss, finite = np.asarray(m["loss"]), np.asarray(m["params_finite"])
        bad = ~np.isfinite(loss) | (finite == 0)
        if not bad.any():
            continue
        k = int(np.argmax(bad.reshape(-1)))
        lk = float(loss.reshape(-1)[k])
        what = (
            f"loss is {lk}"
            if not np.isfinite(lk)
            else f"parameters became non-finite (loss {lk:.4g})"
        )
        seed = f" (seed {run.seeds[k]})" if len(run.seeds) > 1 else ""
        kept = (
            f"the last good checkpoint (step {run.last_good}) is kept in {run.workdir!r}"
            if run.last_good
            else f"no checkpoint was saved in {run.workdir!r}"
        )
        raise NonFiniteLossError(
            f"{what} at step {s}{seed}; stopping: {kept}. A run resumes only with its own "
            "learning rate: lower --config.learning_rate with a new --workdir, or check the "
            "input data"
        )
    keys = [k for k in host[0][1] if k != "params_finite"] if host else []
    return {k: np.mean([m[k] for _, m in host], axis=0).tolist() for k in keys}


def _eval_row(train_m: dict[str, Any], test_m: dict[str, Any]) -> dict[str, Any]:
    row = {"train_error": train_m["error"], "test_error": test_m["error"]}
    if "top5_error" in test_m:
        row["train_top5_error"] = train_m["top5_error"]
        row["test_top5_error"] = test_m["top5_error"]
    aux = np.asarray(test_m.get("aux_errors", []))
    for k in range(aux.shape[-1] if aux.size else 0):
        row[f"aux{k + 1}_test_error"] = aux[..., k].tolist()
    return row
