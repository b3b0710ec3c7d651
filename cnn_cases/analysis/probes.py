"""Looking inside trained CIFAR plain nets and ResNets: the lecture's identity argument, layer
responses (He et al. 2016, Figure 7) and per-layer gradient norms.

    deepen(variables, deep_model, ...)      the net with W = 0, b = 0 blocks appended
    layer_responses(model, variables, x)    std of each 3x3 layer's response, in layer order
    gradient_norms(model, variables, x, y)  |dL/dW| of each conv kernel, in layer order
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")


def layer_order(name: str) -> tuple[int, int, int]:
    """Sort key of a module path of a CIFAR net: stem, stage by stage, block by block, head."""
    parts = name.split("/")
    if parts[0] in ("conv_init", "bn_init"):
        return (0, 0, 0)
    if parts[0] == "head":
        return (1 << 20, 0, 0)
    m = _BLOCK.match(parts[0])
    if not m:
        raise ValueError(f"{name!r} is not a layer of a CIFAR plain net or ResNet")
    digits = re.sub(r"\D", "", parts[-1]) if len(parts) > 1 else ""
    return (int(m.group(1)), int(m.group(2)), int(digits or 0))


def deepen(
    variables: Mapping[str, Any],
    deep_model: nn.Module,
    image_shape: tuple[int, int, int],
    *,
    blocks_per_stage: int,
    seed: int = 0,
) -> dict[str, Any]:
    """`variables` of a CIFAR net with `blocks_per_stage` blocks, copied into `deep_model` (same
    widths, more blocks per stage). The appended blocks (the last ones of each stage) keep a
    fresh initialisation except their last BatchNorm, whose scale and bias are 0: the lecture's
    W = 0, b = 0. A residual block then outputs g(0 + a[l]) = a[l] (a[l] >= 0 after a ReLU); a
    plain block outputs g(0) = 0.
    """
    x = jnp.zeros((1, *image_shape), jnp.float32)
    fresh = jax.jit(lambda: deep_model.init(jax.random.PRNGKey(seed), x, train=False))()
    old = flax.traverse_util.flatten_dict(dict(variables))
    new = {}
    for key, value in flax.traverse_util.flatten_dict(dict(fresh)).items():
        collection, module, *rest = key
        m = _BLOCK.match(module)
        appended = m is not None and int(m.group(2)) > blocks_per_stage
        if not appended:
            if key not in old or np.shape(old[key]) != np.shape(value):
                raise ValueError(f"{'/'.join(key)}: the deep net does not extend the shallow one")
            new[key] = old[key]
        elif collection == "params" and rest[0] == "bn2":
            new[key] = jnp.zeros_like(value)  # scale and bias of the last BatchNorm
        else:
            new[key] = value
    return flax.traverse_util.unflatten_dict(new)


def layer_responses(
    model: nn.Module, variables: Mapping[str, Any], images: jax.Array
) -> list[tuple[str, float]]:
    """He et al. Figure 7: the standard deviation of each 3x3 layer's response (its BatchNorm's
    output, before the addition and the ReLU), in eval mode, in layer order.

    The std is taken per channel over images and positions, then averaged over channels. The
    model runs on XLA's kernels here: the oneDNN BatchNorm fuses the addition and ReLU and
    never materialises the response.
    """
    probe = model.clone(kernels="xla")
    _, state = jax.jit(lambda v, x: probe.apply(v, x, train=False, mutable=["intermediates"]))(
        variables, images
    )
    out = []
    for key, (y,) in flax.traverse_util.flatten_dict(state["intermediates"]).items():
        name = "/".join(key[:-1])
        std = jnp.mean(jnp.std(y.astype(jnp.float32), axis=(0, 1, 2)))
        out.append((name, float(std)))
    return sorted(out, key=lambda item: layer_order(item[0]))


def gradient_norms(
    model: nn.Module, variables: Mapping[str, Any], images: jax.Array, labels: jax.Array
) -> list[tuple[str, float]]:
    """|dL/dW| (Frobenius) of every convolution kernel for one batch, BatchNorm in training
    mode as in a train step, in layer order: does the gradient vanish towards the input?"""

    def loss(params: Any) -> jax.Array:
        logits, _ = model.apply(
            {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.jit(jax.grad(loss))(variables["params"])
    out = [
        ("/".join(key[:-1]), float(jnp.linalg.norm(g)))
        for key, g in flax.traverse_util.flatten_dict(grads).items()
        if key[-1] == "kernel" and g.ndim == 4
    ]
    return sorted(out, key=lambda item: layer_order(item[0]))
