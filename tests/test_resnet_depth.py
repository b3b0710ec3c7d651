"""The resnet_depth study: presets, a real short run, its files, resumption."""

import csv
import json
import os

import numpy as np
import pytest

from cnn_cases.studies import resnet_depth
from experiments import presets
from experiments import resnet_depth as resnet_depth_configs


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_presets_are_complete(preset):
    c = resnet_depth_configs.get_config(preset)
    assert c.preset == preset and c.expected_minutes > 0
    assert all((d - 2) % 6 == 0 for d in c.depths)
    assert c.batch_size % 8 == 0 or preset == "smoke"


def test_full_preset_is_he_et_al():
    c = resnet_depth_configs.get_config("full")
    assert (c.width, c.batch_size, c.num_steps, c.learning_rate) == (16, 128, 64_000, 0.1)
    assert tuple(c.lr_boundaries) == (32_000, 48_000) and c.lr_decay == 0.1
    assert (c.momentum, c.weight_decay, c.crop_padding, c.flip) == (0.9, 1e-4, 4, True)
    assert c.warmup_steps == 400 and c.warmup_from_depth == 110 and c.shortcut == "A"
    c.depths = (56, 110)
    nets = resnet_depth.STUDY.variants(c)
    assert nets["resnet56"].warmup_steps == 0 and nets["plain56"].warmup_steps == 0
    assert nets["resnet110"].warmup_steps == 400 and nets["plain110"].warmup_steps == 400


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        resnet_depth_configs.get_config("fast")


def test_smoke_run_on_a_tfds_dataset_writes_every_file(tmp_path, tiny_tfds_dir):
    config = resnet_depth_configs.get_config("smoke")
    config.dataset, config.data_dir = "tiny_cifar", tiny_tfds_dir
    workdir = str(tmp_path / "run")
    results = resnet_depth.STUDY.run(config, workdir)
    assert set(results) == {"plain8", "plain14", "resnet8", "resnet14"}
    with open(os.path.join(workdir, "results.json")) as f:
        stored = json.load(f)
    assert stored == results
    for name, r in stored.items():
        assert r["depth"] == int(name.removeprefix("plain").removeprefix("resnet"))
        assert r["residual"] == name.startswith("resnet")
        assert 0.0 <= r["train_error"] <= 1.0 and 0.0 <= r["test_error"] <= 1.0
        assert r["steps"] == config.num_steps and r["seconds"] > 0
    with open(os.path.join(workdir, "curves.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == set(results)
    assert list(rows[0]) == ["step", "variant", "train_error", "test_error"]
    png = os.path.join(workdir, "resnet_depth.png")
    assert os.path.getsize(png) > 10_000
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    ok, line = resnet_depth.verdict(results)
    assert ("REPRODUCED" in line) == ok


def test_rerun_skips_finished_nets_and_resumes_an_unfinished_one(tmp_path):
    config = resnet_depth_configs.get_config("smoke")
    config.dataset = "synthetic"
    config.depths = (8,)
    workdir = str(tmp_path / "run")
    assert resnet_depth.STUDY.run(config, workdir, stop_after=2) is None  # interrupted in plain8
    assert not os.path.exists(os.path.join(workdir, "nets", "plain8", "result.json"))
    first = resnet_depth.STUDY.run(config, workdir)
    mtime = os.path.getmtime(os.path.join(workdir, "nets", "plain8", "result.json"))
    again = resnet_depth.STUDY.run(config, workdir)
    assert again == first
    assert os.path.getmtime(os.path.join(workdir, "nets", "plain8", "result.json")) == mtime
    fresh = resnet_depth.STUDY.run(config, str(tmp_path / "fresh"))
    drop_time = lambda rs: {k: {**v, "seconds": 0} for k, v in rs.items()}
    assert drop_time(fresh) == drop_time(first)  # interrupted + resumed == uninterrupted


def test_seeds_run_as_one_program_and_report_mean_and_spread(tmp_path, tiny_tfds_dir):
    config = resnet_depth_configs.get_config("smoke")
    config.depths, config.seeds = (8,), 2
    config.dataset, config.data_dir = "tiny_cifar", tiny_tfds_dir
    workdir = str(tmp_path / "run")
    results = resnet_depth.STUDY.run(config, workdir)
    for name, r in results.items():
        stored = json.load(open(os.path.join(workdir, "nets", name, "result.json")))
        assert [s["train_error"] for s in stored] == r["train_errors"]  # one result per seed
        assert r["seeds"] == 2 and r["train_error"] == pytest.approx(np.mean(r["train_errors"]))
        assert r["train_error_std"] == pytest.approx(np.std(r["train_errors"], ddof=1))
    with open(os.path.join(workdir, "curves.csv")) as f:
        header = next(csv.reader(f))
    assert header == ["step", "variant", "train_error", "train_error_std", "test_error",
                      "test_error_std"]  # fmt: skip
    text = resnet_depth.STUDY.summary(results, workdir)
    r = results["resnet8"]
    assert f"{100 * r['train_error']:.2f} ± {100 * r['train_error_std']:.2f}%" in text
    assert "train err per seed" in text
    assert os.path.getsize(os.path.join(workdir, "resnet_depth.png")) > 10_000


def _seeds_result(plain56, resnet56):
    mk = lambda d, r, es: {
        "depth": d,
        "residual": r,
        "train_error": np.mean(es),
        "train_errors": es,
    }
    return {
        "plain20": mk(20, False, [0.60, 0.62, 0.61]),
        "plain56": mk(56, False, plain56),
        "resnet20": mk(20, True, [0.55, 0.56, 0.57]),
        "resnet56": mk(56, True, resnet56),
    }


def test_degradation_verdict_over_seeds_is_against_their_spread():
    ok, line = resnet_depth.verdict(_seeds_result([0.85, 0.80, 0.90], [0.54, 0.57, 0.56]))
    assert ok and "REPRODUCED" in line and "over 3 seeds" in line
    assert "+24.00 ± 5.57 points" in line  # plain gaps 25, 18, 29
    # The ResNet gap rises by 1.33 points, more than twice its spread (0.58): not reproduced.
    ok, line = resnet_depth.verdict(_seeds_result([0.85, 0.80, 0.90], [0.57, 0.57, 0.58]))
    assert not ok and "+1.33 ± 0.58 points" in line
    # A plain gap inside its own spread (gaps +10, -2, +1) is no degradation.
    assert not resnet_depth.verdict(_seeds_result([0.70, 0.60, 0.62], [0.54, 0.55, 0.56]))[0]


def test_degradation_verdict():
    mk = lambda d, r, e: {"depth": d, "residual": r, "train_error": e}
    yes = {
        "plain20": mk(20, False, 0.3),
        "plain56": mk(56, False, 0.5),
        "resnet20": mk(20, True, 0.3),
        "resnet56": mk(56, True, 0.25),
    }
    assert resnet_depth.verdict(yes)[0]
    assert resnet_depth.verdict({**yes, "resnet56": mk(56, True, 0.304)})[0]
    no = {**yes, "resnet56": mk(56, True, 0.306)}
    ok, line = resnet_depth.verdict(no)
    assert not ok and "NOT reproduced" in line and "+0.60 points" in line
    flat = {**yes, "plain56": mk(56, False, 0.303)}
    assert not resnet_depth.verdict(flat)[0]
