"""The training engine: determinism, resume, data parallelism, multi-host, NaN guard."""

import functools
import json
import os
import re
import socket
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_cases.data import input_pipeline, splits
from cnn_cases.engine import defaults, rundir, steps, train
from tests.train_worker import tiny_config

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_one(config, workdir, **kwargs):
    """The one result of a one-seed run (None if stopped)."""
    results = train.train(config, workdir, **kwargs)
    return None if results is None else results[0]


def _start_worker(tmp_path, name, *args):
    """Starts the worker in the background; `_finish` waits for it and returns its output."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = tmp_path / f"{name}.npz"
    return out, subprocess.Popen(
        [sys.executable, WORKER, str(out), str(tmp_path / name), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(started, timeout=300):
    out, proc = started
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _run_worker(tmp_path, name, *args, timeout=300):
    return _finish(_start_worker(tmp_path, name, *args), timeout=timeout)


def _assert_same(a_path, b_path, atol):
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files)
    assert any("batch_stats" in k for k in a.files) and any("params" in k for k in a.files)
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=0, err_msg=k)


def test_same_seed_same_numbers_and_resume_is_exact(tmp_path):
    config = tiny_config(4)
    config.checkpoint_every = 2
    full = _train_one(config, str(tmp_path / "full"))
    interrupted = str(tmp_path / "interrupted")
    assert _train_one(config, interrupted, stop_after=3) is None
    assert rundir.restore_checkpoint(interrupted)["step"] == 3
    resumed = _train_one(config, interrupted)
    assert resumed.test_error == full.test_error and resumed.train_loss == full.train_loss
    a, b = rundir.restore_checkpoint(str(tmp_path / "full")), rundir.restore_checkpoint(interrupted)
    chex.assert_trees_all_equal(a["params"], b["params"])
    chex.assert_trees_all_equal(a["batch_stats"], b["batch_stats"])
    # metrics.jsonl holds each step once, even though steps after the checkpoint ran twice.
    logged = [
        r["step"]
        for r in map(json.loads, open(os.path.join(interrupted, "metrics.jsonl")))
        if r["kind"] == "train"
    ]
    assert logged == [1, 2, 3, 4]
    # A finished run is not trained again: the stored result comes back.
    assert _train_one(config, interrupted) == resumed


def test_curves_and_clock_resume_from_the_checkpoint_not_the_metrics_file(tmp_path):
    config = tiny_config(4)
    config.checkpoint_every, config.eval_every, config.log_every = 2, 1, 1
    full = _train_one(config, str(tmp_path / "full"))
    workdir = str(tmp_path / "interrupted")
    assert _train_one(config, workdir, stop_after=3) is None
    seconds_at_3 = next(r for r in rundir.read_metrics(workdir, "train") if r["step"] == 3)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "kind": "tra')  # torn by a crash or a full disk
    resumed = _train_one(config, workdir)
    assert [r["step"] for r in resumed.curves] == [1, 2, 3, 4] == [r["step"] for r in full.curves]
    assert resumed.curves == full.curves
    assert resumed.seconds >= seconds_at_3["seconds"] > 0
    rows = rundir.read_metrics(workdir)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]


def test_two_runs_with_the_same_seed_agree_and_another_seed_differs(tmp_path):
    a = _train_one(tiny_config(2), str(tmp_path / "a"))
    b = _train_one(tiny_config(2), str(tmp_path / "b"))
    assert (a.train_loss, a.test_loss) == (b.train_loss, b.test_loss)
    other = tiny_config(2)
    other.seed = 1
    c = _train_one(other, str(tmp_path / "c"))
    assert c.test_loss != a.test_loss


def test_vmapped_seeds_equal_separate_runs_and_resume_exactly(tmp_path):
    config = tiny_config(4)
    config.seed, config.seeds, config.checkpoint_every = 5, 3, 2
    workdir = str(tmp_path / "seeds")
    assert train.train(config, workdir, stop_after=3) is None
    assert rundir.restore_checkpoint(workdir)["step"].tolist() == [3, 3, 3]
    results = train.train(config, workdir)  # resumed from step 3
    assert [r.seconds for r in results] == [results[0].seconds] * 3
    stacked = rundir.restore_checkpoint(workdir)
    for k, result in enumerate(results):
        alone = tiny_config(4)
        alone.seed = 5 + k
        expected = _train_one(alone, str(tmp_path / f"seed{k}"))
        np.testing.assert_allclose(result.train_loss, expected.train_loss, rtol=1e-5)
        np.testing.assert_allclose(result.test_loss, expected.test_loss, rtol=1e-5)
        assert abs(result.test_error - expected.test_error) <= 1 / 128  # one image at most
        state = rundir.restore_checkpoint(str(tmp_path / f"seed{k}"))
        for part in ("params", "batch_stats"):
            chex.assert_trees_all_close(
                jax.tree_util.tree_map(lambda x, k=k: x[k], stacked[part]),
                state[part],
                atol=1e-5,
                rtol=1e-5,
            )
    assert results[0].test_loss != results[1].test_loss  # the seeds differ
    assert rundir.read_results(workdir) == results  # stored, not trained again
    assert train.train(config, workdir) == results
    logged = [r["step"] for r in rundir.read_metrics(workdir, "train")]
    assert logged == [1, 2, 3, 4]
    assert len(rundir.read_metrics(workdir, "train")[0]["loss"]) == 3  # one per seed


def test_bad_seeds_are_one_line(tmp_path):
    config = tiny_config(1)
    config.seeds = 0
    with pytest.raises(ValueError, match=r"seeds=0 must be a whole number >= 1"):
        train.train(config, str(tmp_path / "a"))
    config.seeds = 2
    with pytest.raises(ValueError, match=r"seeds=2: initial variables are for one seed"):
        train.train(config, str(tmp_path / "b"), init_variables={"params": {}})


def test_a_config_stored_before_seeds_existed_still_resumes(tmp_path):
    config = tiny_config(1)
    workdir = str(tmp_path / "old")
    _train_one(config, workdir)
    path = os.path.join(workdir, "config.json")
    stored = json.load(open(path))
    del stored["seeds"]
    json.dump(stored, open(path, "w"))
    assert _train_one(config, workdir) is not None  # seeds absent means 1
    config.seeds = 2
    with pytest.raises(ValueError, match=r"seeds: 1 -> 2"):
        train.train(config, workdir)


def test_train_step_compiles_once():
    config = tiny_config(1)
    split = splits.load_split("synthetic", "train")
    model = defaults.create_model(config, split.num_classes)
    state = steps.create_train_state(model, config, (32, 32, 3))
    step = jax.jit(chex.assert_max_traces(steps.train_step, n=1))
    pipe = input_pipeline.Pipeline(split, global_batch_size=16, seed=0, augment=True, mean=None)
    key = jax.random.PRNGKey(0)
    losses = []
    for s in range(3):
        state, m = step(state, *pipe.batch(s), dropout_key=key)
        losses.append(float(m["loss"]))
    assert int(state.step) == 3 and all(np.isfinite(losses))


def test_accumulated_micro_batches_take_the_whole_batch_step():
    # Without BatchNorm or dropout, the mean of the micro-batches' mean gradients is the
    # batch's mean gradient: K micro-batches make the same update as one batch.
    config = tiny_config(1)
    config.model, config.model_kwargs = "lenet5", {}
    split = splits.load_split("synthetic_32x32x1", "train")
    model = defaults.create_model(config, split.num_classes)
    state = steps.create_train_state(model, config, (32, 32, 1))
    images, labels = (jnp.asarray(a) for a in (split.images[:16] / 255.0, split.labels[:16]))
    key = jax.random.PRNGKey(0)
    one, m1 = jax.jit(steps.train_step)(state, images, labels, key)
    four, m4 = jax.jit(functools.partial(steps.train_step, accumulate=4))(
        state, images, labels, key
    )
    chex.assert_trees_all_close(one.params, four.params, atol=1e-6)
    chex.assert_trees_all_close(m1["loss"], m4["loss"], atol=1e-6)
    assert int(four.step) == 1


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    config = tiny_config(6)
    config.checkpoint_every = 2
    config.log_every = 2
    config.lr_boundaries = (3,)
    config.lr_decay = 1e30  # sane for 3 steps, then the run blows up
    workdir = str(tmp_path / "nan")
    pattern = r"(loss is (nan|inf)|parameters became non-finite.*) at step (\d+)"
    with pytest.raises(train.NonFiniteLossError, match=pattern) as err:
        _train_one(config, workdir)
    assert "last good checkpoint" in str(err.value)
    saved = rundir.restore_checkpoint(workdir)
    step, params = int(saved["step"]), saved["params"]
    failed_at = int(re.search(pattern, str(err.value)).group(3))
    assert 2 <= step < failed_at <= 6
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))
    assert f"checkpoint (step {step})" in str(err.value)


def test_missing_dataset_is_one_clear_line(tmp_path):
    config = tiny_config(1)
    config.dataset = "mnist"
    config.data_dir = str(tmp_path / "empty")
    os.makedirs(config.data_dir)
    config.download = False
    with pytest.raises(splits.DatasetNotFoundError) as err:
        _train_one(config, str(tmp_path / "run"))
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "mnist" in msg
        and config.data_dir in msg
        and "--config.data_dir=DIR" in msg
    )


def test_unwritable_workdir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"workdir .* is not writable"):
        _train_one(tiny_config(1), str(blocker / "run"))


def test_changed_config_in_the_same_workdir_is_refused(tmp_path):
    _train_one(tiny_config(1), str(tmp_path / "w"))
    other = tiny_config(1)
    other.learning_rate = 0.5
    with pytest.raises(ValueError, match=r"different config \(learning_rate: 0.1 -> 0.5\)"):
        _train_one(other, str(tmp_path / "w"))
    assert os.path.exists(tmp_path / "w" / "result.json")  # the earlier result is kept


def test_learning_rate_schedule_with_warmup():
    c = defaults.default_config()
    c.warmup_steps = 400
    sched = steps.learning_rate_schedule(c)
    assert float(sched(0)) == pytest.approx(0.01) and float(sched(399)) == pytest.approx(0.01)
    assert float(sched(400)) == pytest.approx(0.1)
    assert float(sched(32_000)) == pytest.approx(0.01)
    assert float(sched(48_000)) == pytest.approx(0.001)


def test_eight_devices_match_one_device(tmp_path):
    one = _run_worker(tmp_path, "one", "--devices", "1")
    eight = _run_worker(tmp_path, "eight", "--devices", "8")
    _assert_same(one, eight, atol=1e-5)


def test_seeds_on_two_devices_match_one_device(tmp_path):
    # vmap over the seeds of shard_map-ped oneDNN kernels, batch split on the second axis.
    one = _run_worker(tmp_path, "one", "--devices", "1", "--seeds", "2")
    two = _run_worker(tmp_path, "two", "--devices", "2", "--seeds", "2")
    assert np.load(one)["batch_stats/bn_init/mean"].shape == (2, 4)  # stacked over the seeds
    _assert_same(one, two, atol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path, name, *args):
    """Runs the worker as 2 processes x 2 devices; returns its output file."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                str(tmp_path / f"{name}.npz"),
                str(tmp_path / name),
                "--devices",
                "2",
                "--process_id",
                str(i),
                "--num_processes",
                "2",
                "--coordinator",
                f"127.0.0.1:{port}",
                *args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert all("processes 2" in err for _, err in outs)
    return tmp_path / f"{name}.npz"


def test_two_processes_match_one_process(tmp_path):
    # Process 1 starts 35 s late: longer than gloo's 30 s wait for a peer's first collective,
    # so this also proves the processes meet at barriers before their collectives. The
    # one-process run trains meanwhile.
    single = _start_worker(tmp_path, "single", "--devices", "4")
    multi = _two_processes(tmp_path, "multi", "--late_seconds", "35")
    _assert_same(_finish(single), multi, atol=1e-5)


def test_two_processes_match_one_process_when_streamed(tmp_path, tiny_tfds_dir):
    # Each process reads its own rows of every batch from the ArrayRecord files.
    data = ["--dataset", "tiny_cifar_ar", "--data_dir", tiny_tfds_dir, "--pipeline", "stream"]
    single = _run_worker(tmp_path, "single", "--devices", "4", *data)
    _assert_same(single, _two_processes(tmp_path, "multi", *data), atol=1e-5)
