"""The lecture's worked examples, computed on real Flax modules.

1x1 convolutions: on one channel a 1x1 conv multiplies by a number; on a volume
it is a fully connected layer applied at every pixel and shrinks channels while
keeping height and width. Inception's bottleneck: a 16-filter 1x1 conv before a
5x5 conv cuts multiply-adds about 10x. The lecture calls those counts
"parameters"; they are multiply-adds, and the parameters are given beside them.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases.analysis import costs

# The 6x6 matrix of the lecture's 1x1 convolution slide.
LECTURE_MATRIX = np.array(
    [
        [1, 2, 3, 6, 5, 8],
        [3, 5, 5, 1, 3, 4],
        [2, 1, 3, 4, 9, 3],
        [4, 7, 8, 5, 7, 9],
        [1, 5, 3, 7, 4, 8],
        [5, 4, 9, 8, 3, 5],
    ],
    dtype=np.float32,
)


def one_by_one_on_matrix(matrix: np.ndarray = LECTURE_MATRIX, value: float = 2.0) -> np.ndarray:
    """Convolves a 2-D matrix with a 1x1 filter of `value`: the matrix times `value`."""
    conv = nn.Conv(1, (1, 1), use_bias=False)
    params = {"params": {"kernel": jnp.full((1, 1, 1, 1), value, jnp.float32)}}
    out = conv.apply(params, jnp.asarray(matrix)[None, :, :, None])
    return np.asarray(out[0, :, :, 0])


@dataclasses.dataclass(frozen=True)
class VolumeExample:
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    params: int
    macs: int
    max_abs_diff_vs_dense: float  # 1x1 conv vs nn.Dense at every pixel, same weights


def one_by_one_on_volume(
    shape: tuple[int, int, int] = (28, 28, 192), filters: int = 32, seed: int = 0
) -> VolumeExample:
    """`filters` 1x1xC filters on an HxWxC volume: HxW kept, C -> filters; a Dense per pixel."""
    kx, kp = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (1, *shape))
    conv = nn.Conv(filters, (1, 1))
    variables = conv.init(kp, x)
    y_conv = conv.apply(variables, x)
    # The same kernel and bias as a Dense layer on each pixel's C-vector.
    dense_params = {
        "params": {
            "kernel": variables["params"]["kernel"].reshape(shape[-1], filters),
            "bias": variables["params"]["bias"],
        }
    }
    y_dense = nn.Dense(filters).apply(dense_params, x.reshape(-1, shape[-1]))
    diff = float(jnp.max(jnp.abs(y_conv.reshape(-1, filters) - y_dense)))
    cost = costs.model_cost(conv, shape)
    return VolumeExample(shape, tuple(y_conv.shape[1:]), cost.params, cost.macs, diff)


class DirectConv(nn.Module):
    """One 5x5 SAME conv, `filters` filters, as in the lecture's naive example."""

    filters: int = 32
    kernel: int = 5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return nn.Conv(
            self.filters, (self.kernel, self.kernel), name=f"conv{self.kernel}x{self.kernel}"
        )(x)


class BottleneckConv(nn.Module):
    """A 1x1 conv with `reduce` filters (the bottleneck), then the 5x5 conv."""

    filters: int = 32
    reduce: int = 16
    kernel: int = 5

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = nn.Conv(self.reduce, (1, 1), name="bottleneck1x1")(x)
        return nn.Conv(
            self.filters, (self.kernel, self.kernel), name=f"conv{self.kernel}x{self.kernel}"
        )(x)


@dataclasses.dataclass(frozen=True)
class BottleneckExample:
    direct: costs.ModelCost
    bottleneck: costs.ModelCost

    @property
    def ratio(self) -> float:
        return self.direct.macs / self.bottleneck.macs


def bottleneck_example(
    shape: tuple[int, int, int] = (28, 28, 192), filters: int = 32, reduce: int = 16
) -> BottleneckExample:
    """28x28x192 -> 5x5 conv, 32 filters, with and without a 16-filter 1x1 bottleneck."""
    return BottleneckExample(
        costs.model_cost(DirectConv(filters), shape),
        costs.model_cost(BottleneckConv(filters, reduce), shape),
    )


def report() -> str:
    """The lecture's two worked examples as text."""
    doubled = one_by_one_on_matrix()
    vol = one_by_one_on_volume()
    ex = bottleneck_example()
    fmt = costs.format_shape
    lines = [
        "1x1 convolution on a 6x6 matrix, filter value 2 (= the matrix times 2):",
        *("  " + " ".join(f"{v:4.0f}" for v in row) for row in doubled),
        "",
        f"1x1 convolution on a volume: {fmt(vol.input_shape)} * 32 filters of 1x1x192 -> "
        f"{fmt(vol.output_shape)}",
        f"  {vol.params:,} parameters, {vol.macs:,} multiply-adds; equal to a Dense(32) "
        f"applied at every pixel (max |difference| {vol.max_abs_diff_vs_dense:.1e})",
        "",
        "Inception bottleneck (the lecture calls these counts 'parameters'; they are "
        "multiply-adds):",
        f"  {fmt(ex.direct.input_shape)} -> 5x5 conv, 32 filters: "
        f"{ex.direct.macs:,} multiply-adds, {ex.direct.params:,} parameters",
    ]
    parts = " + ".join(f"{layer.macs:,}" for layer in ex.bottleneck.layers)
    lines.append(
        f"  with a 16-filter 1x1 bottleneck: {parts} = {ex.bottleneck.macs:,} multiply-adds, "
        f"{ex.bottleneck.params:,} parameters"
    )
    lines.append(f"  {ex.ratio:.1f}x fewer multiply-adds")
    return "\n".join(lines)
