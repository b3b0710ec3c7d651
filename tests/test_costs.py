"""Cost accounting: exact on hand-checkable layers, cross-checked against XLA."""

import flax.linen as nn
import jax
import pytest

from cnn_cases import models
from cnn_cases.analysis import costs, lecture


class ValidNet(nn.Module):
    """Only VALID convs and bias-free dense layers: XLA counts exactly 2 FLOPs per mult-add."""

    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.Conv(8, (5, 5), padding="VALID", use_bias=False)(x)
        x = nn.Conv(4, (1, 1), padding="VALID", use_bias=False)(x)
        x = nn.Conv(6, (3, 3), strides=2, padding="VALID", use_bias=False, feature_group_count=2)(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10, use_bias=False)(x)


def test_macs_equal_xla_flops_on_valid_convolutions():
    cost = costs.model_cost(ValidNet(), (20, 20, 3))
    expected = (
        (16 * 16 * 8 * 5 * 5 * 3) + (16 * 16 * 4 * 8) + (7 * 7 * 6 * 3 * 3 * 2) + 7 * 7 * 6 * 10
    )
    assert cost.macs == expected
    assert costs.xla_flops(ValidNet(), (20, 20, 3)) == 2 * expected


def test_same_padding_counts_padded_positions_but_xla_only_in_bounds():
    """The 5x5 SAME conv: XLA counts 2 x 9,193,472 FLOPs (taps in bounds), convention 10,035,200."""
    net = lecture.DirectConv(filters=32)
    ours = costs.model_cost(net, (28, 28, 16)).macs
    assert ours == 10_035_200 == costs.conv_macs((28, 28, 16), 32, 5)
    xla = costs.xla_flops(net, (28, 28, 16)) - 28 * 28 * 32  # minus the bias additions
    # In-bounds taps: per axis, sum over output positions of the kernel rows inside the image.
    taps = sum(min(i + 2, 27) - max(i - 2, 0) + 1 for i in range(28))
    assert xla == 2 * taps * taps * 32 * 16 == 2 * 9_193_472


def test_lenet5_macs_against_xla():
    model = models.get_model("lenet5")
    cost = costs.model_cost(model, (32, 32, 1))
    assert cost.macs == 117_600 + 240_000 + 48_000 + 10_080 + 840
    # XLA adds biases, tanh and pooling on top of the 2 FLOPs per multiply-add.
    xla = costs.xla_flops(model, (32, 32, 1))
    assert 2 * cost.macs <= xla <= 2 * cost.macs * 1.05


def test_layer_params_add_up_to_total():
    for name in ("resnet20", "vgg11_bn", "lenet5_1998"):
        cost = costs.model_cost(models.get_model(name), models.input_shape(name))
        assert sum(layer.params for layer in cost.layers) == cost.params


def test_table_lists_shapes_and_totals():
    text = costs.model_cost(models.get_model("lenet5"), (32, 32, 1)).table()
    for needle in ("32x32x1", "28x28x6", "14x14x6", "10x10x16", "5x5x16", "120", "84", "61,706"):
        assert needle in text


def test_grouped_conv_counts():
    cost = costs.model_cost(models.get_model("alexnet"), (227, 227, 3))
    conv2 = next(layer for layer in cost.layers if layer.path == "conv2")
    assert conv2.params == 5 * 5 * 48 * 256 + 256
    assert conv2.macs == 27 * 27 * 256 * 5 * 5 * 48


def test_bare_layer_is_its_own_row():
    cost = costs.model_cost(nn.Conv(32, (1, 1)), (28, 28, 192))
    assert len(cost.layers) == 1 and cost.params == 192 * 32 + 32
    assert cost.macs == 28 * 28 * 32 * 192


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_macs_closed_form(padding):
    net = nn.Conv(7, (3, 3), strides=2, padding=padding)
    assert costs.model_cost(net, (11, 11, 5)).macs == costs.conv_macs(
        (11, 11, 5), 7, 3, stride=2, padding=padding
    )


def test_costs_allocate_nothing():
    # VGG-19 has 143M parameters; eval_shape must not materialise them.
    before = sum(x.nbytes for x in jax.live_arrays())
    costs.model_cost(models.get_model("vgg19"), (224, 224, 3))
    after = sum(x.nbytes for x in jax.live_arrays())
    assert after - before < 1e6


def test_scanned_resnet_costs_equal_unrolled():
    for depth in (20, 56):
        plain = costs.model_cost(models.get_model(f"resnet{depth}"), (32, 32, 3))
        scanned = costs.model_cost(models.get_model(f"resnet{depth}", scan=True), (32, 32, 3))
        assert (scanned.macs, scanned.params) == (plain.macs, plain.params)
        assert sum(layer.params for layer in scanned.layers) == scanned.params


def test_conv_geometry_of_each_convolution():
    cost = costs.model_cost(ValidNet(), (20, 20, 3))
    conv1, conv2, grouped, dense = cost.layers
    assert conv1.conv == costs.ConvGeometry(
        input_shape=(20, 20, 3),
        kernel_size=(5, 5),
        strides=(1, 1),
        padding=((0, 0), (0, 0)),
        dilation=(1, 1),
        feature_groups=1,
    )
    assert conv2.conv.input_shape == (16, 16, 8) and conv2.conv.kernel_size == (1, 1)
    assert grouped.conv.strides == (2, 2) and grouped.conv.feature_groups == 2
    assert dense.conv is None


@pytest.mark.parametrize(
    ("conv", "padding"),
    [
        (nn.Conv(4, (3, 3), strides=2), ((0, 1), (0, 1))),  # SAME on an even size
        (nn.Conv(4, (3, 3), kernel_dilation=2), ((2, 2), (2, 2))),
        (nn.Conv(4, (3, 3), padding=1), ((1, 1), (1, 1))),
        (nn.Conv(4, (3, 5), padding=((0, 2), 1)), ((0, 2), (1, 1))),
        (nn.Conv(4, (3, 3), padding="CIRCULAR"), ((1, 1), (1, 1))),
    ],
)
def test_conv_geometry_resolves_padding(conv, padding):
    (layer,) = costs.model_cost(conv, (8, 8, 2)).layers
    geometry = layer.conv
    assert geometry.padding == padding
    # The geometry gives back the output size the layer computed.
    for i, (size, k, s, d, (lo, hi)) in enumerate(
        zip(
            geometry.input_shape[:-1],
            geometry.kernel_size,
            geometry.strides,
            geometry.dilation,
            geometry.padding,
            strict=True,
        )
    ):
        assert (size + lo + hi - (k - 1) * d - 1) // s + 1 == layer.output_shape[i]


def test_scanned_resnet_keeps_conv_geometry():
    scanned = costs.model_cost(models.get_model("resnet20", scan=True), (32, 32, 3))
    plain = costs.model_cost(models.get_model("resnet20"), (32, 32, 3))
    geometry = {layer.conv for layer in plain.layers if layer.conv is not None}
    assert {layer.conv for layer in scanned.layers if layer.conv is not None} == geometry


def test_table_rules_after_header_and_before_total():
    lines = costs.model_cost(models.get_model("lenet5"), (32, 32, 1)).table().splitlines()
    assert set(lines[1]) == set(lines[-2]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[-1].startswith("total") and lines[2].startswith("input")
