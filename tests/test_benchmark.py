"""scripts/benchmark.py end to end on a tiny CIFAR ResNet (seconds, synthetic data)."""

import importlib
import json
import math

import pytest

from cnn_cases.interop import pytorch
from cnn_cases.perf import throughput
from cnn_cases.perf.workload import Workload

_TINY = [
    "--model=resnet8",
    "--width=4",
    "--batch_size=8",
    "--reps=2",
    "--steps_per_rep=1",
    "--warmup=1",
    "--matmul_size=256",
    "--pipeline_batches=2",
    "--dataset=synthetic",
    "--json",
]
KEYS = ("images_per_s", "gflops", "peak_gflops", "compile_s", "pipeline_images_per_s")


@pytest.fixture(scope="module")
def benchmark():
    return importlib.import_module("scripts.benchmark")


def _run(benchmark, argv):
    printed = []
    result = benchmark.main(argv, out=printed.append)
    assert len(printed) == 1
    assert json.loads(printed[0]) == json.loads(json.dumps(result))
    return result


@pytest.fixture(scope="module")
def tiny(benchmark):
    """The tiny run's result, shared: each run compiles a model."""
    return _run(benchmark, _TINY)


def _positive_finite(result, keys):
    for key in keys:
        value = result[key]
        assert isinstance(value, float | int) and math.isfinite(value) and value > 0, (key, value)


def test_benchmark_json_keys_and_values(tiny):
    r = tiny
    _positive_finite(r, (*KEYS, "pipeline_ratio", "pct_of_peak", "macs_per_image", "params"))
    assert r["params"] == 5006  # resnet8 at width 4
    assert len(r["images_per_s_reps"]) == 2
    assert "torch_images_per_s" not in r
    assert "train step" in throughput.format_report(r)


def test_benchmark_vs_torch(benchmark):
    r = _run(benchmark, [*_TINY, "--vs_torch"])
    _positive_finite(r, (*KEYS, "torch_images_per_s", "ratio_jax_over_torch"))
    assert r["torch_params"] == r["params"]  # the reference is the same net
    assert len(r["torch_images_per_s_reps"]) == 2
    assert r["ratio_jax_over_torch"] == pytest.approx(r["images_per_s"] / r["torch_images_per_s"])
    assert "JAX / PyTorch" in throughput.format_report(r)


def test_benchmark_rejects_bad_arguments(benchmark):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--reps=0"])
    with pytest.raises(ValueError, match="CIFAR"):
        pytorch.TorchTrainStep(Workload(model="vgg16"))
    # Before any timing, as a one-line error.
    with pytest.raises(SystemExit, match="error: the PyTorch reference"):
        benchmark.main(["--model=vgg16", "--vs_torch"])


def test_benchmark_mfu_against_a_given_peak(benchmark, tiny):
    r = _run(benchmark, [*_TINY, "--peak_tflops=0.5"])
    assert r["mfu"] == pytest.approx(r["gflops"] / 500) and r["mfu_peak_tflops"] == 0.5
    assert "MFU" in throughput.format_report(r)
    assert tiny["mfu"] is None
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--peak_tflops=0"])
