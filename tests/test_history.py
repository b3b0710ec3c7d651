"""The history study: its nets counted at the cpu widths, its presets, the frontier, a real
short run."""

import csv
import json
import os

import pytest

from cnn_cases.analysis import costs
from cnn_cases.report import figures
from cnn_cases.studies import history, template
from experiments import history as history_configs
from experiments import presets

CIFAR = (32, 32, 3)


# The cpu preset's nets at their widths: (width multiplier, parameters, multiply-adds).
CPU = {
    "lenet5": (1.0, 62_006, 651_720),
    "alexnet": (0.125, 452_730, 3_940_416),
    "vgg16": (0.125, 239_538, 5_096_064),
    "vgg16_bn": (0.125, 240_594, 5_096_064),
    "nin": (0.125, 17_058, 5_102_592),
    "googlenet": (0.0625, 24_823, 1_748_992),  # at inference: no aux heads
    "googlenet_noaux": (0.0625, 24_823, 1_748_992),
    "plain20": (0.375, 38_512, 5_806_320),  # 6/12/24 channels
    "resnet20": (0.375, 38_512, 5_806_320),
    "plain56": (0.375, 121_168, 17_750_256),
    "resnet56": (0.375, 121_168, 17_750_256),
}


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_presets_are_complete(preset):
    c = history_configs.get_config(preset)
    assert c.preset == preset and c.expected_minutes > 0
    configs = history.STUDY.variants(c)
    assert list(configs) == history.net_names(c)
    # One recipe: only the model and its arguments differ between nets.
    recipes = []
    for n, v in configs.items():
        d = v.to_dict()
        assert d.pop("model") == history.NETS[n].model
        d.pop("model_kwargs")
        recipes.append(d)
    assert all(r == recipes[0] for r in recipes)
    if preset != "smoke":
        assert list(c.nets) == list(history.NETS)


def test_cpu_preset_nets_are_pinned():
    c = history_configs.get_config("cpu")
    c.dataset = "synthetic"  # 32x32x3, 10 classes, as cifar10
    got = {}
    for n, v in history.STUDY.variants(c).items():
        cost = costs.model_cost(template.create_model(c, v), CIFAR)
        got[n] = (c.widths[n], cost.params, cost.macs)
    assert got == CPU


def test_frontier_is_the_undominated_points():
    points = {"a": (1, 0.6), "b": (2, 0.5), "c": (3, 0.55), "d": (2, 0.5), "e": (4, 0.3)}
    # c is beaten by b (cheaper and better); b and d tie, and neither beats the other.
    assert history.frontier(points) == ["a", "b", "d", "e"]
    assert history.frontier({"a": (1, 0.5), "b": (1, 0.6)}) == ["a"]  # same cost, worse


def test_summary_names_the_frontier_of_the_mean_and_of_each_seed():
    def row(net, macs, errors):
        mean = sum(errors) / len(errors)
        return {
            "net": net,
            "macs": macs,
            "test_error": mean,
            "test_errors": errors,
            "train_error": mean,
            "seeds": 2,
            "seed": 0,
        }

    results = {
        "a": row("A (1998)", 1, [0.6, 0.6]),
        "b": row("B (2012)", 2, [0.5, 0.7]),  # on the frontier by seed 0 only
        "c": row("C (2016)", 3, [0.4, 0.4]),
    }
    lines = history.STUDY.summary(results, "").splitlines()
    # b's mean, 0.6, is a's error at more multiply-adds: a dominates it.
    assert lines[-5].endswith("less of one): A (1998), C (2016)")
    assert lines[-4] == "  by seed 0's test errors: A (1998), B (2012), C (2016)"
    assert lines[-3] == "  by seed 1's test errors: A (1998), C (2016)"
    assert lines[-2] == "lowest test error: C (2016), 40.00 %"


def test_bad_nets_and_widths_are_one_line():
    c = history_configs.get_config("smoke")
    c.nets = ("lenet5", "mobilenet")
    with pytest.raises(ValueError, match=r"nets=\['lenet5', 'mobilenet'\] \(valid: lenet5, "):
        history.STUDY.variants(c)
    c.nets = ("lenet5,nin",)  # --config.nets=lenet5,nin
    assert list(history.STUDY.variants(c)) == ["lenet5", "nin"]
    c.widths.lenet5 = 0.0
    with pytest.raises(ValueError, match=r"widths\.lenet5=0\.0 must be > 0"):
        history.STUDY.variants(c)


