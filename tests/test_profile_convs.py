"""scripts/profile_convs.py end to end on a tiny CIFAR ResNet (seconds)."""

import json
import math

import pytest

from cnn_cases import costs, models
from tests.conftest import load_script

_TINY = ["--model=resnet8", "--width=4", "--batch_size=8", "--reps=1", "--step_reps=1"]


@pytest.fixture(scope="module")
def profile_convs():
    return load_script("profile_convs")


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
        for p in profile_convs.PASSES:
            assert math.isfinite(row[f"jax_{p}_ms"]) and row[f"jax_{p}_ms"] > 0
    t = r["jax"]
    assert t["conv_ms"] == pytest.approx(t["fwd_ms"] + t["dx_ms"] + t["dw_ms"])
    assert t["step_ms"] > 0 and t["conv_share"] == pytest.approx(t["conv_ms"] / t["step_ms"])
    assert "torch" not in r


def test_vs_torch(profile_convs):
    pytest.importorskip("torch")
    r = _run(profile_convs, [*_TINY, "--vs_torch"])
    assert r["torch"]["step_ms"] > 0
    assert all(row["torch_dw_ms"] > 0 for row in r["layers"])


def test_unknown_model_is_a_one_line_error(profile_convs):
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        profile_convs.main(["--model=nope"])
