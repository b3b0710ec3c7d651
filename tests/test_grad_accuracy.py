"""scripts/grad_accuracy.py on a tiny CIFAR ResNet: default f32 agrees with float64."""

import json

import numpy as np
import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def grad_accuracy():
    return load_script("grad_accuracy")


def test_default_f32_gradient_is_close_to_float64(grad_accuracy, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    printed = []
    r = grad_accuracy.main(
        ["--model=resnet8", "--width=4", "--batch_size=8", "--json"], out=printed.append
    )
    assert json.loads(printed[0]) == r
    assert 0 < r["relative_error"] < 1e-4, r  # f32 rounding, nothing more
    assert r["worst_tensor_relative_error"] >= r["relative_error"]


def test_compare_measures_the_difference(grad_accuracy):
    ref = {"a": np.array([3.0, 4.0]), "b": np.array([0.0, 1.0])}
    test = {"a": np.array([3.0, 4.0]), "b": np.array([0.0, 1.1])}
    r = grad_accuracy.compare(test, ref)
    assert r["relative_error"] == pytest.approx(0.1 / np.sqrt(26))
    assert r["worst_tensor"] == "b" and r["worst_tensor_relative_error"] == pytest.approx(0.1)
