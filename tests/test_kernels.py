"""oneDNN kernels: equal to XLA's to f32 rounding, everywhere the engine runs them."""

import os
import subprocess
import sys
import textwrap
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from cnn_cases import models
from cnn_cases.kernels import batch_norm, conv, library
from cnn_cases.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DN = ("NHWC", "HWIO", "NHWC")


def test_the_handlers_are_built_and_load():
    # The project's install builds them; a missing build would silently mean XLA everywhere.
    assert library.available(), library._load()[1]
    assert library.version().startswith("3.")
    assert library.use_onednn("auto") and library.use_onednn("onednn")
    assert not library.use_onednn("xla")


def test_the_library_lists_every_target_it_holds():
    lib = library._load()[0]
    targets = library._targets(lib)
    assert set(library._CALLED) <= set(targets)
    assert all(isinstance(address, int) and address for address in targets.values())
    assert len(set(targets.values())) == len(targets)  # one handler per name
    assert library.abi_version() >= 5  # 5: named attributes and the target table


def test_a_library_without_a_target_it_calls_is_refused_by_name(monkeypatch):
    real = library._targets
    monkeypatch.setattr(
        library, "_targets", lambda lib: {k: v for k, v in real(lib).items() if k != "bn_backward"}
    )
    lib, why = library._load.__wrapped__()  # uncached: the registered library stays as it is
    assert lib is None and "has no target cnn_cases_bn_backward" in why


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _rel_norm(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _conv_pair(x, w, strides, padding, dilation, groups, dtype=jnp.float32):
    kw = dict(rhs_dilation=dilation, dimension_numbers=DN, feature_group_count=groups)
    ours = lambda x, w: conv.conv_general_dilated(x, w, strides, padding, **kw)
    ref = lambda x, w: lax.conv_general_dilated(
        x.astype(jnp.float32), w.astype(jnp.float32), strides, padding, precision="highest", **kw
    )
    x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    y = jax.jit(ours)(x, w)
    y_ref = ref(x, w)
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape), dtype)
    g = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * ct), argnums=(0, 1)))(x, w)
    g_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * ct.astype(jnp.float32)), argnums=(0, 1))(x, w)
    return (y, *g), (y_ref, *g_ref)


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 4))
    cout = groups * draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers((kh - 1) * dil[0] + 1, 13))
    w = draw(st.integers((kw - 1) * dil[1] + 1, 13))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = st.tuples(st.integers(0, 3), st.integers(0, 3))
    padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]), st.tuples(pads, pads)))
    n = draw(st.integers(1, 5))
    return n, h, w, cin, kh, kw, cout, strides, padding, dil, groups


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases(), st.integers(0, 2**31 - 1))
def test_conv_forward_and_both_gradients_equal_lax(case, seed):
    n, h, w, cin, kh, kw, cout, strides, padding, dil, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, cin))
    k = rng.standard_normal((kh, kw, cin // groups, cout))
    ours, ref = _conv_pair(x, k, strides, padding, dil, groups)
    for name, a, b in zip(("forward", "input gradient", "kernel gradient"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        assert _rel(a, b) < 2e-6, (name, case, _rel(a, b))


@pytest.mark.parametrize("native", ["as_detected", "f32_fallback"])
def test_conv_bf16_is_bf16_rounding_of_f32(native, monkeypatch):
    if native == "f32_fallback":  # as on a CPU without bf16 dot products
        monkeypatch.setattr(conv, "native_bf16", lambda: False)
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((4, 9, 9, 8)), rng.standard_normal((3, 3, 8, 16))
    ours, ref = _conv_pair(x, k, (2, 2), ((1, 1), (1, 1)), (1, 1), 1, dtype=jnp.bfloat16)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == jnp.bfloat16
        assert _rel(a, b) < 2e-2


def test_conv_bf16_without_bf16_dot_products_runs_in_f32(monkeypatch):
    monkeypatch.setattr(conv, "native_bf16", lambda: False)
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((4, 9, 9, 8)), rng.standard_normal((3, 3, 8, 16))
    xb, kb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16)
    fn = jax.jit(lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN))
    text = fn.lower(xb, kb).as_text()
    assert "cnn_cases_conv_forward" in text
    # The handler gets f32 operands: a bf16 convolution's exact products, summed in f32.
    f32 = jax.jit(
        lambda x, w: conv.conv_general_dilated(
            x.astype(jnp.float32), w.astype(jnp.float32), (1, 1), "SAME", dimension_numbers=DN
        ).astype(jnp.bfloat16)
    )
    np.testing.assert_array_equal(np.asarray(fn(xb, kb)), np.asarray(f32(xb, kb)))


_BF16_STEP = """
import sys
import jax, jax.numpy as jnp, numpy as np
from cnn_cases import models
from cnn_cases.kernels import library

def bf16_step():
    model = models.get_model("resnet8", width=4, dtype=jnp.bfloat16)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=True)

    def loss(params):
        out, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(out.astype(jnp.float32) ** 2)

    fn = jax.jit(jax.value_and_grad(loss))
    assert "cnn_cases_conv_forward" in fn.lower(variables["params"]).as_text()
    value, grads = fn(variables["params"])
    flat = [np.ravel(np.asarray(g, np.float32)) for g in jax.tree.leaves(grads)]
    return np.concatenate([[float(value)], *flat])

if __name__ == "__main__":
    np.save(sys.argv[1], bf16_step())
    print(library.native_bf16())
"""


def test_bf16_without_avx512_bf16_falls_back_to_f32_convolutions(tmp_path):
    """oneDNN limited to AVX2 (no bf16 convolution or BatchNorm there): a bf16 train step of
    a ResNet still runs on the kernels, and gives the result it gives here."""
    script = tmp_path / "bf16_step.py"
    script.write_text(_BF16_STEP)
    out = tmp_path / "avx2.npy"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "False"
    namespace: dict = {}
    exec(compile(_BF16_STEP, str(script), "exec"), namespace)  # here: this CPU's bf16 path
    # The same bf16 step, to bf16 rounding (the loss sums 40 outputs, the gradients are bf16).
    assert _rel(np.load(out), namespace["bf16_step"]()) < 2e-2


def test_conv_outside_the_kernels_falls_back_to_lax():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
    for extra in ({"lhs_dilation": (2, 2)}, {"padding": ((-1, 0), (0, 0))}):
        args = {"window_strides": (1, 1), "padding": ((1, 1), (1, 1)), "dimension_numbers": DN}
        args.update(extra)
        fn = jax.jit(lambda x, w, args=args: conv.conv_general_dilated(x, w, **args))
        text = fn.lower(x, w).as_text()
        assert "cnn_cases_conv" not in text
        np.testing.assert_allclose(
            conv.conv_general_dilated(x, w, **args),
            lax.conv_general_dilated(x, w, **args),
            rtol=1e-6,
            atol=1e-5,
        )
    # NCHW activations are not the kernels' layout either.
    xc = jnp.transpose(x, (0, 3, 1, 2))
    text = (
        jax.jit(
            lambda x, w: conv.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW")
            )
        )
        .lower(xc, w)
        .as_text()
    )
    assert "cnn_cases_conv" not in text


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    "act, add", [(None, False), (nn.relu, False), (nn.relu, True), (jnp.tanh, True)]
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("c", [16, 21])
def test_batch_norm_equals_flax(train, act, add, dtype, c):
    """act(bn(x) [+ residual]): fused on oneDNN for ReLU, equal to flax's BatchNorm.

    16 channels: the loops' compile-time width, one vector; 21: a runtime width, one vector
    and 5 channels one at a time."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((6, 5, 7, c)) * 3 + 1, jnp.float32)
    residual = jnp.asarray(rng.standard_normal(x.shape), jnp.float32) if add else None
    c = x.shape[-1]
    variables = {
        "params": {
            "scale": jnp.asarray(rng.standard_normal(c), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(c), jnp.float32),
        },
        "batch_stats": {
            "mean": jnp.asarray(rng.standard_normal(c), jnp.float32),
            "var": jnp.asarray(rng.random(c) + 0.5, jnp.float32),
        },
    }
    ct = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def run(kernels, dtype):
        bn = layers.norm_factory(train, kernels, dtype=dtype, act=act)()
        xd, rd = x.astype(dtype), None if residual is None else residual.astype(dtype)
        assert jax.tree.structure(bn.init(jax.random.key(0), xd)) == jax.tree.structure(variables)

        def loss(params, x, residual):
            y, new = bn.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                residual=residual,
                mutable=["batch_stats"],
            )
            return jnp.sum(y.astype(jnp.float32) * ct), (y, new)

        fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
        text = fn.lower(variables["params"], xd, rd).as_text()
        assert ("cnn_cases_bn" in text) == (kernels == "onednn")
        g, (y, stats) = fn(variables["params"], xd, rd)
        assert y.dtype == dtype
        return jax.tree.leaves((y, g, stats))

    ours, flax_ref = run("onednn", dtype), run("xla", dtype)
    if dtype == jnp.float32:
        for a, b in zip(ours, flax_ref, strict=True):
            assert _rel(a, b) < 2e-6
        return
    # bf16 rounds at different points (the fused kernel adds the residual before rounding,
    # flax after), so both are held to the f32 result: oneDNN's as close as flax's.
    f32 = run("xla", jnp.float32)
    for a, b, exact in zip(ours, flax_ref, f32, strict=True):
        assert _rel_norm(a, exact) <= max(1.25 * _rel_norm(b, exact), 1e-2)


@pytest.mark.parametrize("c", [16, 40])
def test_bf16_results_round_to_nearest_even(c):
    """relu(x * 1 + 0 + r) in bf16: the f32 sum rounded as XLA rounds it, ties to even."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, c)).astype(jnp.bfloat16)
    r = rng.standard_normal(x.shape).astype(jnp.bfloat16)
    # Ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (rounds down, to even), 1 + 3 * 2^-8
    # between 1 + 2^-7 and 1 + 2^-6 (up, to even).
    x[0, 0, 0, :4] = 1
    r[0, 0, 0, :4] = [2**-8, 3 * 2**-8, -(2**-9), 2**-9]
    var, eps = np.float32(0.75), np.float32(1e-5)
    scale = np.full(c, np.sqrt(var + eps), np.float32)  # scale / sqrt(var + eps) == 1 exactly
    zeros = jnp.zeros(c, jnp.float32)
    y = batch_norm.batch_norm_inference(
        jnp.asarray(x),
        jnp.asarray(scale),
        zeros,
        zeros,
        jnp.full(c, var),
        epsilon=float(eps),
        relu=True,
        residual=jnp.asarray(r),
    )
    expected = jnp.maximum(jnp.asarray(x, jnp.float32) + jnp.asarray(r, jnp.float32), 0)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(expected.astype(jnp.bfloat16)))
    assert list(np.asarray(y[0, 0, 0, :2], np.float32)) == [1, 1 + 2**-6]


