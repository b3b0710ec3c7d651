"""Every registry model pinned to the published numbers; blocks behave as the lecture says."""

import dataclasses
import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.models import layers, resnet

PINNED = {
    "lenet5": 61_706,
    "lenet5_1998": 60_000,
    "alexnet": 60_965_224,
    "alexnet_torchvision": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg16_bn": 138_365_992,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "plain20": 269_722,
    "plain32": 464_154,
    "plain44": 658_586,
    "plain56": 853_018,
    "plain110": 1_727_962,
}


@pytest.mark.parametrize("name,expected", sorted(PINNED.items()))
def test_parameter_count_pinned(name, expected):
    model = models.get_model(name)
    assert costs.count_params(model, models.input_shape(name)) == expected


@pytest.mark.parametrize("name", sorted(n for n, s in models.MODELS.items() if s.published_params))
def test_registry_published_counts_match(name):
    entry = models.spec(name)
    assert costs.count_params(models.get_model(name), entry.input_shape) == entry.published_params


def test_vgg_bn_variants_add_two_parameters_per_channel():
    for depth in (11, 13, 16, 19):
        plain = costs.count_params(models.get_model(f"vgg{depth}"), (224, 224, 3))
        bn = costs.count_params(models.get_model(f"vgg{depth}_bn"), (224, 224, 3))
        assert bn - plain == models.spec(f"vgg{depth}_bn").published_params - PINNED.get(
            f"vgg{depth}", models.spec(f"vgg{depth}").published_params
        )


def test_resnet1202_is_19_4m():
    n = costs.count_params(models.get_model("resnet1202"), (32, 32, 3))
    assert n == 19_421_274
    assert 19_350_000 <= n <= 19_450_000  # He et al. Table 6: 19.4M


@pytest.mark.parametrize(
    "name,published_gmacs",
    [
        ("alexnet_torchvision", 0.714),
        ("vgg16", 15.47),
        ("resnet18", 1.814),
        ("resnet34", 3.664),
        ("resnet50", 4.089),
        ("resnet101", 7.801),
        ("resnet152", 11.514),
    ],
)
def test_multiply_adds_match_torchvision(name, published_gmacs):
    macs = costs.model_cost(models.get_model(name), models.input_shape(name)).macs
    assert macs / 1e9 == pytest.approx(published_gmacs, abs=0.0015)


def test_plain_and_residual_cifar_nets_differ_only_in_block():
    plain, res = models.get_model("plain20"), models.get_model("resnet20")
    assert plain.block_cls is resnet.PlainBlock and res.block_cls is resnet.ResidualBlock
    fields = [f.name for f in dataclasses.fields(plain) if f.name not in ("block_cls", "parent")]
    assert fields == [
        f.name for f in dataclasses.fields(res) if f.name not in ("block_cls", "parent")
    ]
    assert all(getattr(plain, f) == getattr(res, f) for f in fields)


def test_imagenet_plain_nets_have_no_projections():
    shapes = costs.init_shapes(models.get_model("plain34"), (64, 64, 3), train=False)
    names = {
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_leaves_with_path(shapes["params"])
    }
    assert not any("proj" in n for n in names)
    assert costs.count_params(models.get_model("plain34"), (224, 224, 3)) == 21_623_848


def test_lenet5_layer_shapes_follow_the_lecture():
    cost = costs.model_cost(models.get_model("lenet5"), (32, 32, 1))
    shapes = [layer.output_shape for layer in cost.layers if layer.kind != "Flatten"]
    assert shapes == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (120,), (84,), (10,)]
    assert [layer.path for layer in cost.layers if layer.kind != "Flatten"] == [
        "c1",
        "s2",
        "c3",
        "s4",
        "c5",
        "f6",
        "output",
    ]


def test_lenet5_pads_28_to_32():
    model = models.get_model("lenet5")
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 28, 28, 1))
    padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    np.testing.assert_allclose(model.apply(v, x), model.apply(v, padded), rtol=1e-6, atol=1e-6)


