"""Without TensorFlow: prepared TFDS datasets load (ArrayRecord and TFRecord), runs train and
write TensorBoard events, and a dataset that TFDS would have to prepare is one clear line.

The launcher runs in a subprocess in which `import tensorflow` fails as it does where
TensorFlow is not installed.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from tensorboard.backend.event_processing import event_accumulator

from cnn_cases.engine import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs a module as `python -m` would, with every import finder blind to TensorFlow, so that
# `importlib.util.find_spec("tensorflow")` is None and `import tensorflow` fails, as where it
# is not installed; reports at exit whether anything imported it after all.
_WITHOUT_TF = textwrap.dedent(
    """
    import atexit, runpy, sys

    class WithoutTensorFlow:
        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "tensorflow":
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.finder, attr)

    sys.meta_path[:] = [WithoutTensorFlow(f) for f in sys.meta_path]
    atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules))
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    """
)


def _run_without_tf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_TF, "experiments.train", *args],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("dataset", ["tiny_cifar_ar", "tiny_cifar"])  # ArrayRecord, TFRecord
def test_a_run_reads_a_prepared_dataset_and_writes_events(dataset, tiny_tfds_dir, tmp_path):
    workdir = str(tmp_path / "run")
    proc = _run_without_tf(
        "--config=experiments/train.py:smoke",
        "--config.model=resnet8",
        f"--config.dataset={dataset}",
        f"--config.data_dir={tiny_tfds_dir}",
        f"--workdir={workdir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorflow imported: False" in proc.stdout
    result = rundir.read_result(workdir)
    assert result is not None and result.steps == 3
    # The events hold what metrics.jsonl holds, under `kind/name` tags.
    events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
    events.Reload()
    rows = rundir.read_metrics(workdir)
    for kind, key in (("train", "loss"), ("eval", "test_error")):
        expected = [r for r in rows if r["kind"] == kind]
        got = events.Scalars(f"{kind}/{key}")
        assert expected and [e.step for e in got] == [r["step"] for r in expected]
        assert [e.value for e in got] == pytest.approx([r[key] for r in expected], rel=1e-6)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["dataset"] == dataset


def test_a_dataset_tfds_must_prepare_asks_for_tensorflow(tmp_path):
    proc = _run_without_tf(
        "--config=experiments/train.py:smoke",
        "--config.dataset=mnist",
        f"--config.data_dir={tmp_path / 'empty'}",
        f"--workdir={tmp_path / 'run'}",
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: dataset 'mnist' is not prepared in"), proc.stderr[-2000:]
    assert "pip install 'cnn_cases[tf]'" in last and "data_dir" in last
