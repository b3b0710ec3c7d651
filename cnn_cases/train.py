"""Training engine: `train_and_evaluate(config, workdir)`.

Pure `train_step` / `eval_step` functions, jitted over a device mesh (batch on
`data`, state replicated, buffers donated); SGD with momentum, L2 weight decay
and a piecewise-constant schedule; Orbax checkpoints; resumable to the same
numbers because batch `s` depends only on (seed, s).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from cnn_cases import defaults, input_pipeline, models, parallel, rundir, splits
from cnn_cases.rundir import RunResult


class TrainState(train_state.TrainState):
    batch_stats: Any = None


# ----------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """lr, x lr_decay at each boundary; warmup_lr for the first warmup_steps."""
    main = optax.piecewise_constant_schedule(
        config.learning_rate, {int(b): config.lr_decay for b in config.lr_boundaries}
    )
    if not config.warmup_steps:
        return main
    return optax.join_schedules(
        [optax.constant_schedule(config.warmup_lr), lambda s: main(s + config.warmup_steps)],
        [config.warmup_steps],
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay (added to the gradient, as in He et al.)."""
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(learning_rate_schedule(config), config.momentum, nesterov=config.nesterov),
    )


def create_train_state(
    model: nn.Module,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, ...],
    variables: Mapping[str, Any] | None = None,
) -> TrainState:
    """A fresh optimiser over `variables`, or over parameters (auxiliary heads included)
    initialised from config.seed."""
    if variables is None:
        key = jax.random.PRNGKey(config.seed)
        x = jnp.zeros((1, *image_shape), jnp.float32)
        variables = jax.jit(functools.partial(model.init, train=True))(
            {"params": key, "dropout": jax.random.fold_in(key, 1)}, x
        )
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=make_optimizer(config),
    )


# ----------------------------------------------------------------------------- steps


def _split_outputs(out: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Models with auxiliary heads return (logits, aux_logits) in training."""
    if isinstance(out, tuple):
        return out[0], tuple(out[1])
    return out, ()


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    *,
    dropout_key: jax.Array,
    aux_loss_weight: float = 0.3,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch; returns the new state and batch metrics."""
    rng = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, Any]:
        variables = {"params": params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        out, updates = state.apply_fn(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        logits, aux = _split_outputs(out)
        main = jnp.mean(cross_entropy(logits, labels))
        loss = main + aux_loss_weight * sum(jnp.mean(cross_entropy(a, labels)) for a in aux)
        return loss, (main, logits, updates)

    (loss, (main, logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    finite = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(state.params)])
    )
    metrics = {
        "loss": loss,
        "main_loss": main,
        "error": jnp.mean(jnp.argmax(logits, -1) != labels),
        "params_finite": finite.astype(jnp.float32),
    }
    return state, metrics


def eval_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    with_aux: bool = False,
) -> dict[str, jax.Array]:
    """Sums of loss, errors and examples over the real (mask=1) rows of a batch.

    `with_aux=True` also counts the errors of each auxiliary head (`aux_errors`), run in
    inference mode: how well do intermediate layers already predict?
    """
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    kwargs = {"with_aux": True} if with_aux else {}
    logits, aux = _split_outputs(state.apply_fn(variables, images, train=False, **kwargs))
    wrong = lambda h: jnp.sum((jnp.argmax(h, -1) != labels).astype(jnp.float32) * mask)
    out = {
        "loss": jnp.sum(cross_entropy(logits, labels) * mask),
        "errors": wrong(logits),
        "count": jnp.sum(mask),
    }
    if aux:
        out["aux_errors"] = jnp.stack([wrong(h) for h in aux])
    return out


# ----------------------------------------------------------------------------- the run


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class _Data:
    train: splits.Split
    test: splits.Split
    mean: np.ndarray | None
    image_shape: tuple[int, int, int]


