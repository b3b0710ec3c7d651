"""Why ResNets work, shown on trained networks.

1. Identity (the lecture's argument): append blocks whose last W and b are 0 to a trained
   plainD and resnetD. The residual block outputs g(0 + a[l]) = a[l]: the deeper ResNet computes
   exactly the shallow one's function. The plain block outputs g(0) = 0: the plain net's output
   collapses. Both deeper nets then train on for `more_steps` (and, as the baseline, the
   shallow nets too).
2. He et al. Figure 7: the std of every 3x3 layer's response (after BN, before the addition and
   the ReLU) of trained plain nets and ResNets of `probe_depths`, on test images.
3. Gradient flow: |dL/dW| per layer of the deepest plain net and ResNet, at initialisation
   (He et al.'s, without `zero_init_residual`: a branch whose last BN scale is 0 passes no
   gradient to its convolutions at step 0) and after training.

`from_workdir` reads trained nets from a `resnet_depth` workdir of the same recipe instead of
training them. Writes results.json, curves.csv and why_resnets.png into the workdir.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_cases.analysis import probes
from cnn_cases.data import input_pipeline, splits
from cnn_cases.engine import defaults, launch, rundir, train
from cnn_cases.models import resnet
from cnn_cases.report import plotting, tables
from cnn_cases.studies import common

NAME = "why_resnets"
PRESETS = launch.PRESETS


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    """The study's config for `preset` (None: the backend's, chosen when the run starts).

    Knobs: `depth` (the shallow nets), `extra_blocks` (appended per stage), `more_steps` (of
    training after deepening, at the schedule's last learning rate), `probe_depths` (Figure 7;
    the deepest also for the gradients), `probe_examples`, `from_workdir`.

    cpu: the nets of the resnet_depth cpu preset (width 8, 16x16 CIFAR, 900 steps of 128),
        plain20/resnet20 deepened by one block per stage to 26 layers and trained on 300 steps;
        Figure 7 and the gradients at depths 20 and 56.
    colab: the nets of the resnet_depth colab preset (full width and resolution, 3,000
        steps), 1,000 more steps; about 10 minutes on Colab's T4 by an estimate from
        multiply-adds (`common.estimate_minutes`), less with `from_workdir`; not measured.
    full: He et al.'s recipe (resnet_depth's full preset), 8,000 more steps.
    smoke: seconds; for tests and notebooks (depth 8, probed too, width 4).
    """
    c = common.base_config(
        depth=20,
        extra_blocks=1,
        more_steps=300,
        probe_depths=(20, 56),
        probe_examples=1_000,
        from_workdir="",
        width=16,
        zero_init_residual=False,
        shortcut="A",
        warmup_from_depth=110,
    )
    c.preset = common.check_preset(preset, PRESETS)
    if c.preset == launch.ACCELERATOR_PRESET:
        c.update(common.FULL_CADENCE)
        c.update(num_steps=64_000, lr_boundaries=(32_000, 48_000), more_steps=8_000)
        c.expected_minutes = 6 * 15.0
    elif c.preset == launch.COLAB_PRESET:
        c.update(common.COLAB_CIFAR)
        c.more_steps = 1_000
        c.expected_minutes = 10.0
    elif c.preset == "smoke":
        common.smoke(c).update(depth=8, probe_depths=(8,), width=4, more_steps=3)
        c.probe_examples = 100
    else:
        c.update(common.CPU_CADENCE)
        c.update(common.CPU_CIFAR)
        c.expected_minutes = 7.0
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    for d in (config.depth, *config.probe_depths):
        resnet.cifar_depth_to_blocks(d)
    if config.seeds != 1:
        raise ValueError(
            f"seeds={config.seeds}: why_resnets probes the nets of one seed (valid: 1)"
        )
    if config.extra_blocks < 1 or config.more_steps < 1:
        raise ValueError(
            f"extra_blocks={config.extra_blocks} and more_steps={config.more_steps} must be >= 1"
        )


def deep_depth(config: ml_collections.ConfigDict) -> int:
    return config.depth + 6 * config.extra_blocks


def variant_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """The trained nets: plainD and resnetD for `depth` and every probe depth."""
    validate(config)
    depths = sorted({config.depth, *config.probe_depths})
    names = [f"{kind}{d}" for kind in ("plain", "resnet") for d in depths]
    return {name: common.cifar_net_config(config, name) for name in names}


def continued_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """`more_steps` of training for net `name` at the learning rate the schedule ended on."""
    c = common.cifar_net_config(config, name)
    c.learning_rate = config.learning_rate * config.lr_decay ** len(config.lr_boundaries)
    c.lr_boundaries, c.warmup_steps, c.num_steps = (), 0, config.more_steps
    c.seed = config.seed + 1  # a data order of its own, not the first steps' again
    c.eval_every = max(1, config.more_steps // 3)
    return c


def _trained(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None) -> Any:
    """(results, variables) of every net, trained here or read from `from_workdir`."""
    configs = variant_configs(config)
    if config.from_workdir:
        runs = {}
        for name, c in configs.items():
            net = common.net_dir(config.from_workdir, name)
            if rundir.read_result(net) is None:
                raise ValueError(f"{net!r} holds no finished {name}; run resnet_depth first")
            rundir.check_config(
                net, c, defaults.RESUMABLE_KEYS, defaults.ADDED_KEYS
            )  # the same recipe, or one line
            runs[name] = rundir.read_result(net)
        source = config.from_workdir
    else:
        runs = common.run_variants(configs, workdir, stop_after=stop_after)
        source = workdir
    if runs is None:
        return None, None
    variables = {}
    for name in configs:
        state = rundir.restore_checkpoint(common.net_dir(source, name))
        variables[name] = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return runs, variables


def _test_images(config: ml_collections.ConfigDict, limit: int) -> tuple[Any, Any]:
    """(images, labels) of the first `limit` test images, normalised as in training."""
    train_split = common.load_train_split(config)
    mean = splits.per_pixel_mean(train_split.images) if config.mean_subtract else None
    test = splits.downsample(
        splits.load_split(
            config.dataset, config.test_split, data_dir=config.data_dir, download=config.download
        ),
        config.downsample,
    )
    limit = min(limit, len(test))
    images, labels, _ = next(
        input_pipeline.eval_batches(test, batch_size=limit, mean=mean, pad_to=config.pad_to)
    )
    return jnp.asarray(images), jnp.asarray(labels)


def identity(
    config: ml_collections.ConfigDict, variables: dict[str, Any], images: Any, labels: Any
) -> dict[str, dict[str, Any]]:
    """Deepens plainD and resnetD with W = 0, b = 0 blocks; compares logits and test errors."""
    n = resnet.cifar_depth_to_blocks(config.depth)
    shape = common.image_shape(config)
    out = {}
    for kind in ("plain", "resnet"):
        shallow_cfg = common.cifar_net_config(config, f"{kind}{config.depth}")
        deep_cfg = common.cifar_net_config(config, f"{kind}{deep_depth(config)}")
        shallow = common.create_model(config, shallow_cfg)
        deep = common.create_model(config, deep_cfg)
        deep_vars = probes.deepen(
            variables[f"{kind}{config.depth}"], deep, shape, blocks_per_stage=n
        )
        shallow_vars = variables[f"{kind}{config.depth}"]
        a = jax.jit(functools.partial(shallow.apply, train=False))(shallow_vars, images)
        b = jax.jit(functools.partial(deep.apply, train=False))(deep_vars, images)
        out[kind] = {
            "deep_variables": deep_vars,
            "max_logit_difference": float(jnp.max(jnp.abs(a - b))),
            "shallow_test_error": float(jnp.mean(jnp.argmax(a, -1) != labels)),
            "deep_test_error": float(jnp.mean(jnp.argmax(b, -1) != labels)),
            "deep_logit_std_over_images": float(jnp.mean(jnp.std(b, axis=0))),
        }
    return out


def run(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> common.Results | None:
    """Trains (or reads) the nets, runs the three probes, writes the study's files."""
    say = common.say(config)
    rundir.check_workdir(workdir)
    runs, variables = _trained(config, workdir, stop_after)
    if runs is None:
        return None
    images, labels = _test_images(config, config.probe_examples)
    ident = identity(config, variables, images, labels)
    deep = deep_depth(config)
    results: dict[str, Any] = {"identity": {}, "continued": {}, "responses": {}, "gradients": {}}
    curves: dict[str, list[dict[str, float]]] = {}
    for kind in ("plain", "resnet"):
        r = ident[kind]
        deep_name = f"{kind}{config.depth}_deepened"  # to depth `deep`
        results["identity"][deep_name] = {k: v for k, v in r.items() if k != "deep_variables"}
        say(
            f"{kind}{config.depth} -> {kind}{deep}: max |logit difference| "
            f"{r['max_logit_difference']:.3g}, test error {100 * r['shallow_test_error']:.2f}% -> "
            f"{100 * r['deep_test_error']:.2f}% on {len(labels)} test images"
        )
        for name, net, init in (
            (deep_name, f"{kind}{deep}", r["deep_variables"]),
            (f"{kind}{config.depth}", f"{kind}{config.depth}", variables[f"{kind}{config.depth}"]),
        ):
            c = continued_config(config, net)
            run_dir = os.path.join(workdir, "continued", name)
            cont = train.train_and_evaluate(c, run_dir, stop_after=stop_after, init_variables=init)
            if cont is None:
                return None
            results["continued"][name] = common.base_row([cont])
            curves[f"{name} continued"] = cont.curves
    for name, v in variables.items():
        if common.cifar_depth(name) in config.probe_depths:
            model = common.create_model(config, common.cifar_net_config(config, name))
            results["responses"][name] = [s for _, s in probes.layer_responses(model, v, images)]
    deepest = max(config.probe_depths)
    batch = min(len(labels), config.batch_size)
    standard = config.copy_and_resolve_references()
    standard.zero_init_residual = False  # zero-init branches get no weight gradient at step 0
    for kind in ("plain", "resnet"):
        name = f"{kind}{deepest}"
        model = common.create_model(config, common.cifar_net_config(config, name))
        fresh = common.create_model(config, common.cifar_net_config(standard, name))
        key = jax.random.PRNGKey(config.seed)
        init = jax.jit(functools.partial(fresh.init, train=False))(key, images[:1])
        results["gradients"][name] = {
            when: [g for _, g in probes.gradient_norms(model, v, images[:batch], labels[:batch])]
            for when, v in (("init", init), ("trained", variables[name]))
        }
    title = common.title(config, f", width {config.width}")
    common.write_outputs(
        workdir, results, curves, lambda p: figure(results, curves, p, title=title), f"{NAME}.png"
    )
    return results