def test_a_residual_the_kernel_cannot_fuse_is_added_before_the_activation():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 4, 8)), jnp.bfloat16)
    residual = jnp.asarray(rng.standard_normal((2, 4, 4, 8)), jnp.float32)  # another dtype
    outs = []
    for kernels in ("onednn", "xla"):
        bn = layers.norm_factory(False, kernels, dtype=jnp.bfloat16, act=nn.relu)()
        variables = bn.init(jax.random.key(0), x)
        outs.append(bn.apply(variables, x, residual=residual))
    assert outs[0].dtype == outs[1].dtype == jnp.float32
    assert np.min(np.asarray(outs[0])) == 0.0  # the ReLU came last
    assert _rel_norm(outs[0], outs[1]) < 1e-2


@pytest.mark.parametrize("train", [True, False])
def test_vmap_over_the_kernels_equals_each_index_alone(train):
    """The handlers take vmapped axes in front (no loop in XLA); nested vmaps too."""
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((2, 3, 2, 8, 8, 4)), jnp.float32)
    ws = jnp.asarray(rng.standard_normal((2, 3, 3, 3, 4, 6)), jnp.float32)
    rs = jnp.asarray(rng.standard_normal((2, 3, 2, 8, 8, 6)), jnp.float32)
    scale, bias = jnp.asarray(rng.random(6) + 0.5), jnp.asarray(rng.standard_normal(6))
    mean, var = jnp.asarray(rng.standard_normal(6)), jnp.asarray(rng.random(6) + 0.5)

    def f(x, w, r):
        y = conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
        if train:
            y = batch_norm.batch_norm(y, scale, bias, epsilon=1e-5, relu=True, residual=r)[0]
        else:  # running statistics: shared by every index, as a vmapped eval step's are not
            y = batch_norm.batch_norm_inference(
                y, scale, bias, mean, var, epsilon=1e-5, relu=True, residual=r
            )
        return jnp.sum(y**2)

    grad = jax.value_and_grad(f, argnums=(0, 1, 2))
    fn = jax.jit(jax.vmap(jax.vmap(grad)))
    text = fn.lower(xs, ws, rs).compile().as_text()
    assert "cnn_cases_conv_forward" in text and "while" not in text
    batched = fn(xs, ws, rs)
    for i in range(2):
        for j in range(3):
            single = grad(xs[i, j], ws[i, j], rs[i, j])
            for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
                np.testing.assert_allclose(a[i, j], b, rtol=1e-5, atol=1e-5)


