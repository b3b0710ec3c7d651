"""The run directory's TensorBoard events: written without TensorFlow, read by TensorBoard."""

import os

import pytest
from tensorboard.backend.event_processing import event_accumulator

from cnn_cases.engine import rundir


def _scalars(workdir: str, tag: str) -> list[tuple[int, float]]:
    events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_events_after_a_resume_show_each_step_once_with_the_resumed_values(tmp_path):
    workdir = str(tmp_path)
    writer = rundir.MetricsWriter(workdir, resume_step=0)
    for step in range(1, 7):  # the run is interrupted after step 6, its checkpoint is at 3
        writer.write(step, "train", {"loss": float(step), "error": [0.5, 0.25]})
    writer.close()
    writer = rundir.MetricsWriter(workdir, resume_step=3)
    for step in range(4, 8):
        writer.write(step, "train", {"loss": 10.0 + step, "error": [0.5, 0.25]})
    writer.close()
    expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0), (7, 17.0)]
    assert _scalars(workdir, "train/loss") == expected
    assert [r["loss"] for r in rundir.read_metrics(workdir)] == [v for _, v in expected]
    assert _scalars(workdir, "train/error/seed_1") == [(s, 0.25) for s, _ in expected]
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 2


def test_a_writer_off_process_zero_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.jax, "process_index", lambda: 1)
    writer = rundir.MetricsWriter(str(tmp_path), resume_step=0)
    writer.write(1, "train", {"loss": 1.0})
    writer.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("first_step", [1, 501])
def test_event_writer_files_are_closed_and_readable(tmp_path, first_step):
    w = rundir.EventWriter(str(tmp_path / "tb"), first_step)
    w.scalars(first_step, {"a": 1.5, "b/c": -2.0})
    w.close()
    w.close()  # closing twice is harmless
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["a", "b/c"]
    assert [(e.step, e.value) for e in events.Scalars("b/c")] == [(first_step, -2.0)]