def _load_data(config: ml_collections.ConfigDict, workdir: str) -> _Data:
    load = functools.partial(
        splits.load_split, config.dataset, data_dir=config.data_dir, download=config.download
    )
    train, test = (
        splits.downsample(load(s), config.downsample)
        for s in (config.train_split, config.test_split)
    )
    mean = None
    if config.mean_subtract:  # stored with the run: a resumed run uses the same mean
        mean = rundir.dataset_mean(workdir, lambda: splits.per_pixel_mean(train.images))
    return _Data(train, test, mean, splits.image_shape(train, config.pad_to))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_after: int | None = None,
    init_variables: Mapping[str, Any] | None = None,
) -> RunResult | None:
    """Trains `config.model` on `config.dataset`, checkpointing and logging into `workdir`.

    Rerunning with the same workdir resumes from the latest checkpoint, or returns the stored
    result of a finished run. `stop_after` ends the process's work after that many steps (as an
    interruption would), returning None; the next call resumes. `init_variables` ({"params",
    "batch_stats"}) replace the initialisation from `config.seed` (a checkpoint still wins).
    """
    rundir.check_workdir(workdir)
    rundir.check_config(workdir, config, defaults.RESUMABLE_KEYS)
    if (finished := rundir.read_result(workdir)) is not None:
        return finished
    parallel.check_batch_size(config.batch_size)
    parallel.check_batch_size(config.eval_batch_size, "eval_batch_size")
    data = _load_data(config, workdir)
    model = defaults.create_model(config, data.train.num_classes)
    mesh = parallel.create_mesh()
    state = create_train_state(model, config, data.image_shape, init_variables)
    state = parallel.replicate(mesh, state)
    run = _Run(config, workdir, data, mesh, models.has_aux_heads(model))
    state, start = run.restore(state)
    end = config.num_steps if stop_after is None else min(config.num_steps, start + stop_after)
    run.say(
        f"{config.model}: {_count(state.params):,} parameters, {config.num_steps} steps of "
        f"{config.batch_size} on {jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    state = run.train(state, start, end)
    if end < config.num_steps:
        run.close()
        return None
    result = run.final_result(state, _count(state.params))
    run.close()
    rundir.write_result(workdir, result)
    run.say(
        f"  done: train error {100 * result.train_error:.2f}%  test error "
        f"{100 * result.test_error:.2f}%  ({_fmt_time(result.seconds)})"
    )
    return result


def _count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class _Run:
    """The parts of one run that `train_and_evaluate` strings together."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        data: _Data,
        mesh: jax.sharding.Mesh,
        with_aux: bool,
    ) -> None:
        self.config, self.workdir, self.data, self.mesh = config, workdir, data, mesh
        verbose = config.verbose and jax.process_index() == 0
        self.say = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
        self.p_train = parallel.SyncedJit(
            functools.partial(train_step, aux_loss_weight=config.aux_loss_weight),
            "train_step",
            mesh=mesh,
            donate_argnums=0,
        )
        self.p_eval = parallel.SyncedJit(
            functools.partial(eval_step, with_aux=with_aux), "eval_step", mesh=mesh
        )
        parallel.sync("cnn_cases:setup")  # processes start the checkpoint manager together
        self.ckpt = rundir.checkpoint_manager(workdir, max_to_keep=config.keep_checkpoints)
        self.writer: rundir.MetricsWriter | None = None
        self.seconds_before = 0.0

    def restore(self, state: TrainState) -> tuple[TrainState, int]:
        """The latest checkpoint's state and step (the given state and 0 if there is none)."""
        start = self.ckpt.latest_step() or 0
        if start:
            state = self.ckpt.restore(start, args=ocp.args.StandardRestore(state))
            self.say(f"resumed from the checkpoint at step {start}")
        self.writer = rundir.MetricsWriter(self.workdir, start)
        rows = rundir.read_metrics(self.workdir, "train")
        self.seconds_before = max([r["seconds"] for r in rows] or [0.0])
        return state, start

    def evaluate(self, state: TrainState, split: splits.Split, limit: int | None) -> dict:
        sums: list[Any] = []
        for images, labels, mask in input_pipeline.eval_batches(
            split,
            batch_size=self.config.eval_batch_size,
            mean=self.data.mean,
            pad_to=self.config.pad_to,
            limit=limit,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ):
            batch = parallel.global_batch(self.mesh, images, labels, mask)
            sums.append(self.p_eval(state, *batch))
        total = jax.device_get(jax.tree_util.tree_map(lambda *xs: sum(xs), *sums))
        out = {
            "error": float(total["errors"] / total["count"]),
            "loss": float(total["loss"] / total["count"]),
        }
        if "aux_errors" in total:
            out["aux_errors"] = [float(e / total["count"]) for e in total["aux_errors"]]
        return out

    def train(self, state: TrainState, start: int, end: int) -> TrainState:
        """Steps start .. end-1 with logging, curve evaluations and checkpoints."""
        c, writer = self.config, self.writer
        assert writer is not None, "restore() first"
        pipeline = input_pipeline.Pipeline(
            self.data.train,
            global_batch_size=c.batch_size,
            seed=c.seed,
            augment=c.augment,
            mean=self.data.mean,
            pad_to=c.pad_to,
            crop_padding=c.crop_padding,
            flip=c.flip,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        batches = pipeline.iterate(
            start,
            end - start,
            prefetch=c.prefetch,
            put=lambda b: parallel.global_batch(self.mesh, *b),
        )
        dropout_key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 2)
        pending: list[tuple[int, dict[str, jax.Array]]] = []
        last_good = start
        t_start = time.perf_counter()
        t_last, step_last = t_start, start
        try:
            for step in range(start, end):
                images, labels = next(batches)
                state, metrics = self.p_train(state, images, labels, dropout_key=dropout_key)
                pending.append((step, metrics))
                done = step + 1
                if done == start + 1:  # the first step includes compilation: rates start here
                    jax.block_until_ready(metrics)
                    self.say(f"  first step (compile + run) {time.perf_counter() - t_start:.1f}s")
                    t_last, step_last = time.perf_counter(), done
                is_ckpt = c.checkpoint_every and done % c.checkpoint_every == 0
                is_log = done % c.log_every == 0 or done == c.num_steps
                is_eval = c.eval_every and done % c.eval_every == 0
                if not (is_log or is_ckpt or is_eval):
                    continue
                means = _check_finite(pending, last_good, self.workdir)
                pending = []
                now = time.perf_counter()
                if is_log and means:
                    values = {**means, "seconds": self.seconds_before + now - t_start}
                    line = (
                        f"  step {done:>6}/{c.num_steps}  loss {means['loss']:.4f}  "
                        f"train err {100 * means['error']:5.1f}%"
                    )
                    if done > step_last:  # not right after the compile
                        rate = (done - step_last) * c.batch_size / max(now - t_last, 1e-9)
                        eta = (c.num_steps - done) * c.batch_size / rate
                        values["images_per_s"] = rate
                        line += f"  {rate:7.0f} img/s  ETA {_fmt_time(eta)}"
                    writer.write(done, "train", values)
                    self.say(line)
                    t_last, step_last = now, done
                if is_eval and done != c.num_steps:
                    tr = self.evaluate(state, self.data.train, c.curve_eval_examples)
                    te = self.evaluate(state, self.data.test, c.curve_eval_examples)
                    writer.write(done, "eval", _eval_row(tr, te))
                    t_last, step_last = time.perf_counter(), done
                if is_ckpt and done != c.num_steps:
                    self.ckpt.save(done, args=ocp.args.StandardSave(state))
                    last_good = done
        finally:
            batches.close()
            self.ckpt.wait_until_finished()
        if self.ckpt.latest_step() != end:
            self.ckpt.save(end, args=ocp.args.StandardSave(state), force=True)
            self.ckpt.wait_until_finished()
        return state

    def final_result(self, state: TrainState, num_params: int) -> RunResult:
        """Evaluates the finished state on both splits; the eval row closes the curves."""
        c, writer = self.config, self.writer
        assert writer is not None, "restore() first"
        train_m = self.evaluate(state, self.data.train, c.final_train_eval_examples)
        test_m = self.evaluate(state, self.data.test, c.final_test_eval_examples)
        writer.write(c.num_steps, "eval", _eval_row(train_m, test_m))
        seconds = max([r["seconds"] for r in rundir.read_metrics(self.workdir, "train")] or [0.0])
        return RunResult(
            train_error=train_m["error"],
            test_error=test_m["error"],
            train_loss=train_m["loss"],
            test_loss=test_m["loss"],
            steps=c.num_steps,
            seconds=float(seconds),
            params=num_params,
            curves=[
                {k: v for k, v in r.items() if k != "kind"}
                for r in rundir.read_metrics(self.workdir, "eval")
            ],
            aux_test_errors=test_m.get("aux_errors", []),
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.ckpt.close()


def _check_finite(
    pending: list[tuple[int, dict[str, jax.Array]]], last_good: int, workdir: str
) -> dict[str, float]:
    """Means of the pending step metrics, brought to the host; raises on a non-finite loss."""
    host = jax.device_get(pending)
    for s, m in host:
        if not np.isfinite(m["loss"]) or not m["params_finite"]:
            what = (
                f"loss is {float(m['loss'])}"
                if not np.isfinite(m["loss"])
                else f"parameters became non-finite (loss {float(m['loss']):.4g})"
            )
            raise NonFiniteLossError(
                f"{what} at step {s + 1}; stopping. The last good checkpoint (step "
                f"{last_good}) is kept in {workdir!r}; lower the learning rate or check "
                "the input data"
            )
    keys = [k for k in host[0][1] if k != "params_finite"] if host else []
    return {k: float(np.mean([m[k] for _, m in host])) for k in keys}


def _eval_row(train_m: dict[str, Any], test_m: dict[str, Any]) -> dict[str, float]:
    row = {"train_error": train_m["error"], "test_error": test_m["error"]}
    for k, e in enumerate(test_m.get("aux_errors", [])):
        row[f"aux{k + 1}_test_error"] = e
    return row
