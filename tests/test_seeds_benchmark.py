"""scripts/seeds_benchmark.py end to end on a tiny CIFAR ResNet (seconds)."""

import importlib
import json

import pytest
from absl import flags

from cnn_cases.perf import cli, seeds, timing
from cnn_cases.perf.workload import Workload


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("scripts.seeds_benchmark")


def test_vmapped_and_one_by_one_do_the_same_work(script, monkeypatch):
    def time_calls(fns, **kw):  # the steps run; the clock says 0.2 s, 0.4 s and 0.5 s, 0.9 s
        timing.time_calls(fns, **kw)
        fixed = {"vmapped": (0.2, 0.4), "one_by_one": (0.5, 0.9)}
        return {name: timing.Timing(fixed[name]) for name in fns}

    monkeypatch.setattr(seeds, "time_calls", time_calls)
    printed = []
    argv = ["--model=resnet8", "--width=4", "--batch_size=8", "--image_size=16", "--seeds=2"]
    argv += ["--reps=2", "--steps_per_rep=1", "--warmup=1", "--json"]
    r = script.run(cli.parse(script.define_flags, argv), out=printed.append)
    assert json.loads(printed[0]) == json.loads(json.dumps(r))
    assert r["input_shape"] == [16, 16, 3] and r["seeds"] == 2
    assert r["vmapped_seconds"] == [0.2, 0.4] and r["one_by_one_seconds"] == [0.5, 0.9]
    assert r["vmapped_step_s"] == pytest.approx(0.3) and r["one_by_one_step_s"] == 0.7
    assert r["speedup"] == pytest.approx(7 / 3)
    assert r["max_param_difference"] < 1e-5  # 4 steps each, same batches: the same parameters
    assert "vmapped / one by one" in seeds.format_report(r)


def test_fewer_than_two_seeds_is_refused(script):
    with pytest.raises(flags.IllegalFlagValueError, match="compare at least 2 seeds"):
        cli.parse(script.define_flags, ["--seeds=1"])
    with pytest.raises(ValueError, match="seeds=1"):
        seeds.benchmark(Workload(), seeds=1)
