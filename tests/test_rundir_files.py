"""The run directory's JSON files: results, config, metrics, the mean, and the workdir check."""

import json
import os

import ml_collections
import numpy as np
import pytest

from cnn_cases.engine import rundir


def _result(error: float) -> rundir.RunResult:
    return rundir.RunResult(
        train_error=error,
        test_error=2 * error,
        train_loss=0.5,
        test_loss=0.75,
        steps=10,
        seconds=1.5,
        params=5006,
        curves=[{"step": 10, "test_error": 2 * error}],
    )


def test_write_json_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "a.json")
    rundir.write_json(path, {"b": 1, "a": [1, 2]})
    rundir.write_json(path, {"c": None})
    assert rundir.read_json(path) == {"c": None}
    assert os.listdir(tmp_path) == ["a.json"]


def test_write_json_off_process_zero_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.jax, "process_index", lambda: 1)
    rundir.write_json(str(tmp_path / "a.json"), {"a": 1})
    assert os.listdir(tmp_path) == []


def test_one_seed_is_stored_as_an_object_several_as_a_list(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    assert rundir.read_results(str(one)) is None and rundir.read_result(str(one)) is None
    rundir.write_results(str(one), [_result(0.1)])
    stored = json.loads((one / "result.json").read_text())
    assert isinstance(stored, dict) and stored["test_error"] == 0.2 and stored["params"] == 5006
    assert rundir.read_result(str(one)) == _result(0.1)
    assert rundir.read_results(str(one)) == [_result(0.1)]
    rundir.write_results(str(two), [_result(0.1), _result(0.3)])
    assert [r["train_error"] for r in json.loads((two / "result.json").read_text())] == [0.1, 0.3]
    assert rundir.read_results(str(two)) == [_result(0.1), _result(0.3)]
    with pytest.raises(ValueError, match="holds 2 seeds; read them with read_results"):
        rundir.read_result(str(two))


def _config(**kw) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"model": "resnet20", "num_steps": 100, "log_every": 10, **kw})


def test_check_config_writes_once_then_names_every_key_that_differs(tmp_path):
    workdir = str(tmp_path)
    rundir.check_config(workdir, _config())
    assert rundir.read_json(os.path.join(workdir, "config.json")) == {
        "log_every": 10,
        "model": "resnet20",
        "num_steps": 100,
    }
    rundir.check_config(workdir, _config())  # the same config resumes
    rundir.check_config(workdir, _config(log_every=5), resumable=("log_every",))
    with pytest.raises(ValueError, match=r"model: 'resnet20' -> 'resnet56', num_steps: 100 -> 200"):
        rundir.check_config(workdir, _config(model="resnet56", num_steps=200))
    with pytest.raises(ValueError, match=r"seeds: None -> 2"):
        rundir.check_config(workdir, _config(seeds=2))


def test_check_config_reads_an_older_config_with_the_added_defaults(tmp_path):
    workdir = str(tmp_path)
    rundir.check_config(workdir, _config())
    rundir.check_config(workdir, _config(seeds=1), added={"seeds": 1})
    with pytest.raises(ValueError, match=r"seeds: 1 -> 2"):
        rundir.check_config(workdir, _config(seeds=2), added={"seeds": 1})


def test_check_workdir_creates_it_or_says_why_it_cannot(tmp_path):
    workdir = tmp_path / "runs" / "a"
    rundir.check_workdir(str(workdir))
    assert workdir.is_dir() and os.listdir(workdir) == []  # the probe file is gone
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"is not writable .*pass a --workdir you can write to"):
        rundir.check_workdir(str(tmp_path / "file" / "a"))


def test_read_metrics_filters_by_kind(tmp_path):
    assert rundir.read_metrics(str(tmp_path)) == []
    history = rundir.History()
    writer = rundir.MetricsWriter(str(tmp_path), history, first_step=1)
    writer.write(history.add(1, "train", {"loss": 2.0}))
    writer.write(history.add(1, "eval", {"error": 0.5}))
    writer.write(history.add(2, "train", {"loss": 1.0}))
    writer.close()
    assert [r["loss"] for r in rundir.read_metrics(str(tmp_path), "train")] == [2.0, 1.0]
    assert rundir.read_metrics(str(tmp_path), "eval") == [{"step": 1, "kind": "eval", "error": 0.5}]
    assert len(rundir.read_metrics(str(tmp_path))) == 3


def test_dataset_mean_is_computed_once_then_read(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.full((2, 2, 3), 0.25, np.float32)

    first = rundir.dataset_mean(str(tmp_path), compute)
    second = rundir.dataset_mean(str(tmp_path), compute)
    assert len(calls) == 1 and second.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert sorted(os.listdir(tmp_path)) == ["mean.npy"]
