"""`ResNet(scan=True)`: the same function and parameters as the unrolled net, stacked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.models import resnet

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _stack_blocks(tree: dict, stage_sizes) -> dict:
    """Unrolled `stage{i}_block{j}` subtrees, j >= 2, stacked into `stage{i}_block2_to_{n}`."""
    out = dict(tree)
    for i, n in enumerate(stage_sizes, start=1):
        if n < 2:
            continue
        blocks = [out.pop(f"stage{i}_block{j}") for j in range(2, n + 1)]
        out[f"stage{i}_block2_to_{n}"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks)
    return out


def _stacked(variables: dict, stage_sizes) -> dict:
    return {k: _stack_blocks(v, stage_sizes) for k, v in variables.items()}


def _models(depth: int, **kwargs):
    unrolled = models.get_model(f"resnet{depth}", **kwargs)
    scanned = models.get_model(f"resnet{depth}", scan=True, **kwargs)
    return unrolled, scanned, unrolled.stage_sizes


@pytest.mark.parametrize("depth", [14, 20])
def test_scanned_and_unrolled_compute_the_same_function(depth):
    unrolled, scanned, sizes = _models(depth, width=8)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    variables = jax.jit(lambda x: unrolled.init(jax.random.PRNGKey(0), x, train=True))(x)
    # Perturb the running statistics so that train=False does not see the identity init.
    variables = {
        "params": variables["params"],
        "batch_stats": jax.tree_util.tree_map(
            lambda s: s + 0.1 * jax.random.uniform(jax.random.PRNGKey(2), s.shape),
            variables["batch_stats"],
        ),
    }
    stacked = _stacked(variables, sizes)
    stacked_shapes = jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(0), x, train=True))
    assert jax.tree_util.tree_structure(stacked) == jax.tree_util.tree_structure(stacked_shapes)
    for a, b in zip(
        jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(stacked_shapes), strict=True
    ):
        assert a.shape == b.shape

    eval_u = jax.jit(lambda v, x: unrolled.apply(v, x, train=False))(variables, x)
    eval_s = jax.jit(lambda v, x: scanned.apply(v, x, train=False))(stacked, x)
    np.testing.assert_allclose(eval_s, eval_u, **TOL)

    def train_apply(model):
        return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))

    out_u, upd_u = train_apply(unrolled)(variables, x)
    out_s, upd_s = train_apply(scanned)(stacked, x)
    np.testing.assert_allclose(out_s, out_u, **TOL)
    jax.tree_util.tree_map(
        lambda s, u: np.testing.assert_allclose(s, u, **TOL), upd_s, _stacked(upd_u, sizes)
    )

    def grads(model, v):
        loss = lambda p: jnp.sum(
            model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0] ** 2
        )
        return jax.jit(jax.grad(loss))(v["params"])

    jax.tree_util.tree_map(
        lambda s, u: np.testing.assert_allclose(s, u, **TOL),
        grads(scanned, stacked),
        _stack_blocks(grads(unrolled, variables), sizes),
    )


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet110", "plain56", "resnet18"])
def test_scan_keeps_the_parameter_count(name):
    shape = models.input_shape(name)
    plain = costs.count_params(models.get_model(name), shape)
    assert costs.count_params(models.get_model(name, scan=True), shape) == plain
    assert models.spec(name).published_params in (None, plain)


def test_scan_is_off_by_default_and_keeps_block_names():
    assert resnet.ResNet.scan is False
    shapes = costs.init_shapes(models.get_model("resnet20"), (32, 32, 3), train=True)
    assert {f"stage{i}_block{j}" for i in (1, 2, 3) for j in (1, 2, 3)} <= set(shapes["params"])


def _jaxpr_size(name: str) -> int:
    model = models.get_model(name, scan=True)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=True))
    fn = lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])
    return len(jax.make_jaxpr(fn)(variables).jaxpr.eqns)


def test_scanned_program_size_is_flat_in_depth():
    # What XLA compiles does not grow with depth: the scanned body is traced once per stage.
    assert _jaxpr_size("resnet110") == _jaxpr_size("resnet20")
