"""Plain nets vs ResNets at several depths (He et al. 2016, section 4.2, Figure 6).

`run(config, workdir)` trains `plainD` and `resnetD` for each depth D, each in
`workdir/nets/<name>` (finished nets are skipped, an unfinished one resumes),
then writes `results.json`, `curves.csv` and `resnet_depth.png`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from cnn_cases import plotting, studies


def study_config() -> ml_collections.ConfigDict:
    """The training defaults plus the knobs of the study."""
    return studies.study_config(
        depths=(20, 32, 44, 56),
        width=16,
        zero_init_residual=False,
        shortcut="A",
        warmup_from_depth=110,  # He et al.: ResNet-110 warms up at lr 0.01
    )


def net_names(depths: Any) -> list[str]:
    return [f"{kind}{d}" for kind in ("plain", "resnet") for d in depths]


def net_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The training config of one net of the study."""
    residual = name.startswith("resnet")
    depth = int(name.removeprefix("resnet").removeprefix("plain"))
    kwargs: dict[str, Any] = {"width": config.width, "shortcut": config.shortcut}
    if residual and config.zero_init_residual:
        kwargs["zero_init_residual"] = True
    c = studies.variant_config(config, name, **kwargs)
    if depth < config.warmup_from_depth:
        c.warmup_steps = 0
    return c


def degradation_verdict(
    results: dict[str, dict[str, Any]], *, tolerance: float = 0.005
) -> tuple[bool, str]:
    """Deepest plain net trains worse than the shallowest; deepest ResNet not worse.

    "Not worse" allows `tolerance` (0.5 point by default): at a CPU budget the training
    error of one short run moves by that much from seed to seed.
    """
    plain = sorted((v["depth"], v["train_error"]) for v in results.values() if not v["residual"])
    res = sorted((v["depth"], v["train_error"]) for v in results.values() if v["residual"])
    if len(plain) < 2 or len(res) < 2:
        return False, "degradation not tested: need at least two depths"
    dp, dr = plain[-1][1] - plain[0][1], res[-1][1] - res[0][1]
    ok = dp > tolerance and dr <= tolerance
    what = "REPRODUCED" if ok else "NOT reproduced"
    return ok, (
        f"degradation {what}: plain{plain[-1][0]} train error {dp * 100:+.2f} points vs "
        f"plain{plain[0][0]}; resnet{res[-1][0]} {dr * 100:+.2f} points vs resnet{res[0][0]} "
        f"(tolerance {tolerance * 100:.1f} point)"
    )


def final_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'net':<10} {'train err':>9} {'test err':>9} {'steps':>7} {'seconds':>8}"]
    for name, r in results.items():
        lines.append(
            f"{name:<10} {100 * r['train_error']:8.2f}% {100 * r['test_error']:8.2f}% "
            f"{r['steps']:>7} {r['seconds']:>8.1f}"
        )
    return "\n".join(lines)


def run(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, dict[str, Any]] | None:
    """Trains every net, writes the study's files and returns `results` (None if stopped)."""
    configs = {name: net_config(config, name) for name in net_names(config.depths)}
    runs = studies.run_variants(configs, workdir, stop_after=stop_after)
    if runs is None:
        return None
    results = {
        name: {
            "depth": int(name.removeprefix("resnet").removeprefix("plain")),
            "residual": name.startswith("resnet"),
            "train_error": r.train_error,
            "test_error": r.test_error,
            "steps": r.steps,
            "seconds": r.seconds,
            "params": r.params,
        }
        for name, r in runs.items()
    }
    if jax.process_index() == 0:
        write_outputs(
            results, {n: r.curves for n, r in runs.items()}, workdir, title=_title(config)
        )
    return results


def _title(config: ml_collections.ConfigDict) -> str:
    size = f" at 1/{config.downsample} resolution" if config.downsample > 1 else ""
    return (
        f"{config.dataset}{size}, width {config.width}, {config.num_steps} steps of "
        f"{config.batch_size}, preset {config.preset or 'custom'}"
    )


def write_outputs(
    results: dict[str, dict[str, Any]],
    curves: dict[str, list[dict[str, float]]],
    workdir: str,
    *,
    title: str = "",
) -> None:
    """results.json, curves.csv and resnet_depth.png in `workdir`."""
    studies.write_json(os.path.join(workdir, "results.json"), results)
    studies.write_curves_csv(os.path.join(workdir, "curves.csv"), curves, key="model")
    plotting.depth_figure(curves, results, os.path.join(workdir, "resnet_depth.png"), title=title)