def test_lenet5_1998_breakdown():
    cost = costs.model_cost(models.get_model("lenet5_1998"), (32, 32, 1))
    by_layer = {layer.path: layer.params for layer in cost.layers if layer.params}
    assert by_layer == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164}


def test_lenet5_activation_is_selectable_and_validated():
    x = jnp.ones((1, 32, 32, 1))
    relu = models.get_model("lenet5", activation="relu")
    relu.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"activation 'sigmoidal'.*valid: tanh, relu"):
        models.get_model("lenet5", activation="sigmoidal").init(jax.random.PRNGKey(0), x)


# ---------------------------------------------------------------- CIFAR variants


def _vgg_convs(stages, widths=(64, 128, 256, 512, 512), c_in=3):
    """Parameters and multiply-adds of VGG's 3x3 same convolutions (with biases) at 32x32."""
    params = macs = 0
    size = 32
    for n, w in zip(stages, widths, strict=True):
        for _ in range(n):
            params += 9 * c_in * w + w
            macs += size * size * 9 * c_in * w
            c_in = w
        size //= 2
    return params, macs


def _fc(*widths):
    """Parameters and multiply-adds of dense layers in -> ... -> out (with biases)."""
    pairs = list(itertools.pairwise(widths))
    return sum(a * b + b for a, b in pairs), sum(a * b for a, b in pairs)


# Parameters and multiply-adds per 32x32 image at the papers' widths, from costs (eval_shape).
CIFAR_PINNED = {
    "alexnet_cifar": (28_569_994, 200_290_304),
    "vgg11_cifar": (9_750_922, 153_293_824),
    "vgg11_cifar_bn": (9_756_426, 153_293_824),
    "vgg16_cifar": (15_245_130, 313_725_952),
    "vgg16_cifar_bn": (15_253_578, 313_725_952),
}


@pytest.mark.parametrize("name", sorted(CIFAR_PINNED))
def test_cifar_variants_are_pinned(name):
    cost = costs.model_cost(models.get_model(name), models.input_shape(name))
    assert (cost.params, cost.macs) == CIFAR_PINNED[name]


def test_cifar_variants_by_hand():
    # AlexNet: conv1 5x5/1 pad 2 (96) at 32x32, pools 32 -> 15 -> 7 -> 3; conv2, 4, 5 in two
    # groups; FC 3x3x256 -> 4096 -> 4096 -> 10.
    convs = [  # (output size, filters, k, input channels per group)
        (32, 96, 5, 3),
        (15, 256, 5, 48),
        (7, 384, 3, 256),
        (7, 384, 3, 192),
        (7, 256, 3, 192),
    ]
    fc_params, fc_macs = _fc(3 * 3 * 256, 4096, 4096, 10)
    params = sum(k * k * c * f + f for _, f, k, c in convs) + fc_params
    macs = sum(s * s * f * k * k * c for s, f, k, c in convs) + fc_macs
    assert CIFAR_PINNED["alexnet_cifar"] == (params, macs)
    # VGG-16: 3x3 stacks, 2x2 pools, 64 -> 512; FC 1x1x512 -> 512 -> 512 -> 10.
    conv_params, conv_macs = _vgg_convs((2, 2, 3, 3, 3))
    fc_params, fc_macs = _fc(512, 512, 512, 10)
    assert CIFAR_PINNED["vgg16_cifar"] == (conv_params + fc_params, conv_macs + fc_macs)
    bn = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)  # a scale and a bias per channel
    assert CIFAR_PINNED["vgg16_cifar_bn"][0] - CIFAR_PINNED["vgg16_cifar"][0] == bn


def test_imagenet_models_keep_their_shape():
    # The CIFAR variants change only their own defaults.
    assert models.get_model("alexnet").layers[0].kernel == 11
    assert models.get_model("vgg16").fc_width == 4096
    assert models.get_model("vgg16").pool_size == (7, 7)