def summary(results: common.Results, workdir: str) -> str:
    """The identity table, the continued training, the response and gradient ranges."""
    del workdir
    rows = [
        (
            name,
            f"{r['max_logit_difference']:.3g}",
            f"{100 * r['shallow_test_error']:.2f}%",
            f"{100 * r['deep_test_error']:.2f}%",
            f"{r['deep_logit_std_over_images']:.3g}",
        )
        for name, r in results["identity"].items()
    ]
    header = ("W = 0, b = 0 blocks", "max |Δlogit|", "test err before", "after", "logit std")
    text = [tables.format_table(header, rows)]
    text.append(common.table(results["continued"], common.RUN_COLUMNS))
    for name, stds in results["responses"].items():
        text.append(
            f"{name}: 3x3 layer response std mean {np.mean(stds):.3f} (max {max(stds):.3f})"
        )
    for name, g in results["gradients"].items():
        for when, norms in g.items():
            text.append(
                f"{name} {when}: |dL/dW| first layer {norms[0]:.3g}, last {norms[-1]:.3g}, "
                f"min {min(norms):.3g}"
            )
    return "\n".join(text)


def figure(results: common.Results, curves: common.Curves, path: str, *, title: str = "") -> None:
    """Continued training; Figure 7 by layer and sorted; gradient norms per layer (log)."""
    plotting.why_resnets_figure(results, curves, path, title=title)
