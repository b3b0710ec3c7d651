"""`python -m experiments.train`: any registry model on any TFDS image dataset."""

import os

from cnn_cases.engine import launch, rundir
from experiments import train as launcher


def test_any_model_on_any_tfds_dataset(tmp_path, capsys, tiny_tfds_dir):
    flags = ["--config.model=lenet5", "--config.dataset=tiny_mnist"]
    config = launch.parse_config(launcher, "smoke", [*flags, f"--config.data_dir={tiny_tfds_dir}"])
    config.augment = False
    result = launcher.run(config, str(tmp_path / "run"))
    assert result.params == 61_706 and result.steps == 3
    assert rundir.read_result(str(tmp_path / "run")) == result
    out = capsys.readouterr().out
    assert "lenet5" in out and "tiny_mnist" in out and "61,706" in out


def test_defaults_are_the_engine_s():
    c = launch.parse_config(launcher, "", ["--config.num_steps=7"])
    assert c.preset == "default" and c.num_steps == 7 and c.model == "resnet20"
    assert os.path.basename(launcher.__file__) == "train.py"
