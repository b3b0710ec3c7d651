"""Cost accounting: parameters, multiply-adds and output shape of every layer.

Layers are found by intercepting module calls while `jax.eval_shape` traces
`model.init`, so nothing is allocated or compiled and no per-model table is
kept by hand. Multiply-adds follow the convention of the papers and torchvision:
a convolution costs H_out * W_out * C_out * k_h * k_w * C_in / groups per image
(padding included), a dense layer in * out per position; other layers cost 0.
Convolutions also record their geometry (`ConvGeometry`), enough to rebuild the
`lax.conv_general_dilated` call on its own.
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
from flax.linen.linear import canonicalize_padding
from jax import lax

from cnn_cases.report.tables import format_table


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """What a convolution layer computes, per image: enough to rebuild its lax call."""

    input_shape: tuple[int, ...]  # spatial dimensions and channels, without the batch
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]  # (low, high) per spatial dimension, resolved
    dilation: tuple[int, ...]  # of the kernel
    feature_groups: int


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One leaf layer: where it is, what it outputs, what it costs per image.

    `conv` is the geometry of an `nn.Conv` layer, None for every other kind.
    """

    path: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    macs: int
    conv: ConvGeometry | None = None


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Per-layer costs of a model at one input shape, per image."""

    input_shape: tuple[int, ...]
    layers: tuple[LayerCost, ...]
    params: int  # every entry of the `params` collection
    macs: int

    def table(self, *, max_rows: int | None = None) -> str:
        """A fixed-width table: layer, kind, output shape, parameters, multiply-adds, totals."""
        rows = [("input", "", format_shape(self.input_shape), "", "")]
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
        header = ("layer", "kind", "output", "params", "mult-adds")
        return format_table(header, rows, align="<<<>>", rules=(len(rows) - 1,))


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


def _conv_geometry(module: nn.Module, x: Any) -> ConvGeometry | None:
    """The geometry of an `nn.Conv` call on input `x`; None for any other module."""
    if not isinstance(module, nn.Conv):
        return None
    kernel = tuple(module.kernel_size)
    rank = len(kernel)

    def per_dim(value: Any) -> tuple[int, ...]:
        value = 1 if value is None else value
        return (value,) * rank if isinstance(value, int) else tuple(value)

    in_shape = tuple(x.shape[-(rank + 1) :])
    strides, dilation = per_dim(module.strides), per_dim(module.kernel_dilation)
    dilated = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    padding = module.padding
    if padding == "CAUSAL":
        pads = [(k - 1, 0) for k in dilated]
    elif isinstance(padding, str):  # CIRCULAR and REFLECT pad the input as SAME would
        padtype = "SAME" if padding in ("CIRCULAR", "REFLECT") else padding
        pads = lax.padtype_to_pads(in_shape[:-1], dilated, strides, padtype)
    else:
        pads = canonicalize_padding(padding, rank)
    return ConvGeometry(
        input_shape=in_shape,
        kernel_size=kernel,
        strides=strides,
        padding=tuple((int(lo), int(hi)) for lo, hi in pads),
        dilation=dilation,
        feature_groups=module.feature_group_count,
    )


def count(tree: Any) -> int:
    """Number of entries in a tree of arrays or shapes (e.g. a `params` collection)."""
    return int(sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(tree)))


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
    calls: list[tuple[tuple[str, ...], str, tuple[int, ...], int, int, ConvGeometry | None]] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            module = context.module
            first = _first_array(out)
            shape = tuple(first.shape[1:]) if first is not None else ()
            own = count(module.variables.get("params", {}))
            macs = _layer_macs(module, first)
            conv = _conv_geometry(module, args[0]) if args else None
            calls.append((tuple(module.path), type(module).__name__, shape, macs, own, conv))
        return out

    with nn.intercept_methods(interceptor):
        variables = init_shapes(model, input_shape, train=train, dtype=dtype)
    params = variables.get("params", {})
    paths = {c[0] for c in calls}
    # A leaf is a call whose path is no other call's prefix (blocks and the model itself drop out).
    parents = {p[:i] for p in paths for i in range(len(p))}
    layers, scanned = [], set()
    for path, kind, shape, macs, own, conv in calls:
        if path in parents or path in scanned:
            continue
        stored = count(_subtree(params, path))
        # Under nn.scan a layer's parameters are stacked `repeats` times, and flax traces its
        # body more than once: count it once, `repeats` times over.
        repeats = stored // own if own and stored > own else 1
        if repeats > 1:
            scanned.add(path)
        name = "/".join(path) or type(model).__name__
        layers.append(LayerCost(name, kind, shape, stored, macs * repeats, conv))
    return ModelCost(
        input_shape=tuple(input_shape),
        layers=tuple(layers),
        params=count(params),
        macs=sum(layer.macs for layer in layers),
    )


def init_shapes(
    model: nn.Module, input_shape: Sequence[int], *, train: bool, dtype: Any = jnp.float32
) -> Any:
    """The variables of `model.init` on one (H, W, C) image, as shapes (`jax.eval_shape`).

    Nothing is allocated or compiled. `train` goes to the model when its call takes it.
    """
    kwargs = {"train": train} if "train" in inspect.signature(model.__call__).parameters else {}
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda: model.init(rngs, jnp.zeros((1, *input_shape), dtype), **kwargs))


def count_params(model: nn.Module, input_shape: Sequence[int], *, train: bool = True) -> int:
    """Number of entries in the `params` collection (BN scale/bias count; running stats do not)."""
    return count(init_shapes(model, input_shape, train=train).get("params", {}))


def xla_flops(model: nn.Module, input_shape: Sequence[int], *, batch: int = 1) -> float:
    """FLOPs of one inference forward pass as XLA's cost analysis counts them (compiles).

    The model runs on XLA's own kernels: XLA counts nothing inside the oneDNN custom calls.
    """
    if "kernels" in {f.name for f in dataclasses.fields(model)}:
        model = model.clone(kernels="xla")
    x = jnp.zeros((batch, *input_shape), jnp.float32)
    variables = init_shapes(model, input_shape, train=False)
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
