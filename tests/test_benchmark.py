"""scripts/benchmark.py end to end on a tiny CIFAR ResNet (seconds, synthetic data)."""

import importlib
import json
import math

import pytest
from absl import flags

from cnn_cases.interop import pytorch
from cnn_cases.perf import cli, throughput, timing
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
# resnet8 at width 4 on 32x32x3: conv_init, 2 + 2 + 2 block convs (two stride 2), the head.
MACS = 32 * 32 * (4 * 27 + 2 * 4 * 36) + 16 * 16 * 8 * (36 + 72) + 8 * 8 * 16 * (72 + 144) + 160


@pytest.fixture(scope="module")
def benchmark():
    return importlib.import_module("scripts.benchmark")


def _run(benchmark, argv):
    printed = []
    result = benchmark.run(cli.parse(benchmark.define_flags, argv), out=printed.append)
    assert len(printed) == 1
    assert json.loads(printed[0]) == json.loads(json.dumps(result))
    return result


@pytest.fixture(scope="module")
def tiny(benchmark):
    """The tiny run's result, shared: each run compiles a model."""
    return _run(benchmark, _TINY)


@pytest.fixture
def fixed_step_times(monkeypatch):
    """The timed steps run, but report JAX 0.1 s and 0.2 s, PyTorch 0.4 s and 0.2 s eager and
    0.2 s and 0.1 s compiled, JAX's f32 step 0.3 s and 0.4 s per step."""
    fixed = {
        "jax": (0.1, 0.2),
        "torch": (0.4, 0.2),
        "torch_compiled": (0.2, 0.1),
        "jax_f32": (0.3, 0.4),
        "jax_unrolled": (0.1, 0.1),
    }

    def time_calls(fns, **kw):
        result = timing.time_calls(fns, **kw)
        if "jax" not in fns:  # the matmul, the pipeline, PyTorch's first step
            return result
        return {name: timing.Timing(fixed[name]) for name in fns}

    monkeypatch.setattr(throughput, "time_calls", time_calls)


def _positive_finite(result, keys):
    for key in keys:
        value = result[key]
        assert isinstance(value, float | int) and math.isfinite(value) and value > 0, (key, value)


def test_benchmark_json_keys_and_values(tiny):
    r = tiny
    _positive_finite(r, (*KEYS, "pipeline_ratio", "pct_of_peak", "macs_per_image", "params"))
    assert r["params"] == 5006  # resnet8 at width 4
    assert r["macs_per_image"] == MACS == 848_032
    assert len(r["images_per_s_reps"]) == 2
    assert "torch_images_per_s" not in r
    assert "train step" in throughput.format_report(r)


def test_benchmark_vs_torch(benchmark, fixed_step_times):
    r = _run(benchmark, [*_TINY, "--vs_torch", "--notorch_compile"])
    _positive_finite(r, (*KEYS, "torch_first_step_s"))
    assert "torch_compiled_images_per_s" not in r and "torch_compile_s" not in r
    assert r["torch_params"] == r["params"]  # the reference is the same net
    # Batch 8: JAX 80 and 40 images/s, PyTorch 20 and 40; medians 60 and 30.
    assert r["images_per_s_reps"] == [80.0, 40.0] and r["torch_images_per_s_reps"] == [20.0, 40.0]
    assert r["images_per_s"] == 60.0 and r["torch_images_per_s"] == 30.0
    assert r["step_ms"] == pytest.approx(1e3 * 8 / 60)
    assert r["ratio_jax_over_torch"] == pytest.approx(2.0)
    assert r["ratio_jax_over_torch_paired"] == pytest.approx(2.5)  # median of 4 and 1
    assert r["torch_gflops"] == pytest.approx(30 * 6 * 848_032 / 1e9)
    assert "JAX / PyTorch" in throughput.format_report(r)


def test_benchmark_vs_torch_compile(benchmark, fixed_step_times):
    # One compile serves both parts (the second finds inductor's cache): first, the compiled
    # step computes the eager one.
    workload = Workload(model="resnet8", width=4, batch_size=8)
    eager = pytorch.TorchTrainStep(workload)
    compiled = pytorch.TorchTrainStep(workload, compile=True)
    assert compiled.compiled and not eager.compiled
    for _ in range(3):  # the first two compile (the update again, with momentum buffers)
        assert float(compiled.step()) == pytest.approx(float(eager.step()), rel=1e-5)
    # Then the benchmark's compiled step; its timed steps are fixed.
    r = _run(benchmark, [*_TINY, "--vs_torch"])
    _positive_finite(r, ("torch_first_step_s", "torch_compile_s"))
    # Batch 8: compiled 40 and 80 images/s, median 60, as JAX's: ratio 1; paired 0.5 and 2.
    assert r["torch_compiled_images_per_s_reps"] == [40.0, 80.0]
    assert r["torch_compiled_images_per_s"] == 60.0
    assert r["ratio_jax_over_torch_compiled"] == pytest.approx(1.0)
    assert r["ratio_jax_over_torch_compiled_paired"] == pytest.approx(1.25)  # median of 2, 0.5
    assert r["ratio_jax_over_torch"] == pytest.approx(2.0)  # eager, as without compile
    assert "JAX / PyTorch torch.compile" in throughput.format_report(r)


