"""The why_resnets study: the identity argument on real nets, Figure 7 probes, gradient norms."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_cases import models
from cnn_cases.analysis import probes
from cnn_cases.engine import launch
from cnn_cases.studies import resnet_depth, template, why_resnets
from experiments import resnet_depth as resnet_depth_configs
from experiments import why_resnets as why_resnets_configs


def test_zero_blocks_keep_a_resnet_s_function_and_collapse_a_plain_net():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 3))
    for kind in ("resnet", "plain"):
        shallow = models.get_model(f"{kind}8", width=4)
        deep = models.get_model(f"{kind}14", width=4)  # 1 -> 2 blocks per stage
        v = jax.jit(functools.partial(shallow.init, train=False))(jax.random.PRNGKey(1), x)
        # Trained-like statistics, so that nothing is the identity by accident.
        v = jax.tree_util.tree_map(
            lambda a: a + 0.3 * jnp.abs(jnp.sin(jnp.arange(a.size))).reshape(a.shape), v
        )
        d = probes.deepen(v, deep, (16, 16, 3), blocks_per_stage=1)
        for kernels in ("auto", "xla"):  # oneDNN's fused BatchNorm, and XLA's
            a = jax.jit(functools.partial(shallow.clone(kernels=kernels).apply, train=False))(v, x)
            b = jax.jit(functools.partial(deep.clone(kernels=kernels).apply, train=False))(d, x)
            if kind == "resnet":
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            else:
                assert float(jnp.max(jnp.std(b, axis=0))) < 1e-6  # one output for every image
                assert float(jnp.max(jnp.std(a, axis=0))) > 1e-3


def test_deepen_refuses_a_net_it_does_not_extend():
    x = jnp.zeros((1, 16, 16, 3))
    model = models.get_model("resnet8", width=4)
    v = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="does not extend the shallow one"):
        probes.deepen(v, models.get_model("resnet14", width=8), (16, 16, 3), blocks_per_stage=1)


def test_smoke_run_and_reuse_of_a_workdir(tmp_path):
    config = launch.parse_config(why_resnets_configs, "smoke", ["--config.dataset=synthetic"])
    first = str(tmp_path / "first")
    results = why_resnets.STUDY.run(config, first)
    ident = results["identity"]
    assert ident["resnet8_deepened"]["max_logit_difference"] == 0.0
    r = ident["resnet8_deepened"]
    assert r["deep_test_error"] == r["shallow_test_error"]
    assert ident["plain8_deepened"]["deep_logit_std_over_images"] < 1e-6  # collapsed
    assert set(results["continued"]) == {"plain8", "plain8_deepened", "resnet8", "resnet8_deepened"}
    # Figure 7: every 3x3 layer (stem + 2 per block) of each probed net; gradients likewise.
    assert {k: len(v) for k, v in results["responses"].items()} == {"plain8": 7, "resnet8": 7}
    for g in results["gradients"].values():
        assert len(g["init"]) == len(g["trained"]) == 7 and min(g["init"]) > 0
    with open(os.path.join(first, "results.json")) as f:
        assert json.load(f) == results
    with open(os.path.join(first, "why_resnets.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "resnet8_deepened" in why_resnets.STUDY.summary(results, first)
    # Reusing the trained nets of another workdir trains none of them again.
    config = launch.parse_config(
        why_resnets_configs,
        "smoke",
        ["--config.dataset=synthetic", f"--config.from_workdir={first}"],
    )
    study = why_resnets.STUDY
    second = str(tmp_path / "second")
    runs = study.train(template.Job(config, study.variants(config), second))
    assert not os.path.exists(tmp_path / "second" / "nets")
    assert set(runs) == {"plain8", "resnet8"}
    assert study.run(config, second)["identity"] == results["identity"]
    assert not os.path.exists(tmp_path / "second" / "nets")
    config.from_workdir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="holds no finished plain8; run resnet_depth first"):
        study.run(config, str(tmp_path / "third"))


@pytest.mark.parametrize("preset", ["cpu", "full"])
def test_the_nets_are_resnet_depth_s_so_its_workdir_can_be_read(preset):
    ours = why_resnets.STUDY.variants(why_resnets_configs.get_config(preset))
    theirs = resnet_depth.STUDY.variants(resnet_depth_configs.get_config(preset))
    for name, c in ours.items():
        assert c.to_dict() == theirs[name].to_dict(), name


def test_one_seed_only():
    config = why_resnets_configs.get_config("smoke")
    config.seeds = 2
    with pytest.raises(ValueError, match="seeds=2: why_resnets probes the nets of one seed"):
        why_resnets.STUDY.validate(config)
