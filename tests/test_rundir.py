"""The run directory's history, metrics file and TensorBoard events (written without
TensorFlow, read by TensorBoard)."""

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
    history = rundir.History()
    writer = rundir.MetricsWriter(workdir, history, first_step=1)
    for step in range(1, 7):  # the run is interrupted after step 6, its checkpoint is at 3
        writer.write(history.add(step, "train", {"loss": float(step), "error": [0.5, 0.25]}))
        if step == 3:
            saved = rundir.History([dict(r) for r in history.rows])  # as the checkpoint holds it
    writer.close()
    history = saved
    writer = rundir.MetricsWriter(workdir, history, first_step=4)
    for step in range(4, 8):
        writer.write(history.add(step, "train", {"loss": 10.0 + step, "error": [0.5, 0.25]}))
    writer.close()
    expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0), (7, 17.0)]
    assert _scalars(workdir, "train/loss") == expected
    assert [r["loss"] for r in rundir.read_metrics(workdir)] == [v for _, v in expected]
    assert _scalars(workdir, "train/error/seed_1") == [(s, 0.25) for s, _ in expected]
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 2


def test_a_writer_off_process_zero_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.jax, "process_index", lambda: 1)
    history = rundir.History()
    writer = rundir.MetricsWriter(str(tmp_path), history, first_step=1)
    writer.write(history.add(1, "train", {"loss": 1.0}))
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


def test_history_rows_by_kind_and_the_clock():
    h = rundir.History()
    assert h.seconds() == 0.0 and h.of("eval") == []
    h.add(1, "train", {"loss": 2.0, "seconds": 1.5})
    h.add(1, "eval", {"test_error": 0.5})
    h.add(2, "train", {"loss": 1.0, "seconds": 3.25})
    assert h.of("eval") == [{"step": 1, "test_error": 0.5}]
    assert [r["loss"] for r in h.of("train")] == [2.0, 1.0]
    assert h.seconds() == 3.25


def test_checkpoint_holds_state_and_history(tmp_path):
    import jax.numpy as jnp

    h = rundir.History()
    h.add(2, "eval", {"test_error": [0.25, 0.75]})
    state = {"w": jnp.arange(3.0)}
    with rundir.checkpoint_manager(str(tmp_path)) as mngr:
        assert rundir.restore_latest(mngr, state) == (state, rundir.History(), 0, None)
        rundir.save_checkpoint(mngr, 2, state, h)
        mngr.wait_until_finished()
        restored, history, step, data = rundir.restore_latest(mngr, state)
        assert data is None  # saved without a pipeline position
        position = {"step": 3, "seeds": [{"grain": {"next_index": 3}}]}
        rundir.save_checkpoint(mngr, 3, state, h, data=position)
        mngr.wait_until_finished()
        assert rundir.restore_latest(mngr, state).data == position
    saved = tmp_path / "checkpoints" / "3" / "data" / "process_0-of-1.json"
    assert saved.exists()
    # Saved by another number of processes: the state restores, the position does not.
    saved.rename(saved.with_name("process_0-of-2.json"))
    with rundir.checkpoint_manager(str(tmp_path)) as mngr:
        restored_3 = rundir.restore_latest(mngr, state)
    assert restored_3.step == 3 and restored_3.data is None
    assert step == 2 and history == h
    assert restored["w"].tolist() == [0.0, 1.0, 2.0]
    assert rundir.restore_checkpoint(str(tmp_path))["w"].tolist() == [0.0, 1.0, 2.0]