def test_figure_draws_seed_bands(tmp_path):
    results = {
        n: {
            "net": f"{n} (199{i})",
            "year": 1990 + i,
            "macs": 10 ** (5 + i),
            "params": 10 ** (4 + i),
            "test_error": 0.5 - 0.1 * i,
            "test_error_std": 0.01,
            "step_seconds": 0.1 * (i + 1),
        }
        for i, n in enumerate(("a", "b", "c"))
    }
    path = str(tmp_path / "history.png")
    figures.history(results, path, frontier=["a", "b", "c"], machine="a CPU", title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_smoke_run_writes_every_file(tmp_path):
    config = history_configs.get_config("smoke")
    config.dataset = "synthetic"
    workdir = str(tmp_path / "run")
    results = history.STUDY.run(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    assert list(results) == list(config.nets)
    for n, r in results.items():
        assert r["steps"] == config.num_steps and r["step_seconds"] > 0
        assert r["width_multiplier"] == config.widths[n]
        assert r["net"] == f"{history.NETS[n].label} ({history.NETS[n].year})"
        assert 0 <= r["train_error"] <= 1 and 0 <= r["test_error"] <= 1
        assert r["params"] > 0 and r["macs"] > 0
    with open(os.path.join(workdir, "machine.json")) as f:
        assert json.load(f)["machine"]
    with open(os.path.join(workdir, "curves.csv")) as f:
        assert {r["variant"] for r in csv.DictReader(f)} == set(results)
    with open(os.path.join(workdir, "history.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    text = history.STUDY.summary(results, workdir)
    on = history.frontier({n: (r["macs"], r["test_error"]) for n, r in results.items()})
    line = next(x for x in text.splitlines() if x.startswith("on the error-cost frontier"))
    assert line.endswith(", ".join(results[n]["net"] for n in on))
    assert "lowest test error" in text


def _row(net, errors, params=1000, steps=500):
    mean = sum(errors) / len(errors)
    std = (sum((e - mean) ** 2 for e in errors) / (len(errors) - 1)) ** 0.5
    return {
        "net": net,
        "test_error": mean,
        "test_error_std": std,
        "test_errors": errors,
        "params": params,
        "steps": steps,
        "seeds": len(errors),
    }


def test_orderings_say_reproduced_spread_or_budget(tmp_path):
    results = {
        "lenet5": _row("LeNet-5 (1998)", [0.55, 0.54]),
        "alexnet": _row("AlexNet (2012)", [0.60, 0.59], params=4000),  # above LeNet-5: budget
        "vgg16": _row("VGG-16 (2015)", [0.71, 0.81]),
        "vgg16_bn": _row("VGG-16 + BN (2015)", [0.64, 0.86]),  # below by the mean only
        "nin": _row("NiN (2014)", [0.58, 0.57], params=1000),  # below AlexNet, 0.25x params
        "googlenet": _row("GoogLeNet + aux (2015)", [0.52, 0.56]),
        "googlenet_noaux": _row("GoogLeNet (2015)", [0.53, 0.54]),  # within the spread
        "resnet20": _row("ResNet-20 (2016)", [0.46, 0.47]),
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    lines = history.orderings_text(json.loads(path.read_text())).splitlines()
    assert lines[0] == "the lecture's orderings at this budget:"
    got = dict(line.strip().split(": ", 1) for line in lines[1:])
    # Only the orderings whose nets the run holds: no plain nets, no ResNet-56.
    assert list(got) == [
        "AlexNet below LeNet-5",
        "VGG-16 + BN below VGG-16",
        "NiN below AlexNet, at a fraction of its parameters",
        "GoogLeNet + aux below GoogLeNet",
    ]
    assert got["AlexNet below LeNet-5"].startswith("59.5 % vs 54.5 %: not reproduced: the budget")
    assert got["VGG-16 + BN below VGG-16"].endswith("reproduced by the mean, not by every seed")
    assert got["NiN below AlexNet, at a fraction of its parameters"] == (
        "57.5 % vs 59.5 % with 0.25x its parameters: reproduced"
    )
    assert "not reproduced, within the seeds' spread" in got["GoogLeNet + aux below GoogLeNet"]


def test_one_seed_cannot_tell_spread_from_budget():
    results = {"resnet20": {"test_error": 0.5}, "resnet56": {"test_error": 0.52}}
    (line,) = history.orderings_text(results).splitlines()[1:]
    assert line.strip() == (
        "ResNet-56 below ResNet-20: 52.0 % vs 50.0 %: not reproduced "
        "(one seed: more seeds would tell the spread from the budget)"
    )
