"""Network in Network (Lin et al. 2014), CIFAR-10 model."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

from cnn_cases.analysis import costs
from cnn_cases.models import nin

KEY = jax.random.PRNGKey(0)
NIN_PARAMS = 966_986


def init_shapes(model, hw: int):
    return costs.init_shapes(model, (hw, hw, 3), train=True)


def random_variables(model, x: jax.Array, seed: int = 0):
    """`model.init`'s tree filled by numpy (eager initializers compile one program per shape)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(KEY, x))

    def fill(leaf):
        fan_in = math.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 100
        return jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map(fill, shapes)


def test_parameter_count():
    params = init_shapes(nin.NiN(), 32)["params"]
    assert costs.count(params) == NIN_PARAMS
    per_block = {name: costs.count(block) for name, block in params.items()}
    assert per_block == {
        "mlpconv1": (75 * 192 + 192) + (192 * 160 + 160) + (160 * 96 + 96),
        "mlpconv2": (25 * 96 * 192 + 192) + 2 * (192 * 192 + 192),
        "mlpconv3": (9 * 192 * 192 + 192) + (192 * 192 + 192) + (192 * 10 + 10),
    }
    # No fully connected head: the last 1x1 conv has one map per class.
    assert params["mlpconv3"]["mlp2"]["kernel"].shape == (1, 1, 192, 10)


def test_layer_shapes():
    model = nin.NiN()
    x = jnp.zeros((1, 32, 32, 3))
    variables = init_shapes(model, 32)
    logits, state = jax.eval_shape(
        lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables,
    )
    inter = state["intermediates"]
    shapes = {k: v["__call__"][0].shape[1:] for k, v in inter.items() if k != "__call__"}
    assert shapes == {
        "mlpconv1": (32, 32, 96),
        "pool1": (16, 16, 96),  # 3x3/2 max pool, ceil mode as the authors' Caffe model
        "drop1": (16, 16, 96),
        "mlpconv2": (16, 16, 192),
        "pool2": (8, 8, 192),
        "drop2": (8, 8, 192),
        "mlpconv3": (8, 8, 10),
        "pool3": (10,),
    }
    assert logits.shape == (1, 10) and logits.dtype == jnp.float32


def test_num_classes():
    params = init_shapes(nin.NiN(num_classes=100), 32)["params"]
    assert params["mlpconv3"]["mlp2"]["kernel"].shape == (1, 1, 192, 100)


def test_1x1_convs_are_a_fully_connected_net_at_every_pixel():
    block = nin.MlpConv((6, 5, 4), 1)
    x = jax.random.normal(KEY, (2, 3, 3, 7))
    variables = random_variables(block, x)
    p = variables["params"]
    y = x
    for name in ("conv", "mlp1", "mlp2"):
        y = jax.nn.relu(y @ p[name]["kernel"][0, 0] + p[name]["bias"])
    np.testing.assert_allclose(block.apply(variables, x), y, rtol=1e-5, atol=1e-5)


def test_min_input_size():
    model = nin.NiN()
    assert model.min_input_size == 6
    init_shapes(model, 6)
    with pytest.raises(ValueError, match="5x5"):
        init_shapes(model, 5)


class NiNForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward(self):
        model = nin.NiN()
        x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
        variables = random_variables(model, x)
        out = self.variant(lambda v, x: model.apply(v, x, train=False))(variables, x)
        chex.assert_shape(out, (2, 10))
        chex.assert_tree_all_finite(out)
        # Inference is per image and deterministic.
        np.testing.assert_allclose(model.apply(variables, x[1:]), out[1:], rtol=1e-5, atol=1e-5)
        rngs = {"dropout": KEY}
        train_out = self.variant(lambda v, x: model.apply(v, x, train=True, rngs=rngs))(
            variables, x
        )
        chex.assert_shape(train_out, (2, 10))
        self.assertFalse(np.allclose(train_out, out))  # dropout is on in training


if __name__ == "__main__":
    absltest.main()