def test_alexnet_cifar_minimum_size_is_exact():
    model = models.get_model("alexnet_cifar")
    pool5 = next(x for x in costs.model_cost(model, (15, 15, 3)).layers if x.path == "pool5")
    assert pool5.output_shape == (1, 1, 256)
    with pytest.raises(ValueError, match=r"alexnet_cifar: input 14x14 is too small"):
        costs.model_cost(model, (14, 14, 3))


# ---------------------------------------------------------------- the residual identity


def _block(residual: bool, filters: int) -> nn.Module:
    conv = layers.conv_factory(use_bias=False)
    norm = layers.norm_factory(train=False)
    cls = resnet.ResidualBlock if residual else resnet.PlainBlock
    return cls(filters, conv=conv, norm=norm)


def _zero_last(variables, key):
    params = jax.tree_util.tree_map(lambda x: x, dict(variables["params"]))
    params[key] = jax.tree_util.tree_map(jnp.zeros_like, dict(params[key]))
    return {**variables, "params": params}


@settings(max_examples=10, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    c=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    last=st.sampled_from(["bn2", "conv2"]),
)
def test_residual_block_with_zero_last_layer_is_the_identity(h, w, c, seed, last):
    """a[l+2] = g(W a[l+1] + b + a[l]) = g(a[l]) = a[l] for a[l] >= 0 when W = 0, b = 0."""
    kx, kp = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.nn.relu(jax.random.normal(kx, (2, h, w, c)) * 3.0)  # a ReLU output: >= 0
    block = _block(True, c)
    variables = block.init(kp, x)
    if last == "conv2":  # W = 0; and the BN that follows has bias 0
        variables = _zero_last(variables, "conv2")
        params = dict(variables["params"])
        params["bn2"] = {**params["bn2"], "bias": jnp.zeros_like(params["bn2"]["bias"])}
        variables = {**variables, "params": params}
    else:  # BN scale 0, bias 0
        variables = _zero_last(variables, "bn2")
    np.testing.assert_array_equal(block.apply(variables, x), x)


def test_plain_block_with_zero_last_layer_is_not_the_identity():
    x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 4)))
    block = _block(False, 4)
    variables = _zero_last(block.init(jax.random.PRNGKey(1), x), "bn2")
    out = block.apply(variables, x)
    assert float(jnp.max(jnp.abs(out - x))) > 0.1
    np.testing.assert_array_equal(out, 0.0)  # g(0) = 0: the signal is gone


def test_zero_init_residual_starts_every_block_at_identity():
    model = models.get_model("resnet20", zero_init_residual=True)
    v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    scales = [v["params"][k]["bn2"]["scale"] for k in v["params"] if k.startswith("stage")]
    assert len(scales) == 9 and all(float(jnp.max(jnp.abs(s))) == 0.0 for s in scales)
    plain = models.get_model("plain20", zero_init_residual=True)
    vp = jax.jit(plain.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert float(jnp.min(vp["params"]["stage1_block1"]["bn2"]["scale"])) == 1.0


def test_option_a_and_b_shortcuts():
    a = costs.count_params(models.get_model("resnet20"), (32, 32, 3))
    b = costs.count_params(models.get_model("resnet20", shortcut="B"), (32, 32, 3))
    # Option B adds two 1x1 projections with BN: 16*32 + 2*32 and 32*64 + 2*64.
    assert b - a == 16 * 32 + 64 + 32 * 64 + 128
    y = resnet.shortcut_a(jnp.ones((1, 8, 8, 16)), 32, 2)
    assert y.shape == (1, 4, 4, 32) and float(y.sum()) == 4 * 4 * 16


# ---------------------------------------------------------------- forward passes


# Compiling costs seconds per model on 2 cores: the Inception nets have their own test file.
SMALL = {"lenet5": {}, "lenet5_1998": {}, "resnet8": {"width": 4}, "plain8": {"width": 4}}


class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_small_models_forward(self):
        """Jitted and eager calls on the default kernels agree with the jitted XLA-kernel model."""
        for name, kwargs in SMALL.items():
            model = models.get_model(name, **kwargs)
            xla = models.get_model(name, kernels="xla", **kwargs)
            x = jax.random.normal(jax.random.PRNGKey(0), (2, *models.input_shape(name)))
            variables = model.init(jax.random.PRNGKey(1), x, train=True)
            apply = self.variant(lambda v, x, m=model: m.apply(v, x, train=False))
            out = apply(variables, x)
            chex.assert_shape(out, (2, 10))
            chex.assert_tree_all_finite(out)
            ref = jax.jit(lambda v, x, m=xla: m.apply(v, x, train=False))(variables, x)
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
            assert not np.allclose(out[0], out[1], atol=1e-4), name  # the logits see the input


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_registry_model_has_a_forward_shape(name):
    model = models.get_model(name)
    shape = models.input_shape(name)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = costs.init_shapes(model, shape, train=True)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    num_classes = 10 if shape[0] <= 32 else 1000
    assert out.shape == (2, num_classes) and out.dtype == jnp.float32


def test_train_mode_updates_batch_stats():
    model = models.get_model("resnet20", width=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), x, train=True)
    _, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
    before = jax.tree_util.tree_leaves(v["batch_stats"])
    after = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(before, after, strict=True))


