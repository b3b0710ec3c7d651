"""Training engine: `train_and_evaluate(config, workdir)` and `train_seeds(config, workdir)`.

Pure `train_step` / `eval_step` functions, jitted over a device mesh (batch on
`data`, state replicated, buffers donated); SGD with momentum, L2 weight decay
and a piecewise-constant schedule; Orbax checkpoints; resumable to the same
numbers because batch `s` depends only on (seed, s). `train_seeds` trains
`config.seeds` seeds as one program: their states stacked on a leading axis and
the steps `jax.vmap`-ed, each seed with its own initialisation and data order.
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

from cnn_cases import models
from cnn_cases.data import input_pipeline, splits
from cnn_cases.engine import defaults, parallel, rundir
from cnn_cases.engine.rundir import RunResult


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
        variables = _initializer(model, image_shape)(config.seed)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=make_optimizer(config),
    )


def _initializer(model: nn.Module, image_shape: tuple[int, ...]) -> Any:
    """seed -> the model's variables (auxiliary heads included) initialised from that seed."""
    init = jax.jit(functools.partial(model.init, train=True))
    x = jnp.zeros((1, *image_shape), jnp.float32)

    def variables(seed: int) -> Any:
        key = jax.random.PRNGKey(seed)
        return init({"params": key, "dropout": jax.random.fold_in(key, 1)}, x)

    return variables


def seed_list(config: ml_collections.ConfigDict) -> list[int]:
    """The seeds a config trains: config.seed, config.seed + 1, ... (config.seeds of them)."""
    if not isinstance(config.seeds, int) or config.seeds < 1:
        raise ValueError(f"seeds={config.seeds!r} must be a whole number >= 1")
    return [config.seed + k for k in range(config.seeds)]


def create_seed_states(
    model: nn.Module, config: ml_collections.ConfigDict, image_shape: tuple[int, ...]
) -> TrainState:
    """One TrainState per seed of `seed_list(config)`, each initialised as a run with that
    seed alone would be, stacked on a new leading axis."""
    init = _initializer(model, image_shape)
    return stack(
        [create_train_state(model, config, image_shape, init(s)) for s in seed_list(config)]
    )


def stack(trees: list[Any]) -> Any:
    """Pytrees of the same structure stacked leaf by leaf on a new leading axis (the structure,
    static fields included, is the first tree's)."""
    leaves = [jax.tree_util.tree_leaves(t) for t in trees]
    treedef = jax.tree_util.tree_structure(trees[0])
    return treedef.unflatten([jnp.stack(xs) for xs in zip(*leaves, strict=True)])


