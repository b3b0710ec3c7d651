"""What faults do to a run: a second writer, SIGTERM and SIGINT, a rewrite failing part-way,
a torn metrics line, a damaged checkpoint, NaN under `stop_after`, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cnn_cases.engine import guard, launch, rundir, train
from experiments import train as train_launcher
from tests.train_worker import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "interrupt_worker.py")
ENV = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
SMOKE = ["--config=experiments/train.py:smoke", "--config.dataset=synthetic"]


def _one(config, workdir, **kwargs):
    results = train.train(config, str(workdir), **kwargs)
    return None if results is None else results[0]


def test_a_second_process_on_a_busy_workdir_stops_at_once_naming_the_first(tmp_path):
    workdir = str(tmp_path / "run")
    with guard.workdir_lock(workdir):
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.train", *SMOKE, f"--workdir={workdir}"],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: workdir") and f"pid {os.getpid()} on host" in last
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # it wrote nothing


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom cnn_cases.engine import guard\n"
            "with guard.workdir_lock(sys.argv[1]):\n    print('held', flush=True)\n"
            "    time.sleep(300)",
            workdir,
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(guard.WorkdirBusyError, match=f"pid {holder.pid} on host"):
        with guard.workdir_lock(workdir):
            pass
    holder.kill()
    holder.wait()
    with guard.workdir_lock(workdir):  # the kernel released the dead process's lock
        pass


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_a_stop_signal_saves_at_the_step_boundary_and_the_run_resumes_to_the_same_numbers(
    tmp_path, sig, code
):
    flags = [*SMOKE, "--config.num_steps=6", "--config.log_every=1"]
    flags.append("--config.checkpoint_every=100")  # the only checkpoint is the signal's
    workdir, marker = tmp_path / "run", tmp_path / "at_step_3"
    proc = subprocess.Popen(
        [sys.executable, WORKER, "3", str(marker), *flags, f"--workdir={workdir}"],
        cwd=ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    name = signal.Signals(sig).name
    assert err.strip().splitlines()[-1].startswith(f"stopped by {name} at step 3;")
    assert int(rundir.restore_checkpoint(str(workdir))["step"]) == 3
    if sig != signal.SIGTERM:
        return
    config = launch.parse_config(train_launcher, "smoke", flags[1:])
    resumed, full = _one(config, workdir), _one(config, tmp_path / "full")
    assert resumed.curves == full.curves and resumed.test_error == full.test_error
    assert resumed.train_loss == full.train_loss and resumed.test_loss == full.test_loss


def test_a_rewrite_failing_part_way_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    history = rundir.History()
    writer = rundir.MetricsWriter(workdir, history, first_step=1)
    for step in range(1, 6):
        writer.write(history.add(step, "train", {"loss": float(step)}))
    writer.close()
    calls = []

    def failing_dumps(obj, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return json.JSONEncoder().encode(obj)

    monkeypatch.setattr(rundir.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="No space left"):
        rundir.MetricsWriter(workdir, history, first_step=6)
    monkeypatch.undo()
    assert [r["step"] for r in rundir.read_metrics(workdir)] == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(workdir)) == ["metrics.jsonl", "tensorboard"]  # no temporary


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "kind": "train", "loss": 1.0}\n{"step": 2, "kind": "tr')
    assert rundir.read_metrics(str(tmp_path)) == [{"step": 1, "kind": "train", "loss": 1.0}]
    assert "torn last line 2" in caplog.text and str(path) in caplog.text


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one_and_is_kept(tmp_path, caplog):
    config = tiny_config(6)
    config.checkpoint_every, config.keep_checkpoints = 2, 3
    workdir = tmp_path / "run"
    assert _one(config, workdir, stop_after=4) is None  # checkpoints at 2 and 4
    files = [
        os.path.join(d, f)
        for d, _, fs in os.walk(workdir / "checkpoints" / "4" / "state")
        for f in fs
    ]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)
    resumed = _one(config, workdir)
    assert "checkpoint at step 4 is unreadable" in caplog.text
    assert [d.split(".")[0] for d in os.listdir(workdir / "checkpoints_damaged")] == ["4"]
    full = _one(config, tmp_path / "full")
    assert resumed.curves == full.curves and resumed.train_loss == full.train_loss


def _blows_up(num_steps: int):
    config = tiny_config(num_steps)
    config.log_every, config.lr_boundaries, config.lr_decay = 100, (3,), 1e30
    return config


def test_nan_under_stop_after_is_never_saved(tmp_path):
    config = _blows_up(10)
    config.checkpoint_every = 4  # step 7, where stop_after ends, is no periodic step
    workdir = str(tmp_path / "run")
    with pytest.raises(train.NonFiniteLossError, match=r"at step [567];") as err:
        _one(config, workdir, stop_after=7)
    saved = rundir.restore_checkpoint(workdir)
    step = int(saved["step"])  # the last finite checkpoint; the state at 7 was not saved
    assert step == 4
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(saved["params"]))
    msg = str(err.value)
    assert f"checkpoint (step {step}) is kept" in msg and "--config.learning_rate" in msg
    assert "new --workdir" in msg and "\n" not in msg


def test_nan_before_any_checkpoint_says_there_is_none(tmp_path):
    config = _blows_up(8)
    config.checkpoint_every = 100
    workdir = str(tmp_path / "run")
    with pytest.raises(train.NonFiniteLossError, match="no checkpoint was saved"):
        _one(config, workdir)
    assert not os.listdir(os.path.join(workdir, "checkpoints"))


def test_bad_input_is_one_line_naming_the_file_or_value(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        rundir.check_workdir(str(tmp_path / "file"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"model": "resn')
    with pytest.raises(ValueError, match=r"config.json' is damaged"):
        _one(tiny_config(1), tmp_path / "run")
    config = tiny_config(1)  # the model is checked before the dataset is looked for
    config.model, config.dataset, config.download = "no_such_model", "mnist", False
    config.data_dir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown model 'no_such_model'"):
        _one(config, tmp_path / "other")
    config.model, config.model_kwargs = "resnet20", {"depth_of_field": 3}
    with pytest.raises(ValueError, match=r"model 'resnet20' with model_kwargs .*depth_of_field"):
        _one(config, tmp_path / "third")


def test_a_relative_config_path_is_found_from_another_directory(tmp_path):
    def launch_here(arg):
        return subprocess.run(
            [sys.executable, "-m", "experiments.train", arg, f"--workdir={tmp_path / 'w'}"],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )

    found = launch_here("--config=experiments/train.py:nope")  # resolved: its preset is bad
    assert "unknown preset 'nope'" in found.stderr.strip().splitlines()[-1]
    missing = launch_here("--config=nowhere/x.py")
    last = missing.stderr.strip().splitlines()[-1]
    assert missing.returncode == 1 and "config file 'nowhere/x.py' not found" in last


def test_a_resume_after_the_final_evaluation_writes_no_row_twice(tmp_path, monkeypatch):
    config = tiny_config(2)
    config.log_every = config.eval_every = 1
    workdir = tmp_path / "run"

    def crash(*args):
        raise OSError(28, "No space left on device", "result.json")

    monkeypatch.setattr(rundir, "write_results", crash)  # after the final eval, before result.json
    with pytest.raises(OSError):
        _one(config, workdir)
    monkeypatch.undo()
    result = _one(config, workdir)
    assert [r["step"] for r in result.curves] == [1, 2]
    rows = [(r["step"], r["kind"]) for r in rundir.read_metrics(str(workdir))]
    assert len(rows) == len(set(rows)) and (2, "eval") in rows


def test_a_study_checks_every_variant_before_it_reads_data(tmp_path):
    from cnn_cases.studies import lenet5
    from experiments import lenet5 as lenet5_configs

    config = lenet5_configs.get_config("smoke")
    config.data_dir, config.download, config.batch_size = str(tmp_path / "empty"), False, -4
    with pytest.raises(ValueError, match=r"batch_size=-4 must be a whole number >= 1"):
        lenet5.STUDY.run(config, str(tmp_path / "run"))  # not: mnist not found in empty/
