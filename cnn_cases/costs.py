"""Cost accounting: parameters, multiply-adds and output shape of every layer.

Layers are found by intercepting module calls while `jax.eval_shape` traces
`model.init`, so nothing is allocated or compiled and no per-model table is
kept by hand. Multiply-adds follow the convention of the papers and torchvision:
a convolution costs H_out * W_out * C_out * k_h * k_w * C_in / groups per image
(padding included), a dense layer in * out per position; other layers cost 0.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One leaf layer: where it is, what it outputs, what it costs per image."""

    path: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Per-layer costs of a model at one input shape, per image."""

    input_shape: tuple[int, ...]
    layers: tuple[LayerCost, ...]
    params: int  # every entry of the `params` collection
    macs: int

    def table(self, *, max_rows: int | None = None) -> str:
        """A fixed-width table: layer, kind, output shape, parameters, multiply-adds, totals."""
        rows = [("layer", "kind", "output", "params", "mult-adds")]
        rows.append(("input", "", format_shape(self.input_shape), "", ""))
        layers = self.layers if max_rows is None else self.layers[:max_rows]
        for layer in layers:
            rows.append(
                (
                    layer.path,
                    layer.kind,
                    format_shape(layer.output_shape),
                    f"{layer.params:,}",
                    f"{layer.macs:,}",
                )
            )
        if max_rows is not None and len(self.layers) > max_rows:
            rows.append((f"... {len(self.layers) - max_rows} more layers", "", "", "", ""))
        rows.append(("total", "", "", f"{self.params:,}", f"{self.macs:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        align = ["<", "<", "<", ">", ">"]
        lines = [
            "  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)).rstrip()
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(-1, "-" * len(lines[0]))
        return "\n".join(lines)


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _first_array(tree: Any) -> Any:
    leaves = jax.tree_util.tree_leaves(tree)
    return leaves[0] if leaves else None


def _layer_macs(module: nn.Module, out: Any) -> int:
    """Conventional multiply-adds of a layer with a `kernel` (Conv, Dense, ...), per image."""
    kernel = module.variables.get("params", {}).get("kernel")
    if kernel is None or out is None:
        return 0
    # Every output position (all dims but batch and features) sees the whole kernel once;
    # grouped conv kernels already hold C_in / groups input channels.
    out_positions = math.prod(out.shape[1:-1])
    return int(out_positions * math.prod(kernel.shape))


def _tree_size(tree: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def _subtree(params: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(params, dict) or name not in params:
            return {}
        params = params[name]
    return params


def model_cost(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    train: bool = False,
    dtype: Any = jnp.float32,
) -> ModelCost:
    """Per-image costs of `model` on inputs of shape `input_shape` (H, W, C), via eval_shape.

    `train=True` also counts what runs only in training (auxiliary heads).
    """
    calls: list[tuple[tuple[str, ...], str, tuple[int, ...], int, int]] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            module = context.module
            first = _first_array(out)
            shape = tuple(first.shape[1:]) if first is not None else ()
            own = _tree_size(module.variables.get("params", {}))
            calls.append(
                (tuple(module.path), type(module).__name__, shape, _layer_macs(module, first), own)
            )
        return out

    with nn.intercept_methods(interceptor):
        variables = _init_shapes(model, input_shape, train=train, dtype=dtype)
    params = variables.get("params", {})
    paths = {c[0] for c in calls}
    # A leaf is a call whose path is no other call's prefix (blocks and the model itself drop out).
    parents = {p[:i] for p in paths for i in range(len(p))}
    layers, scanned = [], set()
    for path, kind, shape, macs, own in calls:
        if path in parents or path in scanned:
            continue
        stored = _tree_size(_subtree(params, path))
        # Under nn.scan a layer's parameters are stacked `repeats` times, and flax traces its
        # body more than once: count it once, `repeats` times over.
        repeats = stored // own if own and stored > own else 1
        if repeats > 1:
            scanned.add(path)
        layers.append(
            LayerCost("/".join(path) or type(model).__name__, kind, shape, stored, macs * repeats)
        )
    return ModelCost(
        input_shape=tuple(input_shape),
        layers=tuple(layers),
        params=_tree_size(params),
        macs=sum(layer.macs for layer in layers),
    )


def _init_shapes(
    model: nn.Module, input_shape: Sequence[int], *, train: bool, dtype: Any = jnp.float32
) -> Any:
    """`model.init` traced by eval_shape: shapes only, nothing allocated or compiled."""
    kwargs = {"train": train} if "train" in inspect.signature(model.__call__).parameters else {}
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda: model.init(rngs, jnp.zeros((1, *input_shape), dtype), **kwargs))


def count_params(model: nn.Module, input_shape: Sequence[int], *, train: bool = True) -> int:
    """Number of entries in the `params` collection (BN scale/bias count; running stats do not)."""
    return _tree_size(_init_shapes(model, input_shape, train=train).get("params", {}))


def xla_flops(model: nn.Module, input_shape: Sequence[int], *, batch: int = 1) -> float:
    """FLOPs of one inference forward pass as XLA's cost analysis counts them (compiles).

    The model runs on XLA's own kernels: XLA counts nothing inside the oneDNN custom calls.
    """
    if "kernels" in {f.name for f in dataclasses.fields(model)}:
        model = model.clone(kernels="xla")
    x = jnp.zeros((batch, *input_shape), jnp.float32)
    variables = _init_shapes(model, input_shape, train=False)
    kwargs = {"train": False} if "train" in inspect.signature(model.__call__).parameters else {}
    fn = jax.jit(lambda v, x: model.apply(v, x, **kwargs))
    compiled = fn.lower(variables, x).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis["flops"])


def conv_macs(
    in_shape: Sequence[int], filters: int, kernel: int, *, stride: int = 1, padding: str = "SAME"
) -> int:
    """Closed-form multiply-adds of one conv layer on an (H, W, C) input, for cross-checks."""
    h, w, c = in_shape
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    return int(np.int64(oh) * ow * filters * kernel * kernel * c)
