"""The accelerator presets, as far as a CPU can show: each study's `full` and `colab` preset
trains its first net for 2 steps at its real widths, batch, schedule and warm-up (on small
synthetic data), and each colab preset's time is the estimate from multiply-adds."""

import os

import jax
import numpy as np
import pytest

from cnn_cases.analysis import costs
from cnn_cases.engine import defaults, launch, rundir, steps
from cnn_cases.studies import template, variants, why_resnets
from experiments import googlenet_aux, history, inception_bottleneck, lenet5, resnet_depth
from experiments import why_resnets as why_resnets_configs

# The config files; `_study(m)` is the library study each launches.
STUDIES = (resnet_depth, inception_bottleneck, googlenet_aux, lenet5, why_resnets_configs, history)


def _study(configs) -> template.Study:
    return getattr(configs, configs.__name__.rsplit(".", 1)[1]).STUDY


CIFAR = (32, 32, 3)


def _tiny_data(config, study) -> None:
    config.dataset = "synthetic_28x28x1" if study is lenet5 else "synthetic"


ACCELERATOR_PRESETS = (launch.ACCELERATOR_PRESET, launch.COLAB_PRESET)
# Trained for 2 steps: every full preset, and the colab presets whose nets are not the full
# preset's at another width (inception_bottleneck's and googlenet_aux's are; they are built
# and counted below instead, which costs no compilation).
TRAINED = [(s, launch.ACCELERATOR_PRESET) for s in STUDIES] + [
    (s, launch.COLAB_PRESET) for s in (resnet_depth, lenet5, why_resnets_configs)
]


@pytest.mark.parametrize(("study", "preset"), TRAINED, ids=lambda x: getattr(x, "__name__", x))
def test_preset_trains_its_first_net_for_two_steps(study, preset, tmp_path):
    config = study.get_config(preset)
    _tiny_data(config, study)
    if study is resnet_depth and preset == launch.ACCELERATOR_PRESET:
        config.depths = (110,)  # the one depth He et al. warm up
    first_name, first = next(iter(_study(study).variants(config).items()))
    assert _study(study).run(config, str(tmp_path), stop_after=2) is None  # as if interrupted
    net = template.net_dir(str(tmp_path), first_name)
    assert rundir.read_result(net) is None
    state = rundir.restore_checkpoint(net)
    assert int(state["step"]) == 2
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state["params"]))
    stored = rundir.read_json(os.path.join(net, "config.json"))
    assert stored["batch_size"] == first.batch_size == 128
    assert stored["num_steps"] == config.num_steps
    assert stored["model_kwargs"] == first.model_kwargs.to_dict()


@pytest.mark.parametrize("preset", ACCELERATOR_PRESETS)
@pytest.mark.parametrize("study", STUDIES, ids=lambda m: m.__name__)
def test_every_net_of_the_preset_builds_with_its_schedule(study, preset):
    config = study.get_config(preset)
    shape = (28, 28, 1) if study is lenet5 else CIFAR
    for c in _study(study).variants(config).values():
        cost = costs.model_cost(defaults.create_model(c, 10), shape)  # abstract: no compile
        assert cost.params > 0 and cost.macs > 0
        lr = steps.learning_rate_schedule(c)
        if c.warmup_steps:
            assert float(lr(c.warmup_steps - 1)) == pytest.approx(c.warmup_lr)
        assert float(lr(c.warmup_steps)) == pytest.approx(c.learning_rate)
        last = c.learning_rate * c.lr_decay ** len(c.lr_boundaries)
        assert float(lr(c.num_steps - 1)) == pytest.approx(last)
        assert all(0 < b < c.num_steps for b in c.lr_boundaries)


def test_resnet_depth_full_preset_warms_up_resnet110_only():
    config = resnet_depth.get_config(launch.ACCELERATOR_PRESET)
    config.depths = (56, 110)
    nets = _study(resnet_depth).variants(config)
    lr = {n: steps.learning_rate_schedule(c) for n, c in nets.items()}
    assert float(lr["resnet110"](0)) == pytest.approx(0.01)
    assert float(lr["resnet110"](400)) == pytest.approx(0.1)
    assert float(lr["resnet56"](0)) == pytest.approx(0.1)


@pytest.mark.parametrize("study", STUDIES, ids=lambda m: m.__name__)
def test_colab_preset_fits_one_session_by_the_estimate(study):
    config = study.get_config(launch.COLAB_PRESET)
    nets_of = _study(study).variants(config)
    extra = []
    if study is why_resnets_configs:
        deep = why_resnets.deep_depth(config)
        nets = [f"{k}{d}" for k in ("plain", "resnet") for d in (deep, config.depth)]
        extra = [(why_resnets.continued_config(config, n), config.more_steps) for n in nets]
    shape = (28, 28, 1) if study is lenet5 else CIFAR
    minutes = variants.estimate_minutes(nets_of, shape, extra=extra)
    if study is lenet5:  # overheads, not multiply-adds, set LeNet-5's time on a GPU
        assert minutes < 1 and config.num_steps == lenet5.get_config("full").num_steps
        return
    assert 8 <= minutes <= 20
    assert config.expected_minutes == pytest.approx(minutes, rel=0.1)
