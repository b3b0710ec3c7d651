"""`python -m experiments.train`: any registry model on any TFDS image dataset."""

import os

import tensorflow_datasets as tfds

from cnn_cases import launch, rundir
from experiments import train as launcher


def test_any_model_on_any_tfds_dataset_under_mock_data(tmp_path, capsys):
    config = launch.parse_config(
        launcher, "smoke", ["--config.model=lenet5", "--config.dataset=fashion_mnist"]
    )
    config.augment = False
    with tfds.testing.mock_data(num_examples=64):
        result = launcher.run(config, str(tmp_path / "run"))
    assert result.params == 61_706 and result.steps == 3
    assert rundir.read_result(str(tmp_path / "run")) == result
    out = capsys.readouterr().out
    assert "lenet5" in out and "fashion_mnist" in out and "61,706" in out


def test_defaults_are_the_engine_s():
    c = launch.parse_config(launcher, "", ["--config.num_steps=7"])
    assert c.preset == "default" and c.num_steps == 7 and c.model == "resnet20"
    assert os.path.basename(launcher.__file__) == "train.py"
