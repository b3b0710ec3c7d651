"""scripts/profile_convs.py end to end on a tiny CIFAR ResNet (seconds)."""

import importlib
import json
import math

import flax.linen as nn
import pytest

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.perf import convs

_TINY = ["--model=resnet8", "--width=4", "--batch_size=8", "--reps=1", "--step_reps=1"]


@pytest.fixture(scope="module")
def profile_convs():
    return importlib.import_module("scripts.profile_convs")


def _run(module, argv):
    printed = []
    result = module.main([*argv, "--json"], out=printed.append)
    assert len(printed) == 1 and json.loads(printed[0]) == json.loads(json.dumps(result))
    return result


def test_layers_cover_every_convolution(profile_convs):
    r = _run(profile_convs, _TINY)
    model = models.get_model("resnet8", width=4)
    conv_layers = [
        layer for layer in costs.model_cost(model, models.CIFAR).layers if layer.kind == "Conv"
    ]
    assert sum(row["count"] for row in r["layers"]) == len(conv_layers) == 7
    # The profiled shapes carry exactly the model's multiply-adds (batch 8).
    assert sum(row["macs"] * row["count"] for row in r["layers"]) == 8 * sum(
        layer.macs for layer in conv_layers
    )
    for row in r["layers"]:
        for p in convs.PASSES:
            assert math.isfinite(row[f"jax_{p}_ms"]) and row[f"jax_{p}_ms"] > 0
    t = r["jax"]
    assert t["conv_ms"] == pytest.approx(t["fwd_ms"] + t["dx_ms"] + t["dw_ms"])
    assert t["step_ms"] > 0 and t["conv_share"] == pytest.approx(t["conv_ms"] / t["step_ms"])
    assert "torch" not in r
    assert "32x32x4" in convs.format_report(r)


class _Mixed(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.Conv(8, (3, 3))(x)
        x = nn.Conv(8, (3, 3))(x)  # the same geometry as the one before: one entry, count 2
        x = nn.Conv(8, (3, 3), feature_group_count=2)(x)  # grouped: not profiled
        x = nn.Conv(8, (3, 3), kernel_dilation=2)(x)  # dilated: not profiled
        return nn.Conv(4, (1, 1), strides=2, padding="VALID")(x)


def test_distinct_convs_from_the_cost_geometry():
    rows = convs.distinct_convs(_Mixed(), (8, 8, 3))
    assert [(r["in_shape"], r["features"], r["count"]) for r in rows] == [
        ((8, 8, 3), 8, 1),
        ((8, 8, 8), 8, 2),
        ((8, 8, 8), 4, 1),
    ]
    assert rows[1]["pads"] == ((1, 1), (1, 1)) and rows[2]["strides"] == (2, 2)
    assert rows[1]["macs"] == 8 * 8 * 8 * 3 * 3 * 8 and rows[2]["macs"] == 4 * 4 * 4 * 8


def test_vs_torch(profile_convs):
    r = _run(profile_convs, [*_TINY, "--vs_torch"])
    assert r["torch"]["step_ms"] > 0
    assert all(row["torch_dw_ms"] > 0 for row in r["layers"])
    assert "jax / torch" in convs.format_report(r)


def test_unknown_model_is_a_one_line_error(profile_convs):
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        profile_convs.main(["--model=nope"])
