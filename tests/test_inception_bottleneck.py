"""The inception_bottleneck study: module arithmetic, presets, a real short run."""

import csv
import json
import os

import pytest

from cnn_cases.studies import inception_bottleneck
from experiments import inception_bottleneck as inception_bottleneck_configs
from experiments import presets


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_presets_are_complete(preset):
    c = inception_bottleneck_configs.get_config(preset)
    assert c.preset == preset and c.expected_minutes > 0 and c.width_multiplier > 0
    configs = inception_bottleneck.STUDY.variants(c)
    assert set(configs) == {"naive", "bottleneck"}
    # The same recipe for both: only the modules differ.
    a, b = (configs[v].to_dict() for v in ("naive", "bottleneck"))
    ka, kb = a.pop("model_kwargs"), b.pop("model_kwargs")
    assert (ka.pop("bottleneck"), kb.pop("bottleneck")) == (False, True)
    assert ka == kb and ka["width_multiplier"] == c.width_multiplier
    assert a == b


def test_full_preset_is_the_cifar_recipe():
    c = inception_bottleneck_configs.get_config("full")
    assert (c.batch_size, c.num_steps, c.learning_rate, c.momentum) == (128, 64_000, 0.1, 0.9)
    assert tuple(c.lr_boundaries) == (32_000, 48_000) and c.augment and c.flip


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        inception_bottleneck_configs.get_config("fast")


def test_module_arithmetic_is_the_lecture_and_the_paper():
    a = inception_bottleneck.module_arithmetic()
    assert a["5x5/32 on 28x28x192"]["macs"] == 120_422_400
    assert a["1x1/16 then 5x5/32 on 28x28x192"]["macs"] == 2_408_448 + 10_035_200
    reduced, naive = a["inception(3a) with 1x1 reductions"], a["inception(3a) naive"]
    assert reduced["macs"] == 128_049_152 and reduced["params"] == 163_696
    # Naive (3a): 1x1/64, 3x3/128, 5x5/32 straight on 192 channels, biases included.
    assert naive["params"] == 192 * 64 + 64 + 9 * 192 * 128 + 128 + 25 * 192 * 32 + 32
    assert naive["macs"] == 28 * 28 * (192 * 64 + 9 * 192 * 128 + 25 * 192 * 32)
    assert "120,422,400" in inception_bottleneck.arithmetic_text(a)


def test_smoke_run_writes_every_file(tmp_path):
    config = inception_bottleneck_configs.get_config("smoke")
    config.dataset = "synthetic"
    config.equal_macs = True
    workdir = str(tmp_path / "run")
    results = inception_bottleneck.STUDY.run(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    assert list(results) == ["naive", "bottleneck", inception_bottleneck.EQUAL_MACS_VARIANT]
    wide = results[inception_bottleneck.EQUAL_MACS_VARIANT]
    assert wide["width_multiplier"] > results["bottleneck"]["width_multiplier"]
    assert wide["macs"] >= results["naive"]["macs"] > results["bottleneck"]["macs"]
    assert "equal multiply-adds" in inception_bottleneck.STUDY.summary(results, workdir)
    keys = {
        "width_multiplier",
        "params",
        "macs",
        "step_seconds",
        "train_error",
        "test_error",
        "steps",
        "seconds",
        "init",
    }
    for r in results.values():
        assert set(r) == keys and r["init"] == "reference"
        assert 0 <= r["train_error"] <= 1 and 0 <= r["test_error"] <= 1
        assert r["steps"] == config.num_steps and r["seconds"] > 0 and r["step_seconds"] > 0
    n, b = results["naive"], results["bottleneck"]
    assert n["macs"] > b["macs"] and n["params"] > b["params"]  # the stem dominates at 1/16
    with open(os.path.join(workdir, "curves.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == set(results)
    assert list(rows[0])[:4] == ["step", "variant", "train_error", "test_error"]
    with open(os.path.join(workdir, "inception_bottleneck.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "fewer multiply-adds" in inception_bottleneck.STUDY.summary(results, workdir)
    # Rerunning returns the stored results without training again.
    assert inception_bottleneck.STUDY.run(config, workdir) == results


def test_equal_macs_variant_costs_what_the_naive_net_costs():
    c = inception_bottleneck_configs.get_config("cpu")
    c.dataset = "synthetic"  # 32x32x3, 10 classes, as cifar10
    c.equal_macs = True
    configs = inception_bottleneck.STUDY.variants(c)
    assert set(configs) == {"naive", "bottleneck", inception_bottleneck.EQUAL_MACS_VARIANT}
    wide = configs[inception_bottleneck.EQUAL_MACS_VARIANT].model_kwargs
    assert wide.bottleneck and wide.width_multiplier > c.width_multiplier
    naive = inception_bottleneck.macs(c, False, c.width_multiplier)
    at = inception_bottleneck.macs(c, True, wide.width_multiplier)
    below = inception_bottleneck.macs(c, True, wide.width_multiplier - 0.002)
    # The smallest width (to 3 decimals) reaching the naive cost, and close to it.
    assert below < naive <= at < 1.05 * naive
    # Same recipe as the other two.
    a, b = (configs[v].to_dict() for v in ("bottleneck", inception_bottleneck.EQUAL_MACS_VARIANT))
    a.pop("model_kwargs"), b.pop("model_kwargs")
    assert a == b
