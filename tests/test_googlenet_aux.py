"""The googlenet_aux study: heads only in training, presets, a real short run."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import pytest

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.studies import googlenet_aux
from experiments import googlenet_aux as googlenet_aux_configs
from experiments import presets


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_presets_are_complete(preset):
    c = googlenet_aux_configs.get_config(preset)
    assert c.preset == preset and c.expected_minutes > 0 and c.aux_loss_weight == 0.3
    configs = googlenet_aux.STUDY.variants(c)
    assert configs["with_aux"].model == configs["without_aux"].model == "googlenet_cifar"
    assert "aux_logits" not in configs["with_aux"].model_kwargs  # the default: heads on
    assert configs["without_aux"].model_kwargs.aux_logits is False


def test_without_by_zero_weight_and_bad_settings():
    c = googlenet_aux_configs.get_config("smoke")
    c.without = "zero_weight"
    w = googlenet_aux.STUDY.variants(c)["without_aux"]
    assert w.aux_loss_weight == 0.0 and w.model_kwargs.aux_logits is True
    c.without = "drop"
    with pytest.raises(ValueError, match="without='drop'"):
        googlenet_aux.STUDY.variants(c)
    c.without, c.aux_loss_weight = "no_heads", 0.0
    with pytest.raises(ValueError, match="aux_loss_weight must be > 0"):
        googlenet_aux.STUDY.variants(c)


def test_aux_heads_exist_only_in_training():
    kwargs = googlenet_aux_configs.get_config("smoke").model_kwargs.to_dict()
    model = models.get_model("googlenet_cifar", width_multiplier=0.0625, **kwargs)
    x = jnp.zeros((2, 32, 32, 3))
    v = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=True))(x)
    assert {"aux1", "aux2"} <= set(v["params"])
    rngs = {"dropout": jax.random.PRNGKey(1)}
    out = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"]))
    logits, aux = out(v, x)[0]
    assert logits.shape == (2, 10) and [a.shape for a in aux] == [(2, 10), (2, 10)]
    infer = jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x)
    assert isinstance(infer, jax.Array) and infer.shape == (2, 10)  # inference: main head only
    assert costs.count_params(model, (32, 32, 3), train=False) < costs.count_params(
        model, (32, 32, 3), train=True
    )
    assert models.has_aux_heads(model)
    assert not models.has_aux_heads(models.get_model("googlenet_cifar", aux_logits=False))


def test_smoke_run_writes_every_file(tmp_path):
    config = googlenet_aux_configs.get_config("smoke")
    config.dataset = "synthetic"
    workdir = str(tmp_path / "run")
    results = googlenet_aux.STUDY.run(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    w, wo = results["with_aux"], results["without_aux"]
    assert len(w["aux_test_errors"]) == 2 and wo["aux_test_errors"] == []
    assert w["aux_loss_weight"] == 0.3
    assert w["params"] > w["inference_params"] == wo["params"] == wo["inference_params"]
    for r in results.values():
        assert r["gap"] == pytest.approx(r["test_error"] - r["train_error"])
        assert r["steps"] == config.num_steps
    with open(os.path.join(workdir, "curves.csv")) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "step",
        "variant",
        "train_error",
        "test_error",
        "aux1_test_error",
        "aux2_test_error",
    ]
    for r in rows:
        assert (r["aux1_test_error"] != "") == (r["variant"] == "with_aux")
    with open(os.path.join(workdir, "googlenet_aux.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    evals = len([r for r in rows if r["variant"] == "with_aux"])
    text = googlenet_aux.STUDY.summary(results, workdir)
    assert text.split("\n\n")[0].count("%") == 3 * evals  # main, aux1, aux2 per evaluation
    assert "without_aux" in text.split("\n\n")[1]