def unstack(tree: Any, index: int) -> Any:
    """Member `index` of a tree stacked by `stack`."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


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
    dropout_key: jax.Array,
    *,
    aux_loss_weight: float = 0.3,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch; returns the new state and batch metrics.

    `dropout_key` is positional so that `vmap` can map over it (one key per seed)."""
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
    `config.seeds` must be 1 here; `train_seeds` trains several.
    """
    if seed_list(config) != [config.seed]:
        raise ValueError(
            f"seeds={config.seeds}: train_and_evaluate trains one seed; use train_seeds"
        )
    results = _train(config, workdir, stop_after, init_variables)
    return None if results is None else results[0]


def train_seeds(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> list[RunResult] | None:
    """Trains seeds `seed_list(config)` of `config` into one `workdir`; one result per seed.

    With several seeds their train states are stacked and every step is one `jax.vmap`-ed
    program over them, each seed with its own initialisation, data order and dropout: seed k
    computes what `train_and_evaluate` with `seed=k` would, up to floating-point rounding.
    One seed is `train_and_evaluate`'s run. Resumes, and returns stored results, as it does.
    """
    if config.seeds == 1:
        result = train_and_evaluate(config, workdir, stop_after=stop_after)
        return None if result is None else [result]
    return _train(config, workdir, stop_after, None)


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    stop_after: int | None,
    init_variables: Mapping[str, Any] | None,
) -> list[RunResult] | None:
    seeds = seed_list(config)
    rundir.check_workdir(workdir)
    rundir.check_config(workdir, config, defaults.RESUMABLE_KEYS, defaults.ADDED_KEYS)
    if (finished := rundir.read_results(workdir)) is not None:
        return finished
    parallel.check_batch_size(config.batch_size)
    parallel.check_batch_size(config.eval_batch_size, "eval_batch_size")
    data = _load_data(config, workdir)
    model = defaults.create_model(config, data.train.num_classes)
    mesh = parallel.create_mesh()
    if len(seeds) == 1:
        state = create_train_state(model, config, data.image_shape, init_variables)
    else:
        state = create_seed_states(model, config, data.image_shape)
    state = parallel.replicate(mesh, state)
    run = _Run(config, workdir, data, mesh, models.has_aux_heads(model), seeds)
    state, start = run.restore(state)
    end = config.num_steps if stop_after is None else min(config.num_steps, start + stop_after)
    num_params = _count(state.params) // len(seeds)
    seeds_note = f", seeds {seeds[0]}..{seeds[-1]} as one program" if len(seeds) > 1 else ""
    run.say(
        f"{config.model}: {num_params:,} parameters, {config.num_steps} steps of "
        f"{config.batch_size} on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s){seeds_note}"
    )
    state = run.train(state, start, end)
    if end < config.num_steps:
        run.close()
        return None
    results = run.final_results(state, num_params)
    run.close()
    rundir.write_results(workdir, results)
    for seed, r in zip(seeds, results, strict=True):
        run.say(
            f"  done{f' (seed {seed})' if len(seeds) > 1 else ''}: train error "
            f"{100 * r.train_error:.2f}%  test error {100 * r.test_error:.2f}%  "
            f"({_fmt_time(r.seconds)})"
        )
    return results


def _count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class _Run:
    """The parts of one run that `_train` strings together.

    With several seeds the state carries a leading seed axis, the steps are vmapped over it,
    batches are (seeds, batch, ...) and every metric is a list with one value per seed.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        data: _Data,
        mesh: jax.sharding.Mesh,
        with_aux: bool,
        seeds: list[int],
    ) -> None:
        self.config, self.workdir, self.data, self.mesh = config, workdir, data, mesh
        self.seeds = seeds
        verbose = config.verbose and jax.process_index() == 0
        self.say = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
        step = functools.partial(train_step, aux_loss_weight=config.aux_loss_weight)
        evaluate = functools.partial(eval_step, with_aux=with_aux)
        if len(seeds) > 1:
            step = jax.vmap(step)
            evaluate = jax.vmap(evaluate, in_axes=(0, None, None, None))
        self.p_train = parallel.SyncedJit(step, "train_step", mesh=mesh, donate_argnums=0)
        self.p_eval = parallel.SyncedJit(evaluate, "eval_step", mesh=mesh)
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
        """Error and loss (with one value per seed when there are several)."""
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
        count = np.asarray(total["count"])
        out = {
            "error": (total["errors"] / count).tolist(),
            "loss": (total["loss"] / count).tolist(),
        }
        if "aux_errors" in total:  # (heads,) or (seeds, heads)
            out["aux_errors"] = (total["aux_errors"] / count[..., None]).tolist()
        return out

    def _pipeline(self) -> input_pipeline.Pipeline | input_pipeline.StackedPipeline:
        c = self.config
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
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
            for seed in self.seeds
        ]
        return pipelines[0] if len(pipelines) == 1 else input_pipeline.StackedPipeline(pipelines)

    def train(self, state: TrainState, start: int, end: int) -> TrainState:
        """Steps start .. end-1 with logging, curve evaluations and checkpoints."""
        c, writer = self.config, self.writer
        assert writer is not None, "restore() first"
        batch_axis = 0 if len(self.seeds) == 1 else 1
        batches = self._pipeline().iterate(
            start,
            end - start,
            prefetch=c.prefetch,
            put=lambda b: parallel.global_batch(self.mesh, *b, batch_axis=batch_axis),
        )
        keys = [jax.random.fold_in(jax.random.PRNGKey(seed), 2) for seed in self.seeds]
        dropout_key = keys[0] if len(keys) == 1 else jnp.stack(keys)
        pending: list[tuple[int, dict[str, jax.Array]]] = []
        last_good = start
        t_start = time.perf_counter()
        t_last, step_last = t_start, start
        try:
            for step in range(start, end):
                images, labels = next(batches)
                state, metrics = self.p_train(state, images, labels, dropout_key)
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
                means = _check_finite(pending, last_good, self.workdir, self.seeds)
                pending = []
                now = time.perf_counter()
                if is_log and means:
                    values = {**means, "seconds": self.seconds_before + now - t_start}
                    line = (
                        f"  step {done:>6}/{c.num_steps}  loss {np.mean(means['loss']):.4f}  "
                        f"train err {100 * np.mean(means['error']):5.1f}%"
                    )
                    if done > step_last:  # not right after the compile
                        rate = (done - step_last) * c.batch_size / max(now - t_last, 1e-9)
                        eta = (c.num_steps - done) * c.batch_size / rate
                        values["images_per_s"] = rate
                        line += f"  {rate:7.0f} img/s  ETA {_fmt_time(eta)}"
                    if len(self.seeds) > 1:
                        line += f"  (means of {len(self.seeds)} seeds; img/s per seed)"
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

    def final_results(self, state: TrainState, num_params: int) -> list[RunResult]:
        """Evaluates the finished state on both splits (one result per seed); the eval row
        closes the curves."""
        c, writer = self.config, self.writer
        assert writer is not None, "restore() first"
        train_m = self.evaluate(state, self.data.train, c.final_train_eval_examples)
        test_m = self.evaluate(state, self.data.test, c.final_test_eval_examples)
        writer.write(c.num_steps, "eval", _eval_row(train_m, test_m))
        seconds = max([r["seconds"] for r in rundir.read_metrics(self.workdir, "train")] or [0.0])
        curves = [
            {k: v for k, v in r.items() if k != "kind"}
            for r in rundir.read_metrics(self.workdir, "eval")
        ]
        per_seed = len(self.seeds) > 1
        pick = (lambda v, k: v[k]) if per_seed else (lambda v, k: v)
        return [
            RunResult(
                train_error=pick(train_m["error"], k),
                test_error=pick(test_m["error"], k),
                train_loss=pick(train_m["loss"], k),
                test_loss=pick(test_m["loss"], k),
                steps=c.num_steps,
                seconds=float(seconds),
                params=num_params,
                curves=[
                    {n: v if n == "step" else pick(v, k) for n, v in row.items()} for row in curves
                ],
                aux_test_errors=pick(test_m["aux_errors"], k) if "aux_errors" in test_m else [],
            )
            for k in range(len(self.seeds))
        ]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.ckpt.close()


def _check_finite(
    pending: list[tuple[int, dict[str, jax.Array]]],
    last_good: int,
    workdir: str,
    seeds: list[int],
) -> dict[str, Any]:
    """Means of the pending step metrics, brought to the host (one per seed when there are
    several); raises on a non-finite loss."""
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
        seed = f" (seed {seeds[k]})" if len(seeds) > 1 else ""
        raise NonFiniteLossError(
            f"{what} at step {s + 1}{seed}; stopping. The last good checkpoint (step "
            f"{last_good}) is kept in {workdir!r}; lower the learning rate or check "
            "the input data"
        )
    keys = [k for k in host[0][1] if k != "params_finite"] if host else []
    return {k: np.mean([m[k] for _, m in host], axis=0).tolist() for k in keys}


def _eval_row(train_m: dict[str, Any], test_m: dict[str, Any]) -> dict[str, Any]:
    row = {"train_error": train_m["error"], "test_error": test_m["error"]}
    aux = np.asarray(test_m.get("aux_errors", []))
    for k in range(aux.shape[-1] if aux.size else 0):
        row[f"aux{k + 1}_test_error"] = aux[..., k].tolist()
    return row
