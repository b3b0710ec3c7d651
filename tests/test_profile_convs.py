"""scripts/profile_convs.py end to end on a tiny CIFAR ResNet (seconds)."""

import importlib
import json
import math

import flax.linen as nn
import pytest
from absl import flags

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.perf import cli, convs, timing

_TINY = [
    "--model=resnet8",
    "--width=4",
    "--batch_size=8",
    "--reps=1",
    "--step_reps=1",
    "--matmul_size=256",
]


@pytest.fixture(scope="module")
def profile_convs():
    return importlib.import_module("scripts.profile_convs")


def _run(module, argv):
    printed = []
    result = module.run(cli.parse(module.define_flags, [*argv, "--json"]), out=printed.append)
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
    assert r["jax"]["step_ms"] > 0
    assert "torch" not in r
    assert "32x32x4" in convs.format_report(r)


def test_totals_weigh_each_shape_by_its_layers(profile_convs, monkeypatch):
    """Every pass made to take 1 ms and the step 100 ms: 7 convolutions, 3 passes each."""

    def time_calls(fns, *, reps, warmup=0, **kw):
        timing.time_calls(fns, reps=1, warmup=0, **kw)  # each pass and the step still run
        seconds = (0.1, 0.1) if reps == 2 else (0.001,)  # --step_reps=2, --reps=1
        return {name: timing.Timing(seconds) for name in fns}

    monkeypatch.setattr(convs, "time_calls", time_calls)
    r = _run(profile_convs, [*_TINY, "--step_reps=2"])
    assert all(row[f"jax_{p}_ms"] == 1.0 for row in r["layers"] for p in convs.PASSES)
    t = r["jax"]
    # No input gradient for the first convolution: the images need none.
    assert (t["fwd_ms"], t["dx_ms"], t["dw_ms"]) == (7.0, 6.0, 7.0)
    assert t["conv_ms"] == 20.0 and t["step_ms"] == 100.0
    assert t["conv_share"] == pytest.approx(0.20)
    # 7 BatchNorms (the stem's, and two per block), two passes each; the optimiser's update.
    assert sum(n["count"] for n in r["norms"]) == 7
    assert t["bn_ms"] == 14.0 and t["optimizer_ms"] == 1.0
    assert t["other_ms"] == 100.0 - 20.0  # everything but the convolutions, as for PyTorch
    assert t["rest_ms"] == 100.0 - 20.0 - 14.0 - 1.0
    report = convs.format_report(r)
    assert "20% convolutions, 80.0 ms the rest" in report
    assert "BatchNorm      14.0    14%" in report


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


def test_distinct_norms_and_their_bytes():
    model = models.get_model("resnet8", width=4)
    norms = convs.distinct_norms(model, models.CIFAR)
    # The stem's and each block's first: ReLU; each block's second: residual and ReLU.
    assert [(n["shape"], n["relu"], n["add"], n["count"]) for n in norms] == [
        ((32, 32, 4), True, False, 2),
        ((32, 32, 4), True, True, 1),
        ((16, 16, 8), True, False, 1),
        ((16, 16, 8), True, True, 1),
        ((8, 8, 16), True, False, 1),
        ((8, 8, 16), True, True, 1),
    ]
    # 10 elements: forward x twice, (r), y; backward x, dy, y twice, dx, (dres).
    assert convs.norm_bytes({"shape": (10,), "relu": True, "add": True}, 1, 4) == {
        "fwd": 4 * 10 * 4,
        "bwd": 8 * 10 * 4,
    }
    assert convs.norm_bytes({"shape": (10,), "relu": False, "add": False}, 2, 2) == {
        "fwd": 3 * 20 * 2,
        "bwd": 5 * 20 * 2,
    }


def test_step_split_counts_every_handler_call(profile_convs):
    r = _run(profile_convs, _TINY)
    split = r["in_step"]
    # Per step: 7 convolutions forward and kernel gradient; the input gradient of all but the
    # first (the image needs none); 7 BatchNorms forward and backward.
    calls = {name: split[f"{name}_calls"] for name in convs.HANDLERS}
    assert calls == {
        "conv_forward": 7,
        "conv_backward_data": 6,
        "conv_backward_weights": 7,
        "bn_train": 7,
        "bn_backward": 7,
    }
    handlers_ms = sum(split[f"{name}_ms"] for name in convs.HANDLERS)
    assert 0 < handlers_ms < split["step_ms"]
    assert split["xla_ms"] == pytest.approx(split["step_ms"] - handlers_ms)
    assert "Inside the whole step" in convs.format_report(r)
    xla = _run(profile_convs, [*_TINY, "--kernels=xla"])
    assert xla["in_step"] is None and "Inside" not in convs.format_report(xla)


def test_vs_torch(profile_convs):
    r = _run(profile_convs, [*_TINY, "--vs_torch"])
    assert r["torch"]["step_ms"] > 0
    assert all(row["torch_dw_ms"] > 0 for row in r["layers"])
    assert "jax / torch" in convs.format_report(r)


def test_unknown_model_is_a_one_line_error(profile_convs):
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        profile_convs.run(cli.parse(profile_convs.define_flags, ["--model=nope"]))
    with pytest.raises(flags.IllegalFlagValueError, match="--step_reps must be >= 1"):
        cli.parse(profile_convs.define_flags, ["--step_reps=0"])