def _apply_and_grad(model, variables, x):
    def loss(params):
        y, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(y**2)

    return jax.jit(jax.value_and_grad(loss))(variables["params"])


@pytest.mark.parametrize("scan", [False, True])
def test_cifar_resnet_is_the_same_function_on_both_kernels(scan):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 32, 32, 3)), jnp.float32)
    ours = models.get_model("resnet14", width=4, scan=scan, kernels="onednn")
    ref = models.get_model("resnet14", width=4, scan=scan, kernels="xla")
    variables = ref.init(jax.random.key(0), x, train=True)
    # One parameter tree for both: checkpoints move between them unchanged.
    chex_shapes = jax.tree.map(lambda a: a.shape, ours.init(jax.random.key(0), x, train=True))
    assert chex_shapes == jax.tree.map(lambda a: a.shape, variables)
    (loss, g), (loss_ref, g_ref) = (
        _apply_and_grad(ours, variables, x),
        _apply_and_grad(ref, variables, x),
    )
    assert _rel(loss, loss_ref) < 1e-5
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        assert _rel(a, b) < 1e-4
    logits = ours.apply(variables, x)
    assert _rel(logits, ref.apply(variables, x)) < 1e-5


# resnet1202 is resnet110's code at 11x the trace time.
@pytest.mark.parametrize("name", sorted(set(models.MODELS) - {"resnet1202"}))
def test_every_registry_model_has_one_variable_tree_for_both_kernels(name):
    shape = (1, *models.input_shape(name))
    trees = []
    for kernels in ("onednn", "xla"):
        model = models.get_model(name, kernels=kernels)
        init = lambda x, model=model: model.init(
            {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True
        )
        trees.append(jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32)))
    assert jax.tree.structure(trees[0]) == jax.tree.structure(trees[1])
    assert jax.tree.leaves(trees[0]) == jax.tree.leaves(trees[1])


