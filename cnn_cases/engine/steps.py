"""What one step of training computes: the train state, its optimiser, the steps.

Pure functions, jitted by the engine (`cnn_cases.engine.train`) over a device mesh: SGD with
momentum, L2 weight decay and a step schedule; `train_step` with auxiliary heads' losses,
gradient accumulation and a finiteness flag for the NaN guard; `eval_step` summing top-1 and
top-5 errors (top-5 for more than 10 classes) over the real rows of a padded batch. Several
seeds are one program: their states stacked on a leading axis (`create_seed_states`) and the
steps `jax.vmap`-ed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    batch_stats: Any = None


# ----------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """lr, x lr_decay at each boundary (or every `lr_decay_every` steps, when set);
    warmup_lr for the first warmup_steps."""
    if config.get("lr_decay_every", 0):
        main = optax.exponential_decay(
            config.learning_rate, config.lr_decay_every, config.lr_decay, staircase=True
        )
    else:
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
    """SGD with momentum and L2 weight decay (added to the gradient, as in He et al.); the loss's
    gradient first clipped to a global norm of `grad_clip_norm` where that is > 0."""
    clip = config.get("grad_clip_norm", 0.0)
    return optax.chain(
        optax.clip_by_global_norm(clip) if clip else optax.identity(),
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


# The initial weights are drawn from RBG keys (XLA's RngBitGenerator): under threefry every
# parameter shape is its own compiled program, about 10 s of compiling for a CIFAR ResNet.
INIT_KEY_IMPL = "rbg"


def _initializer(model: nn.Module, image_shape: tuple[int, ...]) -> Any:
    """seed -> the model's variables (auxiliary heads included) initialised from that seed.

    Eager, not jitted: one image through the model op by op costs less than compiling the
    whole init, and the draws' programs are cached across the nets of a study.
    """
    x = jnp.zeros((1, *image_shape), jnp.float32)

    def variables(seed: int) -> Any:
        key = jax.random.key(seed, impl=INIT_KEY_IMPL)
        return model.init({"params": key, "dropout": jax.random.fold_in(key, 1)}, x, train=True)

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


def initial_state(
    model: nn.Module,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, ...],
    variables: Mapping[str, Any] | None = None,
) -> TrainState:
    """The state a run starts from: one seed's (from `variables` if given), or every seed's
    of `seed_list(config)` stacked."""
    if len(seed_list(config)) == 1:
        return create_train_state(model, config, image_shape, variables)
    if variables is not None:
        raise ValueError(f"seeds={config.seeds}: initial variables are for one seed (valid: 1)")
    return create_seed_states(model, config, image_shape)


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
    accumulate: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch; returns the new state and batch metrics.

    `accumulate` > 1 splits the batch into that many micro-batches, run one after another
    (`lax.scan`, so only one micro-batch's activations are live): the update uses their mean
    gradient, and BatchNorm's statistics see one micro-batch at a time, as on a device that
    holds only that many. Each device keeps its shard of every micro-batch.

    `dropout_key` is positional so that `vmap` can map over it (one key per seed)."""
    rng = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array, key: jax.Array):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        out, updates = state.apply_fn(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        logits, aux = _split_outputs(out)
        main = jnp.mean(cross_entropy(logits, y))
        loss = main + aux_loss_weight * sum(jnp.mean(cross_entropy(a, y)) for a in aux)
        errors = jnp.mean(jnp.argmax(logits, -1) != y)
        return loss, (main, errors, updates.get("batch_stats", {}))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accumulate == 1:
        (loss, (main, error, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, images, labels, rng
        )
    else:
        # Row i of micro-batch j is row i * accumulate + j: a device's contiguous shard of the
        # batch holds its shard of every micro-batch.
        micro = lambda a: jnp.swapaxes(a.reshape(-1, accumulate, *a.shape[1:]), 0, 1)

        def one(carry: Any, xs: Any) -> tuple[Any, Any]:
            grads_sum, stats = carry
            x, y, j = xs
            (lo, (m, e, stats)), g = grad_fn(state.params, stats, x, y, jax.random.fold_in(rng, j))
            return (jax.tree_util.tree_map(jnp.add, grads_sum, g), stats), (lo, m, e)

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        xs = (micro(images), micro(labels), jnp.arange(accumulate))
        (grads, batch_stats), (losses, mains, errors) = jax.lax.scan(
            one, (zeros, state.batch_stats), xs
        )
        grads = jax.tree_util.tree_map(lambda g: g / accumulate, grads)
        loss, main, error = jnp.mean(losses), jnp.mean(mains), jnp.mean(errors)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    finite = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(state.params)])
    )
    metrics = {
        "loss": loss,
        "main_loss": main,
        "error": error,
        "params_finite": finite.astype(jnp.float32),
    }
    return state, metrics


# Top-5 error is counted for more classes than this (ImageNet, CIFAR-100; not 10-class sets).
TOP5_ABOVE = 10


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
    if logits.shape[-1] > TOP5_ABOVE:  # top-5: the label is not among the 5 largest logits
        top5 = jax.lax.top_k(logits, 5)[1]
        missed = jnp.all(top5 != labels[:, None], axis=-1).astype(jnp.float32)
        out["top5_errors"] = jnp.sum(missed * mask)
    if aux:
        out["aux_errors"] = jnp.stack([wrong(h) for h in aux])
    return out
