"""scripts/grad_accuracy.py on a tiny CIFAR ResNet: default f32 agrees with float64."""

import importlib
import json

import numpy as np
import pytest

from cnn_cases.perf import cli, gradients
from cnn_cases.perf.workload import Workload

_TINY = Workload(model="resnet8", width=4, batch_size=8)


@pytest.fixture(scope="module")
def grad_accuracy():
    return importlib.import_module("scripts.grad_accuracy")


def test_default_f32_gradient_is_close_to_float64(grad_accuracy, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    printed = []
    argv = ["--model=resnet8", "--width=4", "--batch_size=8", "--json"]
    r = grad_accuracy.run(cli.parse(grad_accuracy.define_flags, argv), out=printed.append)
    assert json.loads(printed[0]) == r
    assert 0 < r["relative_error"] < 1e-4, r  # f32 rounding, nothing more
    assert r["worst_tensor_relative_error"] >= r["relative_error"]
    assert "relative error" in gradients.format_report(r)


def test_compare_measures_the_difference():
    ref = {"a": np.array([3.0, 4.0]), "b": np.array([0.0, 1.0])}
    test = {"a": np.array([3.0, 4.0]), "b": np.array([0.0, 1.1])}
    r = gradients.compare(test, ref)
    assert r["relative_error"] == pytest.approx(0.1 / np.sqrt(26))
    assert r["worst_tensor"] == "b" and r["worst_tensor_relative_error"] == pytest.approx(0.1)


def test_float64_needs_x64_at_start():
    with pytest.raises(ValueError, match="JAX_ENABLE_X64"):
        gradients.gradients(Workload(model="resnet8", dtype="float64"))


def test_torch_f32_gradient_is_close_to_its_float64():
    r = gradients.torch_gradient_error(_TINY)
    assert 0 < r["relative_error"] < 1e-4, r
    assert r["worst_tensor"].startswith(("conv_init", "bn_init", "stage", "head"))
