"""LeNet-5 (LeCun et al., 1998): CONV-POOL-CONV-POOL-FC-FC-OUTPUT.

Valid (unpadded) convolutions and average pooling: height and width shrink
(32 -> 28 -> 14 -> 10 -> 5) while channels grow (1 -> 6 -> 16).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases.models.layers import (
    Flatten,
    Pool,
    check_min_size,
    conv_factory,
    conv_function,
    scaled,
)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    # LeCun et al. 1998, Appendix A: f(a) = A tanh(S a), A = 1.7159, S = 2/3.
    "scaled_tanh": lambda x: 1.7159 * jnp.tanh(x * (2.0 / 3.0)),
}


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not valid (valid: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def pad_to_32(x: jax.Array) -> jax.Array:
    """28x28 digits are zero-padded by 2 to 32x32, as LeCun et al. did."""
    if x.shape[1:3] == (28, 28):
        x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return x


class _LeNet(nn.Module):
    """What both LeNet-5s share: 10 classes, inputs of at least 28x28 (28x28 zero-padded to
    32x32), valid convolutions."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    min_input_size: int = 28
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla

    def _input_and_conv(
        self, x: jax.Array, model_name: str
    ) -> tuple[jax.Array, Callable[..., nn.Conv]]:
        """`x` checked against `min_input_size`, cast, padded to 32x32; the valid conv."""
        check_min_size(x, self.min_input_size, model_name)
        x = pad_to_32(x.astype(self.dtype))
        return x, conv_factory(self.kernels, padding="VALID", dtype=self.dtype)


class LeNet5(_LeNet):
    """Modern LeNet-5: 6-16-120-84-10 with full C3; 61,706 parameters.

    `width_multiplier` scales the 6, 16, 120 and 84.
    """

    activation: str = "tanh"
    pool: str = "avg"
    width_multiplier: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x, conv = self._input_and_conv(x, "lenet5")
        act = _activation(self.activation)
        w = lambda n: scaled(n, self.width_multiplier)
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name)
        x = act(conv(w(6), (5, 5), name="c1")(x))
        x = Pool(self.pool, 2, 2, name="s2")(x)
        x = act(conv(w(16), (5, 5), name="c3")(x))
        x = Pool(self.pool, 2, 2, name="s4")(x)
        x = Flatten(name="flatten")(x)
        x = act(dense(w(120), "c5")(x))
        x = act(dense(w(84), "f6")(x))
        return dense(self.num_classes, "output")(x).astype(jnp.float32)


# LeCun et al. 1998, Table I: which S2 maps (rows) feed each C3 map (columns).
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (4, 5, 0),
    (5, 0, 1),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (3, 4, 5, 0),
    (4, 5, 0, 1),
    (5, 0, 1, 2),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class Subsampling(nn.Module):
    """S2/S4 of the paper: sum of a 2x2 window times one trainable coefficient, plus a bias."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        coeff = self.param("coeff", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return nn.avg_pool(x, (2, 2), strides=(2, 2)) * 4.0 * coeff + bias


class PartialConv(nn.Module):
    """C3 of the paper: 5x5 conv whose output maps see only the inputs in `C3_TABLE`."""

    table: tuple[tuple[int, ...], ...] = C3_TABLE
    kernel_size: int = 5
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        rows = np.array([i for col in self.table for i in col])
        cols = np.array([j for j, col in enumerate(self.table) for _ in col])
        k = self.kernel_size
        fan_in = k * k * len(rows) / len(self.table)
        packed = self.param(
            "kernel",
            nn.initializers.variance_scaling(1.0 / fan_in, "fan_in", "truncated_normal"),
            (k, k, len(rows)),
        )
        bias = self.param("bias", nn.initializers.zeros, (len(self.table),))
        kernel = jnp.zeros((k, k, x.shape[-1], len(self.table)), x.dtype)
        kernel = kernel.at[:, :, rows, cols].set(packed.astype(x.dtype))
        y = conv_function(self.kernels)(
            x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + bias


class LeNet5Paper(_LeNet):
    """LeNet-5 as in LeCun et al. 1998: partial C3, trainable subsampling, RBF output.

    60,000 trainable parameters: C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + F6 10,164.
    The RBF output's 84x10 centres were fixed in the paper; here they are fixed +-1 codes
    kept in the `constants` collection, and logits are minus the squared distance.
    """

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x, conv = self._input_and_conv(x, "lenet5_1998")
        act = ACTIVATIONS["scaled_tanh"]
        x = conv(6, (5, 5), name="c1")(x)
        x = act(Subsampling(name="s2")(x))
        x = PartialConv(kernels=self.kernels, name="c3")(x)
        x = act(Subsampling(name="s4")(x))
        x = act(conv(120, (5, 5), name="c5")(x))
        x = Flatten(name="flatten")(x)
        x = act(nn.Dense(84, dtype=self.dtype, name="f6")(x))
        centres = self.variable(
            "constants",
            "rbf_centres",
            lambda: jnp.sign(jax.random.normal(jax.random.PRNGKey(1998), (84, self.num_classes))),
        ).value
        logits = -jnp.sum(jnp.square(x[:, :, None] - centres[None]), axis=1)
        return logits.astype(jnp.float32)
