"""cnn_cases.perf's building blocks: the timing helper and the PyTorch reference's layout."""

import math

import pytest

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.interop import pytorch
from cnn_cases.perf import timing


def _clock(readings):
    readings = iter(readings)
    return lambda: next(readings)


def test_time_calls_warms_up_then_returns_medians_of_the_clock():
    calls = []
    t = timing.time_calls(
        {"f": lambda: calls.append(1)},
        reps=3,
        warmup=2,
        sync=lambda result: None,
        clock=_clock([0.0, 1.0, 10.0, 13.0, 20.0, 22.0]),
    )
    assert len(calls) == 2 + 3
    assert t["f"].seconds == (1.0, 3.0, 2.0) and t["f"].median == 2.0
    assert t["f"].rates(6.0) == [6.0, 2.0, 3.0]


def test_time_calls_alternates_and_syncs_each_repetition_once():
    log, synced = [], []
    fns = {"a": lambda: log.append("a") or "ra", "b": lambda: log.append("b") or "rb"}
    t = timing.time_calls(
        fns, reps=2, warmup=1, number=2, sync=synced.append, clock=_clock(range(0, 80, 4))
    )
    assert log == ["a", "b"] + ["a", "a", "b", "b"] * 2
    assert synced == ["ra", "rb"] * 3  # after each warm-up, then after each repetition
    assert t["a"].seconds == t["b"].seconds == (2.0, 2.0)  # 4 clock units / 2 calls
    with pytest.raises(ValueError):
        timing.time_calls(fns, reps=0)


def test_torch_reference_needs_a_cifar_net():
    with pytest.raises(ValueError, match="CIFAR"):
        pytorch.cifar_net("resnet50")  # the ImageNet one


def _torch_layout(shape):
    if len(shape) == 4:  # a conv kernel: HWIO -> OIHW
        h, w, i, o = shape
        return (o, i, h, w)
    return shape[::-1]  # a dense kernel (in, out) -> (out, in); vectors stay


def test_torch_reference_mirrors_the_flax_names_and_shapes():
    model = models.get_model("resnet8", width=4)
    variables = costs.init_shapes(model, models.CIFAR, train=True)
    renames = {"kernel": "weight", "scale": "weight", "bias": "bias"}
    renames |= {"mean": "running_mean", "var": "running_var"}
    flax_shapes = {
        ".".join((*path[:-1], renames[path[-1]])): _torch_layout(shape)
        for collection in ("params", "batch_stats")
        for path, shape in _flatten(variables[collection]).items()
    }
    net = pytorch.cifar_net("resnet8", width=4)
    torch_shapes = {
        name: tuple(t.shape)
        for name, t in net.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }
    assert torch_shapes == flax_shapes
    params = sum(math.prod(s) for s in _flatten(variables["params"]).values())
    assert pytorch.count_params(net) == params == 5006
    assert isinstance(net.stage2_block1.shortcut, pytorch.ShortcutA)
    assert net.stage1_block1.shortcut is None


def _flatten(tree, prefix=()):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flatten(value, (*prefix, key))
        else:
            out[(*prefix, key)] = tuple(value.shape)
    return out
