"""The lenet5 study: presets, the shape table, a real short run."""

import csv
import json
import logging
import os

import pytest

from cnn_cases.studies import lenet5
from experiments import lenet5 as lenet5_configs
from experiments import presets


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_presets_are_complete(preset):
    c = lenet5_configs.get_config(preset)
    assert c.preset == preset and c.expected_minutes > 0
    assert c.dataset == "mnist" and not c.augment and c.mean_subtract
    kw = {v: dict(x.model_kwargs) for v, x in lenet5.STUDY.variants(c).items()}
    assert kw == {
        "classic": {"activation": "tanh", "pool": "avg"},
        "modern": {"activation": "relu", "pool": "max"},
    }


def test_cpu_preset_is_the_shorter_schedule():
    cpu, full = lenet5_configs.get_config("cpu"), lenet5_configs.get_config("full")
    assert cpu.num_steps < full.num_steps and cpu.expected_minutes < full.expected_minutes
    for c in (cpu, full):  # both learning-rate drops happen during the run, in order
        assert 0 < c.lr_boundaries[0] < c.lr_boundaries[1] < c.num_steps


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        lenet5_configs.get_config("fast")


def test_smoke_run_logs_shapes_and_writes_every_file(tmp_path, caplog):
    config = lenet5_configs.get_config("smoke")
    config.dataset = "synthetic_28x28x1"
    workdir = str(tmp_path / "run")
    caplog.set_level(logging.INFO)
    results = lenet5.STUDY.run(config, workdir)
    out = caplog.text
    for line in ("c1 ", "28x28x6", "5x5x16", "61,706"):
        assert line in out
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    assert list(results) == ["classic", "modern"]
    for r in results.values():
        assert {"test_error", "train_error", "params", "steps", "seconds"} <= set(r)
        assert r["params"] == 61_706 and r["steps"] == config.num_steps
    with open(os.path.join(workdir, "curves.csv")) as f:
        assert {r["variant"] for r in csv.DictReader(f)} == {"classic", "modern"}
    with open(os.path.join(workdir, "lenet5.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_seeds_give_mean_and_spread(tmp_path):
    config = lenet5_configs.get_config("smoke")
    config.dataset, config.seeds = "synthetic_28x28x1", 3
    results = lenet5.STUDY.run(config, str(tmp_path / "run"))
    for r in results.values():
        assert r["seeds"] == 3 and len(r["test_errors"]) == 3
        assert r["test_error"] == pytest.approx(sum(r["test_errors"]) / 3)
    text = lenet5.STUDY.summary(results, str(tmp_path / "run"))
    assert f"{100 * results['modern']['test_error_std']:.2f}%" in text and " ± " in text
