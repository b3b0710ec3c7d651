"""Training engine: `train_and_evaluate(config, workdir)`.

Pure `train_step` / `eval_step` functions, jitted over a device mesh (batch on
`data`, state replicated, buffers donated); SGD with momentum, L2 weight decay
and a piecewise-constant schedule; Orbax checkpoints; resumable to the same
numbers because batch `s` depends only on (seed, s).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from cnn_cases import data as data_lib
from cnn_cases import models, parallel

logger = logging.getLogger(__name__)

# Config keys that may change between an interrupted run and its resumption.
_RESUMABLE_KEYS = frozenset(
    {
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "data_dir",
        "download",
        "prefetch",
        "verbose",
        "kernels",  # oneDNN and XLA kernels compute the same function on the same variables
    }
)


def default_config() -> ml_collections.ConfigDict:
    """Every knob of a run; experiments start from this and override."""
    c = ml_collections.ConfigDict()
    c.model = "resnet20"
    c.model_kwargs = ml_collections.ConfigDict()
    c.dtype = "float32"
    c.kernels = "auto"  # convolutions and BatchNorm: auto (oneDNN on a CPU), onednn, xla
    c.dataset = "cifar10"
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.download = True  # let TFDS download a dataset missing from data_dir
    c.train_split = "train"
    c.test_split = "test"
    c.augment = True
    c.crop_padding = 4
    c.flip = True
    c.mean_subtract = True
    c.pad_to = ml_collections.config_dict.placeholder(int)
    c.downsample = 1  # average factor x factor pixel blocks (2: CIFAR at 16x16, 4x cheaper)
    c.batch_size = 128
    c.eval_batch_size = 500
    c.num_steps = 64_000
    c.learning_rate = 0.1
    c.lr_boundaries = (32_000, 48_000)
    c.lr_decay = 0.1
    c.warmup_steps = 0  # He et al.: ResNet-110 trains at warmup_lr for ~400 steps first
    c.warmup_lr = 0.01
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    c.aux_loss_weight = 0.3
    c.seed = 0
    c.log_every = 100
    c.eval_every = 0  # 0: evaluate only at the end
    c.curve_eval_examples = 2_000  # train/test examples per intermediate evaluation
    c.final_train_eval_examples = 10_000
    c.final_test_eval_examples = ml_collections.config_dict.placeholder(int)  # None: all
    c.checkpoint_every = 1_000
    c.keep_checkpoints = 2
    c.prefetch = 2
    c.verbose = True
    return c


class TrainState(train_state.TrainState):
    batch_stats: Any = None


@dataclasses.dataclass
class RunResult:
    """What a finished run reports; also written to `workdir/result.json`."""

    train_error: float
    test_error: float
    train_loss: float
    test_loss: float
    steps: int
    seconds: float
    params: int
    curves: list[dict[str, float]]
    aux_test_errors: list[float] = dataclasses.field(default_factory=list)


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


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    kwargs = dict(config.model_kwargs)
    return models.get_model(
        config.model,
        num_classes=num_classes,
        dtype=jnp.dtype(config.dtype),
        kernels=config.kernels,
        **kwargs,
    )


def create_train_state(
    model: nn.Module, config: ml_collections.ConfigDict, image_shape: tuple[int, ...]
) -> TrainState:
    """Initialises parameters (auxiliary heads included) from config.seed."""
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


# ----------------------------------------------------------------------------- helpers


def check_workdir(workdir: str) -> None:
    """Creates `workdir` or raises a one-line ValueError if it cannot be written."""
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


def _config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json())


def _check_same_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """A workdir belongs to one config: resuming with another would mix two runs."""
    path = os.path.join(workdir, "config.json")
    new = _config_to_dict(config)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = sorted(
            k for k in set(old) | set(new) if k not in _RESUMABLE_KEYS and old.get(k) != new.get(k)
        )
        if diff:
            raise ValueError(
                f"workdir {workdir!r} holds a run with a different config "
                f"({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)}); "
                "use a new --workdir or restore the old settings"
            )
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(new, f, indent=2, sort_keys=True)


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class MetricsWriter:
    """JSON lines (`metrics.jsonl`) and TensorBoard event files in `workdir`; process 0 only."""

    def __init__(self, workdir: str, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        # Drop lines past the checkpoint we resume from: those steps are about to run again.
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        try:
            from flax.metrics import tensorboard

            self._tb = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # TensorFlow is optional for the event files only
            self._tb = None

    def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def read(self, kind: str) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            rows = [json.loads(ln) for ln in f if ln.strip()]
        return [r for r in rows if r["kind"] == kind]

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class _Data:
    train: data_lib.Split
    test: data_lib.Split
    mean: np.ndarray | None
    image_shape: tuple[int, int, int]


def _load_data(config: ml_collections.ConfigDict, workdir: str) -> _Data:
    load = functools.partial(
        data_lib.load_split, config.dataset, data_dir=config.data_dir, download=config.download
    )
    train, test = (
        data_lib.downsample(load(s), config.downsample)
        for s in (config.train_split, config.test_split)
    )
    mean = None
    if config.mean_subtract:
        # Stored with the run so a resumed run (or an evaluation) uses the same mean.
        path = os.path.join(workdir, "mean.npy")
        if os.path.exists(path):
            mean = np.load(path)
        else:
            mean = data_lib.per_pixel_mean(train.images)
            if jax.process_index() == 0:
                with open(path + ".tmp", "wb") as f:
                    np.save(f, mean)
                os.replace(path + ".tmp", path)
    return _Data(train, test, mean, data_lib.image_shape(train, config.pad_to))


def _evaluate(
    state: TrainState,
    split: data_lib.Split,
    config: ml_collections.ConfigDict,
    mean: np.ndarray | None,
    limit: int | None,
    step_fn: Callable[..., Any],
    mesh: jax.sharding.Mesh,
) -> dict[str, float]:
    sums: list[Any] = []
    for images, labels, mask in data_lib.eval_batches(
        split,
        batch_size=config.eval_batch_size,
        mean=mean,
        pad_to=config.pad_to,
        limit=limit,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        sums.append(step_fn(state, *parallel.global_batch(mesh, images, labels, mask)))
    total = jax.device_get(jax.tree_util.tree_map(lambda *xs: sum(xs), *sums))
    out = {
        "error": float(total["errors"] / total["count"]),
        "loss": float(total["loss"] / total["count"]),
    }
    if "aux_errors" in total:
        out["aux_errors"] = [float(e / total["count"]) for e in total["aux_errors"]]
    return out


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_after: int | None = None,
) -> RunResult | None:
    """Trains `config.model` on `config.dataset`, checkpointing and logging into `workdir`.

    Rerunning with the same workdir resumes from the latest checkpoint, or returns the stored
    result of a finished run. `stop_after` ends the process's work after that many steps (as an
    interruption would), returning None; the next call resumes.
    """
    check_workdir(workdir)
    _check_same_config(workdir, config)
    result_path = os.path.join(workdir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return RunResult(**json.load(f))
    parallel.check_batch_size(config.batch_size)
    parallel.check_batch_size(config.eval_batch_size, "eval_batch_size")
    verbose = config.verbose and jax.process_index() == 0
    say = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)

    data = _load_data(config, workdir)
    model = create_model(config, data.train.num_classes)
    mesh = parallel.create_mesh()
    state = parallel.replicate(mesh, create_train_state(model, config, data.image_shape))
    num_params = int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))

    parallel.sync("cnn_cases:setup")  # processes start the checkpoint manager together
    ckpt = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True),
    )
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(start, args=ocp.args.StandardRestore(state))
        say(f"resumed from the checkpoint at step {start}")
    writer = MetricsWriter(workdir, start)
    seconds_before = max([r["seconds"] for r in writer.read("train")] or [0.0])

    dropout_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
    p_train = parallel.SyncedJit(
        functools.partial(train_step, aux_loss_weight=config.aux_loss_weight),
        "train_step",
        mesh=mesh,
        donate_argnums=0,
    )
    p_eval = parallel.SyncedJit(
        functools.partial(eval_step, with_aux=has_aux_heads(model)), "eval_step", mesh=mesh
    )
    pipeline = data_lib.Pipeline(
        data.train,
        global_batch_size=config.batch_size,
        seed=config.seed,
        augment=config.augment,
        mean=data.mean,
        pad_to=config.pad_to,
        crop_padding=config.crop_padding,
        flip=config.flip,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    end = config.num_steps if stop_after is None else min(config.num_steps, start + stop_after)
    batches = pipeline.iterate(
        start, end - start, prefetch=config.prefetch, put=lambda b: parallel.global_batch(mesh, *b)
    )

    def evaluate(split: data_lib.Split, limit: int | None) -> dict[str, float]:
        return _evaluate(state, split, config, data.mean, limit, p_eval, mesh)

    pending: list[tuple[int, dict[str, jax.Array]]] = []
    last_good = start

    def flush() -> dict[str, float]:
        """Brings pending metrics to the host; stops the run on a non-finite loss."""
        nonlocal pending
        host = jax.device_get(pending)
        pending = []
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

    t_start = time.perf_counter()
    t_last, step_last = t_start, start
    say(
        f"{config.model}: {num_params:,} parameters, {config.num_steps} steps of "
        f"{config.batch_size} on {jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    step = start
    try:
        for step in range(start, end):
            images, labels = next(batches)
            state, metrics = p_train(state, images, labels, dropout_key=dropout_key)
            pending.append((step, metrics))
            done = step + 1
            if done == start + 1:
                # The first step includes compilation: time the rate from here.
                jax.block_until_ready(metrics)
                say(f"  first step (compile + run) {time.perf_counter() - t_start:.1f}s")
                t_last, step_last = time.perf_counter(), done
            is_ckpt = config.checkpoint_every and done % config.checkpoint_every == 0
            is_log = done % config.log_every == 0 or done == config.num_steps
            is_eval = config.eval_every and done % config.eval_every == 0
            if is_log or is_ckpt or is_eval:
                mean_metrics = flush()
                now = time.perf_counter()
                if is_log and mean_metrics:
                    values = {**mean_metrics, "seconds": seconds_before + now - t_start}
                    line = (
                        f"  step {done:>6}/{config.num_steps}  loss {mean_metrics['loss']:.4f}  "
                        f"train err {100 * mean_metrics['error']:5.1f}%"
                    )
                    if done > step_last:  # not right after the compile
                        rate = (done - step_last) * config.batch_size / max(now - t_last, 1e-9)
                        eta = (config.num_steps - done) * config.batch_size / rate
                        values["images_per_s"] = rate
                        line += f"  {rate:7.0f} img/s  ETA {_fmt_time(eta)}"
                    writer.write(done, "train", values)
                    say(line)
                    t_last, step_last = now, done
                if is_eval and done != config.num_steps:
                    tr = evaluate(data.train, config.curve_eval_examples)
                    te = evaluate(data.test, config.curve_eval_examples)
                    writer.write(done, "eval", _eval_row(tr, te))
                    t_last, step_last = time.perf_counter(), done
                if is_ckpt and done != config.num_steps:
                    ckpt.save(done, args=ocp.args.StandardSave(state))
                    last_good = done
    finally:
        batches.close()
        ckpt.wait_until_finished()
    if ckpt.latest_step() != end:
        ckpt.save(end, args=ocp.args.StandardSave(state), force=True)
        ckpt.wait_until_finished()
    if end < config.num_steps:
        writer.close()
        ckpt.close()
        return None

    train_m = evaluate(data.train, config.final_train_eval_examples)
    test_m = evaluate(data.test, config.final_test_eval_examples)
    writer.write(config.num_steps, "eval", _eval_row(train_m, test_m))
    train_rows = writer.read("train")
    seconds = max([r["seconds"] for r in train_rows] or [time.perf_counter() - t_start])
    result = RunResult(
        train_error=train_m["error"],
        test_error=test_m["error"],
        train_loss=train_m["loss"],
        test_loss=test_m["loss"],
        steps=config.num_steps,
        seconds=float(seconds),
        params=num_params,
        curves=[{k: v for k, v in r.items() if k != "kind"} for r in writer.read("eval")],
        aux_test_errors=test_m.get("aux_errors", []),
    )
    writer.close()
    ckpt.close()
    if jax.process_index() == 0:
        tmp = result_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(result), f, indent=2)
        os.replace(tmp, result_path)
    say(
        f"  done: train error {100 * result.train_error:.2f}%  test error "
        f"{100 * result.test_error:.2f}%  ({_fmt_time(result.seconds)})"
    )
    return result


def restore_checkpoint(workdir: str, step: int | None = None) -> dict[str, Any]:
    """The saved train state of `workdir` (latest step by default) as nested dicts of arrays."""
    with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints"))) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {workdir!r}")
        return mngr.restore(step, args=ocp.args.StandardRestore())


def _eval_row(train_m: dict[str, Any], test_m: dict[str, Any]) -> dict[str, float]:
    row = {"train_error": train_m["error"], "test_error": test_m["error"]}
    for k, e in enumerate(test_m.get("aux_errors", [])):
        row[f"aux{k + 1}_test_error"] = e
    return row


def has_aux_heads(model: nn.Module) -> bool:
    """Whether `model` has auxiliary classifiers that can run at inference (`with_aux`)."""
    return bool(getattr(model, "aux_logits", False)) and (
        "with_aux" in inspect.signature(model.__call__).parameters
    )
