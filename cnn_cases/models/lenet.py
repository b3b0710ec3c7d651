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

from cnn_cases.models import inits
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


# LeCun et al. 1998, Appendix C: "The weights were initialized with random values using a
# uniform distribution between -2.4/F_i and 2.4/F_i where F_i is the number of inputs (fan-in)
# of the unit which the connection belongs to." Biases start at 0.
PAPER_INIT = inits.Inits(conv=inits.lecun_1998(), dense=inits.lecun_1998(), head=inits.lecun_1998())
INITS = {"reference": PAPER_INIT, "paper": PAPER_INIT}
# That rule scales each layer's signal by 2.4/sqrt(3 F_in) (0.28 in C1, 0.07 in C5): the 1998
# net's summing subsampling and RBF output carry it, the modern net's average pools and linear
# output do not (its logits start at a standard deviation of 1e-5). The modern net takes
# Glorot & Bengio 2010's uniform init, as d2l's LeNet does (`xavier_uniform_`), zero biases.
GLOROT = nn.initializers.xavier_uniform()
MODERN_INITS = {
    "reference": inits.Inits(conv=GLOROT, dense=GLOROT, head=GLOROT),
    "paper": PAPER_INIT,
}


class _LeNet(nn.Module):
    """What both LeNet-5s share: 10 classes, inputs of at least 28x28 (28x28 zero-padded to
    32x32), valid convolutions."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    min_input_size: int = 28
    kernels: str = "auto"  # convolution/BatchNorm implementation: auto, onednn, xla
    weight_init: str = "reference"  # see `INITS`, `MODERN_INITS` and `cnn_cases.models.inits`

    def _input_and_conv(
        self, x: jax.Array, model_name: str, table: dict[str, inits.Inits]
    ) -> tuple[jax.Array, Callable[..., nn.Conv], inits.Inits]:
        """`x` checked against `min_input_size`, cast, padded to 32x32; the valid conv and the
        initialisers of `table`."""
        check_min_size(x, self.min_input_size, model_name)
        init = inits.choose(model_name, self.weight_init, table)
        x = pad_to_32(x.astype(self.dtype))
        conv = conv_factory(self.kernels, padding="VALID", dtype=self.dtype, kernel_init=init.conv)
        return x, conv, init


class LeNet5(_LeNet):
    """Modern LeNet-5: 6-16-120-84-10 with full C3; 61,706 parameters.

    `width_multiplier` scales the 6, 16, 120 and 84. Initialised with Glorot's uniform init
    (`MODERN_INITS`), or LeCun et al. 1998's (`weight_init="paper"`).
    """

    activation: str = "tanh"
    pool: str = "avg"
    width_multiplier: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x, conv, init = self._input_and_conv(x, "lenet5", MODERN_INITS)
        act = _activation(self.activation)
        w = lambda n: scaled(n, self.width_multiplier)
        dense = lambda n, name, k: nn.Dense(n, dtype=self.dtype, kernel_init=k, name=name)
        x = act(conv(w(6), (5, 5), name="c1")(x))
        x = Pool(self.pool, 2, 2, name="s2")(x)
        x = act(conv(w(16), (5, 5), name="c3")(x))
        x = Pool(self.pool, 2, 2, name="s4")(x)
        x = Flatten(name="flatten")(x)
        x = act(dense(w(120), "c5", init.dense)(x))
        x = act(dense(w(84), "f6", init.dense)(x))
        return dense(self.num_classes, "output", init.head)(x).astype(jnp.float32)


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
    weight_init: str = "reference"  # each map's own fan-in in LeCun's rule; "flax": as before

    def _kernel_init(self, k: int, rows: int) -> inits.Initializer:
        if self.weight_init == "flax":  # a truncated normal of variance 1/(k^2 * mean fan-in)
            fan_in = k * k * rows / len(self.table)
            return nn.initializers.variance_scaling(1.0 / fan_in, "fan_in", "truncated_normal")
        # Map j sees k*k*len(table[j]) inputs: 75, 100 or 150.
        bounds = np.concatenate([np.full(len(col), 2.4 / (k * k * len(col))) for col in self.table])

        def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
            return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * jnp.asarray(bounds, dtype)

        return init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        rows = np.array([i for col in self.table for i in col])
        cols = np.array([j for j, col in enumerate(self.table) for _ in col])
        k = self.kernel_size
        packed = self.param("kernel", self._kernel_init(k, len(rows)), (k, k, len(rows)))
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
    Initialised as the paper's Appendix C (`INITS`): every connection's weight uniform in
    +-2.4/F_in, F_in its unit's fan-in (C3's maps see 75, 100 or 150 inputs); biases 0; each
    subsampling coefficient 1, so S2 and S4 start as plain 2x2 sums.
    """

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x, conv, init = self._input_and_conv(x, "lenet5_1998", INITS)
        act = ACTIVATIONS["scaled_tanh"]
        x = conv(6, (5, 5), name="c1")(x)
        x = act(Subsampling(name="s2")(x))
        x = PartialConv(kernels=self.kernels, weight_init=self.weight_init, name="c3")(x)
        x = act(Subsampling(name="s4")(x))
        x = act(conv(120, (5, 5), name="c5")(x))
        x = Flatten(name="flatten")(x)
        x = act(nn.Dense(84, dtype=self.dtype, kernel_init=init.dense, name="f6")(x))
        centres = self.variable(
            "constants",
            "rbf_centres",
            lambda: jnp.sign(jax.random.normal(jax.random.PRNGKey(1998), (84, self.num_classes))),
        ).value
        logits = -jnp.sum(jnp.square(x[:, :, None] - centres[None]), axis=1)
        return logits.astype(jnp.float32)
