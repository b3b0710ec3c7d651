"""One way to set a config: presets plus typed `--config.KEY=VALUE` overrides (config_flags)."""

import os
import subprocess
import sys

import pytest

from cnn_cases.engine import launch
from cnn_cases.studies import template
from experiments import (
    googlenet_aux,
    inception_bottleneck,
    lenet5,
    presets,
    resnet_depth,
    why_resnets,
)

# The config files (experiments/<study>.py), each with the library study it launches.
STUDIES = (resnet_depth, inception_bottleneck, googlenet_aux, lenet5, why_resnets)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("configs", STUDIES, ids=lambda m: m.__name__)
def test_every_study_has_the_same_presets_and_interface(configs):
    assert presets.PRESETS == launch.PRESETS == ("cpu", "smoke", "colab", "full")
    for preset in presets.PRESETS:
        c = configs.get_config(preset)
        assert c.preset == preset and c.expected_minutes > 0
        assert set(c) == set(configs.get_config("cpu"))  # overrides apply to every preset alike
    study = getattr(configs, configs.__name__.rsplit(".", 1)[1]).STUDY
    assert isinstance(study, template.Study) and study.name == configs.__name__.split(".")[-1]
    assert type(study).variants is not template.Study.variants
    valid = r"\(valid: cpu, smoke, colab, full\)"
    with pytest.raises(ValueError, match=f"unknown preset 'paper' {valid}"):
        configs.get_config("paper")


def test_overrides_are_typed():
    c = launch.parse_config(
        resnet_depth,
        "smoke",
        [
            "--config.num_steps=7",
            "--config.learning_rate=1",
            "--config.depths=20,32",
            "--config.data_dir=../shared/tfds",
            "--config.zero_init_residual",
            "--config.train_split=train[:45000]",
        ],
    )
    assert c.preset == "smoke" and c.num_steps == 7 and c.width == 4  # the rest is smoke's
    assert c.learning_rate == 1.0 and isinstance(c.learning_rate, float)
    assert c.depths == (20, 32) and c.data_dir == "../shared/tfds" and c.zero_init_residual
    assert c.train_split == "train[:45000]"


def test_no_preset_follows_the_backend_and_keeps_the_overrides():
    c = launch.parse_config(lenet5, "", ["--config.seed=3", "--config.dataset=fashion_mnist"])
    assert c.preset == launch.backend_preset() == "cpu"  # the tests run on a CPU
    assert (c.seed, c.dataset) == (3, "fashion_mnist")
    assert c.num_steps == lenet5.get_config("cpu").num_steps


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        (
            "cpu",
            ["--config.num_stepz=5"],
            r"key 'num_stepz' \(did you mean 'num_steps'\?\); valid keys: .*num_steps",
        ),
        ("cpu", ["--config.num_steps=five"], r"--config.num_steps=five: .*'five'"),
        ("fast", [], r"unknown preset 'fast' \(valid: cpu, smoke, colab, full\)"),
    ],
)
def test_bad_config_is_one_line(preset, overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        launch.parse_config(resnet_depth, preset, overrides)
    assert "\n" not in str(err.value)


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.resnet_depth", *args],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_launcher_reports_bad_input_in_one_line(tmp_path):
    for args, message in (
        (["--config.depths=20,33"], "depth 33 is not 6n+2"),
        (["--config.nokey=1"], "unknown config key 'nokey'"),
        (["--config=experiments/resnet_depth.py:paper"], "unknown preset 'paper'"),
    ):
        proc = _launch(*args, f"--workdir={tmp_path}")
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr
        assert message in proc.stderr