def test_num_classes_and_dtype_overrides():
    model = models.get_model("resnet20", num_classes=100, dtype=jnp.bfloat16)
    x = jnp.zeros((1, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(0), x)
    out = model.apply(v, x)
    assert out.shape == (1, 100) and out.dtype == jnp.float32


# ---------------------------------------------------------------- bad input


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9000x'.*valid models: .*lenet5"):
        models.get_model("resnet9000x")


def test_cifar_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match=r"depth 21 is not 6n\+2"):
        models.get_model("resnet21")
    with pytest.raises(ValueError, match=r"depth 21 is not 6n\+2"):
        resnet.cifar_resnet(21)
    assert costs.count_params(models.get_model("resnet14"), (32, 32, 3)) > 0


@pytest.mark.parametrize(
    "name,size",
    [("alexnet", 16), ("alexnet_torchvision", 16), ("vgg16", 16), ("lenet5", 20), ("resnet50", 16)],
)
def test_input_too_small_is_a_clear_error(name, size):
    model = models.get_model(name)
    x = jnp.zeros((1, size, size, models.input_shape(name)[-1]))
    with pytest.raises(ValueError, match=rf"input {size}x{size} is too small.*at least \d+x\d+"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


def _alexnet_pool5_size(h: int, conv1_pad: int) -> int:
    """Spatial size after pool5: conv1 11x11/4, then three 3x3/2 max pools (others keep size)."""
    h = (h + 2 * conv1_pad - 11) // 4 + 1
    for _ in range(3):
        h = (h - 3) // 2 + 1 if h >= 3 else 0
    return h


@pytest.mark.parametrize("name,conv1_pad", [("alexnet", 0), ("alexnet_torchvision", 2)])
def test_alexnet_minimum_size_is_exact(name, conv1_pad):
    model = models.get_model(name)
    m = model.min_input_size
    assert _alexnet_pool5_size(m, conv1_pad) == 1
    assert _alexnet_pool5_size(m - 1, conv1_pad) == 0
    cost = costs.model_cost(model, (m, m, 3))
    pool5 = next(layer for layer in cost.layers if layer.path == "pool5")
    assert pool5.output_shape == (1, 1, 256)
    pool5_227 = next(
        layer for layer in costs.model_cost(model, (227, 227, 3)).layers if layer.path == "pool5"
    )
    assert pool5_227.output_shape[0] == _alexnet_pool5_size(227, conv1_pad)


def test_alexnet_works_at_224_and_227():
    for size in (224, 227):
        x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        out = jax.eval_shape(
            lambda x: models.get_model("alexnet").apply(
                models.get_model("alexnet").init(jax.random.PRNGKey(0), x), x
            ),
            x,
        )
        assert out.shape == (1, 1000)
