"""scripts/seeds_benchmark.py end to end on a tiny CIFAR ResNet (seconds)."""

import importlib
import json

import pytest

from cnn_cases.perf import seeds
from cnn_cases.perf.workload import Workload


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("scripts.seeds_benchmark")


def test_vmapped_and_one_by_one_do_the_same_work(script):
    printed = []
    argv = ["--model=resnet8", "--width=4", "--batch_size=8", "--image_size=16", "--seeds=2"]
    r = script.main(
        [*argv, "--reps=2", "--steps_per_rep=1", "--warmup=1", "--json"], out=printed.append
    )
    assert json.loads(printed[0]) == json.loads(json.dumps(r))
    assert r["input_shape"] == [16, 16, 3] and r["seeds"] == 2
    assert len(r["vmapped_seconds"]) == len(r["one_by_one_seconds"]) == 2
    assert r["vmapped_step_s"] > 0 and r["speedup"] == pytest.approx(
        r["one_by_one_step_s"] / r["vmapped_step_s"]
    )
    assert r["max_param_difference"] < 1e-5  # 4 steps each, same batches: the same parameters
    assert "vmapped / one by one" in seeds.format_report(r)


def test_fewer_than_two_seeds_is_refused(script):
    with pytest.raises(SystemExit):
        script.parse_args(["--seeds=1"])
    with pytest.raises(ValueError, match="seeds=1"):
        seeds.benchmark(Workload(), seeds=1)