def test_benchmark_bf16_vs_f32(benchmark, fixed_step_times):
    argv = [*_TINY, "--dtype=bfloat16", "--vs_f32", "--vs_torch", "--notorch_compile"]
    r = _run(benchmark, argv)
    # f32: 0.35 s median against bf16's 0.15 s; paired 3 and 2.
    assert r["f32_images_per_s_reps"] == [8 / 0.3, 8 / 0.4]
    assert r["ratio_over_f32"] == pytest.approx(0.35 / 0.15)
    assert r["ratio_over_f32_paired"] == pytest.approx(2.5)
    report = throughput.format_report(r)
    assert "eager bf16 autocast" in report and "bfloat16 / f32" in report
    values = cli.parse(benchmark.define_flags, ["--vs_f32"])
    with pytest.raises(SystemExit, match="error: --vs_f32 compares a bfloat16 step"):
        benchmark.run(values)


def test_benchmark_scan_vs_unrolled(benchmark, fixed_step_times):
    r = _run(benchmark, [*_TINY, "--scan", "--vs_unrolled"])
    assert r["scan"] and r["unrolled_images_per_s"] == 80.0
    assert r["ratio_over_unrolled"] == pytest.approx(0.1 / 0.15)  # scanned 0.15 s median
    assert r["ratio_over_unrolled_paired"] == pytest.approx(0.75)  # median of 1 and 0.5
    assert r["unrolled_compile_s"] > 0 and "scan / unrolled" in throughput.format_report(r)
    with pytest.raises(SystemExit, match="error: --vs_unrolled compares a scanned step"):
        benchmark.run(cli.parse(benchmark.define_flags, ["--vs_unrolled"]))


def test_benchmark_rejects_bad_arguments(benchmark):
    with pytest.raises(flags.IllegalFlagValueError, match="--reps must be >= 1"):
        cli.parse(benchmark.define_flags, ["--reps=0"])
    with pytest.raises(flags.IllegalFlagValueError, match="--batch_size must be >= 1"):
        cli.parse(benchmark.define_flags, ["--batch_size=-1"])
    with pytest.raises(flags.IllegalFlagValueError, match="kernels"):
        cli.parse(benchmark.define_flags, ["--kernels=cuda"])
    with pytest.raises(ValueError, match="CIFAR"):
        pytorch.TorchTrainStep(Workload(model="vgg16"))
    # Before any timing, as a one-line error.
    values = cli.parse(benchmark.define_flags, ["--model=vgg16", "--vs_torch"])
    with pytest.raises(SystemExit, match="error: the PyTorch reference"):
        benchmark.run(values)


def test_benchmark_mfu_against_a_given_peak(benchmark, tiny, fixed_step_times):
    r = _run(benchmark, [*_TINY, "--peak_tflops=0.5"])
    # 60 images/s x 3 passes x 2 FLOPs x 848,032 mult-adds = 0.3053 GFLOP/s of 500.
    assert r["gflops"] == pytest.approx(60 * 6 * 848_032 / 1e9)
    assert r["mfu"] == pytest.approx(0.30529152 / 500) and r["mfu_peak_tflops"] == 0.5
    assert "MFU" in throughput.format_report(r)
    assert tiny["mfu"] is None
    with pytest.raises(flags.IllegalFlagValueError, match="--peak_tflops must be positive"):
        cli.parse(benchmark.define_flags, ["--peak_tflops=0"])


def test_flags_keep_their_defaults(benchmark):
    values = cli.parse(benchmark.define_flags).flag_values_dict()
    assert cli.workload(values) == Workload(model="resnet20", batch_size=128, num_classes=10)
    assert (values["warmup"], values["reps"], values["steps_per_rep"]) == (2, 5, 2)
    assert (values["dataset"], values["data_dir"], values["pipeline_batches"]) == (
        "synthetic",
        None,
        10,
    )
    assert (values["matmul_size"], values["peak_tflops"], values["torch_threads"]) == (
        2048,
        None,
        2,
    )
    assert not any(values[k] for k in ("vs_torch", "json", "scan", "vs_f32", "vs_unrolled"))
    assert values["torch_compile"]
