"""How each model's weights start, as its paper or its reference implementation says.

Every model takes `weight_init`, one of `INITS`:

- "reference": the model's default, cited in its docstring: the paper's own rule where it
  trains at every width the presets use, else the reference implementation's fan-scaled one
  (torchvision's Kaiming, BVLC's Xavier);
- "paper": the paper's stated rule (absolute standard deviations included); a one-line error
  for a paper that states none;
- "flax": flax's defaults (LeCun normal, variance 1/fan_in, zero biases), which no paper used;
  kept to compare with and to read runs made before the models had their own.

BatchNorm's scale and bias start at 1 and 0 under every init.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

INITS = ("reference", "paper", "flax")

zeros = nn.initializers.zeros
ones = nn.initializers.ones


def constant(value: float) -> Initializer:
    """Every entry `value`."""
    return nn.initializers.constant(value)


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output unit of a kernel shaped (..., in, out): k*k*C_in/groups, or C_in."""
    n = 1
    for d in shape[:-1]:
        n *= d
    return n


def fan_out(shape: tuple[int, ...]) -> int:
    """Outputs fed per input unit: k*k*C_out for a convolution, C_out for a dense layer."""
    n = shape[-1]
    for d in shape[:-2]:
        n *= d
    return n


def he_normal(mode: str = "fan_in") -> Initializer:
    """He et al. 2015: N(0, 2/n), n the fan-in (or fan-out); torch's `kaiming_normal_`."""
    return nn.initializers.variance_scaling(2.0, mode, "normal")


def lecun_normal() -> Initializer:
    """N(0, 1/fan_in), untruncated: the variance that keeps a linear layer's signal."""
    return nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def normal(std: float) -> Initializer:
    """N(0, std^2)."""
    return nn.initializers.normal(std)


def lecun_1998() -> Initializer:
    """LeCun et al. 1998, Appendix C: uniform in [-2.4/F_in, 2.4/F_in]."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        bound = 2.4 / fan_in(shape)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear() -> Initializer:
    """PyTorch's default for a Linear or Conv weight (and bias): uniform in +-1/sqrt(fan_in)."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias(fan: int) -> Initializer:
    """PyTorch's default bias of a layer with `fan` inputs: uniform in +-1/sqrt(fan)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        bound = fan**-0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def caffe_xavier() -> Initializer:
    """Caffe's "xavier" filler (its default FAN_IN norm): uniform in +-sqrt(3/fan_in)."""
    return nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


FLAX_KERNEL = nn.initializers.lecun_normal()


@dataclasses.dataclass(frozen=True)
class Inits:
    """A model's initialisers: convolution kernels, hidden dense layers and the classifier,
    with their biases. `bias_overrides` names layers whose bias starts at a constant."""

    conv: Initializer = FLAX_KERNEL
    dense: Initializer = FLAX_KERNEL
    head: Initializer = FLAX_KERNEL
    conv_bias: Initializer = zeros
    dense_bias: Initializer = zeros
    head_bias: Initializer = zeros
    bias_overrides: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def classifier(self, features: int, *, dtype: Any, name: str) -> nn.Dense:
        """The classifier layer: a Dense of `features` outputs with the head's initialisers."""
        return nn.Dense(
            features, dtype=dtype, kernel_init=self.head, bias_init=self.head_bias, name=name
        )

    def bias(self, name: str, default: Initializer) -> Initializer:
        """The bias of layer `name`: its override, else `default`."""
        if name in self.bias_overrides:
            return constant(self.bias_overrides[name])
        return default


FLAX = Inits()


def choose(model: str, init: str, table: Mapping[str, Inits]) -> Inits:
    """`table[init]` (FLAX for "flax"); a one-line ValueError naming what is valid."""
    if init == "flax":
        return FLAX
    if init not in table:
        valid = ", ".join(i for i in INITS if i in table or i == "flax")
        raise ValueError(f"{model}: init {init!r} is not valid (valid: {valid})")
    return table[init]