def test_bad_kernels_setting_is_one_line():
    with pytest.raises(
        ValueError, match=r"kernels='fast' is not valid \(valid: auto, onednn, xla\)"
    ):
        library.use_onednn("fast")


def test_onednn_on_an_accelerator_is_refused_and_auto_uses_xla(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        library.use_onednn("onednn")
    assert not library.use_onednn("auto")
    assert layers.conv_function("auto") is lax.conv_general_dilated


def test_a_library_that_fails_to_load_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(library, "_load", lambda: (None, "libdnnl.so.3: cannot open"))
    library._warn_unavailable.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not library.use_onednn("auto")
        assert not library.use_onednn("onednn")
    assert len(caught) == 1 and "libdnnl.so.3: cannot open" in str(caught[0].message)
    x = jnp.ones((2, 8, 8, 3))
    model = models.get_model("resnet8", width=4)
    text = jax.jit(lambda v, x: model.apply(v, x)).lower(model.init(jax.random.key(0), x), x)
    assert "cnn_cases_" not in text.as_text()


MESH_CHECK = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from cnn_cases.engine import parallel
from cnn_cases.kernels import batch_norm, conv, library

mesh = parallel.create_mesh()
rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((16, 8, 8, 4)), jnp.float32)
w = jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)
scale, bias = jnp.asarray(rng.random(8) + 0.5), jnp.asarray(rng.standard_normal(8))

def loss(x, w, scale, bias):
    dn = ("NHWC", "HWIO", "NHWC")
    y = conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    y, mean, var = batch_norm.batch_norm(y, scale, bias, epsilon=1e-5, relu=True)
    return jnp.sum(y ** 2), (mean, var)

f = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)
single = jax.jit(f)(x, w, scale, bias)
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
with jax.set_mesh(mesh):
    step = jax.jit(f)
    hlo = step.lower(xs, w, scale, bias).compile().as_text()
    sharded = step(xs, w, scale, bias)
assert "all-gather" not in hlo, "the batch was gathered"
assert hlo.count("custom-call") >= 4
for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
print("ok")
"""


def test_eight_devices_run_the_kernels_on_their_shards_without_gathering():
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MESH_CHECK)],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
