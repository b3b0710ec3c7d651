"""Inception modules, GoogLeNet (Szegedy et al. 2015) and the CIFAR Inception nets."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from cnn_cases.analysis import costs
from cnn_cases.models import inception

KEY = jax.random.PRNGKey(0)
TABLE1_3A = (64, 96, 128, 16, 32, 32)


def kernel_size(tree) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return sum(math.prod(x.shape) for path, x in leaves if path[-1].key == "kernel")


def init_shapes(model, hw: int, *, train: bool = True, channels: int = 3):
    return costs.init_shapes(model, (hw, hw, channels), train=train)


def random_variables(model, x: jax.Array, seed: int = 0):
    """`model.init(key, x, train=True)`'s tree, filled by numpy.

    Running the initializers eagerly compiles one small program per parameter shape, which
    costs tens of seconds on two cores; the values here only need to be random.
    """
    rng = np.random.default_rng(seed)
    kwargs = {"train": True} if isinstance(model, inception.GoogLeNet) else {}
    shapes = jax.eval_shape(lambda: model.init(KEY, x, **kwargs))

    def fill(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(math.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # biases, BatchNorm shifts and running means
            value = rng.normal(0.0, 0.1, shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# --- the inception module -------------------------------------------------------------------


def test_inception_3a_bottleneck_weights_and_output():
    module = inception.InceptionModule(*TABLE1_3A)
    x = jnp.zeros((1, 28, 28, 192))
    variables = jax.eval_shape(lambda: module.init(KEY, x))
    params = variables["params"]
    # Table 1's (3a) widths on 192 channels: 163,328 weights (the paper's 159K takes K = 1024).
    assert kernel_size(params) == 163_328
    assert costs.count(params) == 163_328 + 368  # one bias per output channel of each conv
    assert set(params) == {"b1x1", "b3x3_reduce", "b3x3", "b5x5_reduce", "b5x5", "pool_proj"}
    out = jax.eval_shape(module.apply, variables, x)
    assert out.shape == (1, 28, 28, 256)


def test_inception_3a_naive_passes_the_pool_through():
    module = inception.InceptionModule(*TABLE1_3A, bottleneck=False)
    x = jnp.zeros((1, 28, 28, 192))
    variables = jax.eval_shape(lambda: module.init(KEY, x))
    assert set(variables["params"]) == {"b1x1", "b3x3", "b5x5"}
    assert kernel_size(variables) == 192 * 64 + 9 * 192 * 128 + 25 * 192 * 32 == 387_072
    out = jax.eval_shape(module.apply, variables, x)
    assert out.shape == (1, 28, 28, 64 + 128 + 32 + 192)


def test_inception_module_branches_are_concatenated_in_order():
    module = inception.InceptionModule(2, 1, 3, 1, 4, 5)
    x = jax.random.normal(KEY, (1, 6, 6, 3))
    variables = random_variables(module, x)
    out, state = jax.jit(lambda v: module.apply(v, x, capture_intermediates=True))(variables)
    inter = state["intermediates"]
    branches = [inter[n]["__call__"][0] for n in ("b1x1", "b3x3", "b5x5", "pool_proj")]
    # Captured conv outputs are pre-activation; each branch ends in its own ReLU.
    chex.assert_trees_all_close(out, jnp.concatenate([jnp.maximum(b, 0) for b in branches], -1))
    assert out.shape == (1, 6, 6, 2 + 3 + 4 + 5)


# --- GoogLeNet at 224x224, shapes only ------------------------------------------------------

GOOGLENET_PARAMS = 6_998_552
GOOGLENET_PARAMS_WITH_AUX = 13_378_280


def test_googlenet_parameter_count():
    params = init_shapes(inception.GoogLeNet(aux_logits=False), 224)["params"]
    n = costs.count(params)
    assert 6_000_000 <= n <= 7_000_000  # paper: ~6.8M
    assert n == GOOGLENET_PARAMS
    assert "aux1" not in params and "aux2" not in params
    assert kernel_size(params["inception3a"]) == 163_328


def test_googlenet_aux_heads_parameter_count():
    params = init_shapes(inception.GoogLeNet(), 224, train=True)["params"]
    assert costs.count(params) == GOOGLENET_PARAMS_WITH_AUX
    main = {k: v for k, v in params.items() if not k.startswith("aux")}
    assert costs.count(main) == GOOGLENET_PARAMS
    # 1x1 conv 128 (+ bias), FC 4*4*128 -> 1024, linear 1024 -> 1000, on 512 and 528 channels.
    head = 2048 * 1024 + 1024 + 1024 * 1000 + 1000
    assert costs.count(params["aux1"]) == 512 * 128 + 128 + head
    assert costs.count(params["aux2"]) == 528 * 128 + 128 + head
    assert params["aux1"]["fc"]["kernel"].shape == (4 * 4 * 128, 1024)


def test_googlenet_table1_output_sizes():
    model = inception.GoogLeNet()
    x = jnp.zeros((1, 224, 224, 3))
    variables = init_shapes(model, 224)
    logits, state = jax.eval_shape(
        lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        variables,
    )
    assert logits.shape == (1, 1000)
    inter = state["intermediates"]
    shape = {k: v["__call__"][0].shape[1:] for k, v in inter.items() if k != "__call__"}
    expected = {
        "conv1": (112, 112, 64),
        "pool1": (56, 56, 64),
        "conv2": (56, 56, 192),
        "pool2": (28, 28, 192),
        "inception3a": (28, 28, 256),
        "inception3b": (28, 28, 480),
        "pool3": (14, 14, 480),
        "inception4a": (14, 14, 512),
        "inception4b": (14, 14, 512),
        "inception4c": (14, 14, 512),
        "inception4d": (14, 14, 528),
        "inception4e": (14, 14, 832),
        "pool4": (7, 7, 832),
        "inception5a": (7, 7, 832),
        "inception5b": (7, 7, 1024),
        "avgpool": (1024,),
    }
    assert {k: shape[k] for k in expected} == expected


def test_googlenet_calling_convention():
    model = inception.GoogLeNet()
    x = jnp.zeros((2, 224, 224, 3))
    variables = init_shapes(model, 224)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
    out = jax.eval_shape(lambda v: model.apply(v, x, train=True, rngs=rngs), variables)
    logits, (aux1, aux2) = out
    assert logits.shape == aux1.shape == aux2.shape == (2, 1000)
    no_aux = inception.GoogLeNet(aux_logits=False)
    out = jax.eval_shape(lambda v: no_aux.apply(v, x, train=True, rngs=rngs), variables)
    assert out.shape == (2, 1000)


def test_googlenet_min_input_size():
    with_aux, without = inception.GoogLeNet(), inception.GoogLeNet(aux_logits=False)
    assert with_aux.min_input_size == 79  # (4a) must be 5x5 for the 5x5/3 VALID aux pool
    assert without.min_input_size == 47  # every 3x3/2 pool window in bounds
    assert with_aux.stage_sizes(79) == [10, 5, 2] and without.stage_sizes(47) == [6, 3, 1]
    init_shapes(with_aux, 79)
    init_shapes(without, 47)
    with pytest.raises(ValueError, match="78x78"):
        init_shapes(with_aux, 78)
    with pytest.raises(ValueError, match="46x46"):
        init_shapes(without, 46)


def test_invalid_configuration_raises():
    with pytest.raises(ValueError, match="stem"):
        init_shapes(inception.InceptionCifar(stem="tiny"), 32)
    with pytest.raises(ValueError, match="aux_after"):
        init_shapes(inception.InceptionCifar(aux_logits=True, aux_after=("4e",)), 32)


# --- CIFAR nets -------------------------------------------------------------------------------


def test_inception_cifar_bottleneck_is_cheaper_than_naive():
    bottleneck = costs.count(init_shapes(inception.InceptionCifar(), 32)["params"])
    naive = costs.count(init_shapes(inception.InceptionCifar(bottleneck=False), 32)["params"])
    assert (bottleneck, naive) == (121_962, 1_052_170)
    assert naive > 5 * bottleneck


def test_inception_cifar_naive_channels_grow():
    variables = init_shapes(inception.InceptionCifar(bottleneck=False), 32)
    params = variables["params"]
    assert set(params["inception3a"]) == {
        "b1x1",
        "b1x1_bn",
        "b3x3",
        "b3x3_bn",
        "b5x5",
        "b5x5_bn",
        "pool_bn",
    }
    # With BatchNorm on, the unprojected pool branch is normalised too (2 parameters a channel).
    assert params["inception3a"]["pool_bn"]["scale"].shape == (48,)
    # (3a) at 1/4 width: 16 + 32 + 8 + 48 stem channels passed through the pool branch.
    assert params["inception3b"]["b1x1"]["kernel"].shape == (1, 1, 104, 32)
    assert "bias" not in params["inception3b"]["b1x1"]  # BatchNorm follows


def test_googlenet_cifar_parameter_count():
    assert costs.count(init_shapes(inception.GoogLeNetCifar(), 32)["params"]) == 452_214
    no_aux = inception.GoogLeNetCifar(aux_logits=False)
    variables = init_shapes(no_aux, 32)
    assert costs.count(variables["params"]) == 372_578
    assert not any(k.startswith("aux") for k in variables["params"])
    x = jnp.zeros((2, 32, 32, 3))
    out, _ = jax.eval_shape(
        lambda v: no_aux.apply(v, x, train=True, rngs={"dropout": KEY}, mutable=["batch_stats"]),
        variables,
    )
    assert out.shape == (2, 10)  # logits only, even in training


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        (inception.InceptionCifar(), 6),
        (inception.GoogLeNetCifar(), 20),
        (inception.GoogLeNetCifar(aux_logits=False), 12),
    ],
)
def test_cifar_min_input_size(model, minimum):
    assert model.min_input_size == minimum
    init_shapes(model, minimum)
    with pytest.raises(ValueError, match=f"{minimum - 1}x{minimum - 1}"):
        init_shapes(model, minimum - 1)


def test_googlenet_cifar_aux_heads():
    # Shapes only; CifarForwardTest runs the real inference forward pass.
    model = inception.GoogLeNetCifar()
    x = jnp.zeros((2, 20, 20, 3))  # the smallest input the aux heads accept
    variables = init_shapes(model, 20, train=True)
    assert {"aux1", "aux2"} <= set(variables["params"])
    # (4a) is 5x5 at this input: the 5x5/3 pool leaves 1x1x32 (2x2x32 at 32x32).
    assert variables["params"]["aux1"]["fc"]["kernel"].shape == (1 * 1 * 32, 256)
    logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert isinstance(logits, jax.ShapeDtypeStruct) and logits.shape == (2, 10)
    (logits, aux), state = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, rngs={"dropout": KEY}, mutable=["batch_stats"]),
        variables,
    )
    assert len(aux) == 2
    chex.assert_shape([logits, *aux], (2, 10))
    assert {"aux1", "aux2"} <= set(state["batch_stats"])


CIFAR_NETS = {
    "inception_cifar": inception.InceptionCifar(),
    "inception_cifar_naive": inception.InceptionCifar(bottleneck=False),
    "googlenet_cifar": inception.GoogLeNetCifar(),
}


@functools.cache
def cifar_reference(name: str):
    """Variables, a batch of 2 and the eager (op by op) inference output of `CIFAR_NETS[name]`."""
    model = CIFAR_NETS[name]
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = random_variables(model, x)
    return variables, x, model.apply(variables, x)


class CifarForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*CIFAR_NETS)
    def test_forward_is_the_same_with_and_without_jit(self, name):
        model = CIFAR_NETS[name]
        variables, x, reference = cifar_reference(name)
        out = self.variant(lambda v, x: model.apply(v, x, train=False))(variables, x)
        chex.assert_shape(out, (2, 10))
        self.assertEqual(out.dtype, jnp.float32)
        chex.assert_tree_all_finite(out)
        self.assertGreater(float(jnp.abs(out[0] - out[1]).max()), 0.0)
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    absltest.main()
