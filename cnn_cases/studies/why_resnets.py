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
training them. Writes results.json, curves.csv and why_resnets.png into the workdir. Configs:
`experiments/why_resnets.py`.
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
from cnn_cases.models import resnet
from cnn_cases.report import figures, tables
from cnn_cases.studies import results as results_lib
from cnn_cases.studies import template, variants
from cnn_cases.studies.results import Curves, Results


def deep_depth(config: ml_collections.ConfigDict) -> int:
    return config.depth + 6 * config.extra_blocks


def continued_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """`more_steps` of training for net `name` at the learning rate the schedule ended on."""
    c = variants.cifar_net_config(config, name)
    c.learning_rate = config.learning_rate * config.lr_decay ** len(config.lr_boundaries)
    c.lr_boundaries, c.warmup_steps, c.num_steps = (), 0, config.more_steps
    c.seed = config.seed + 1  # a data order of its own, not the first steps' again
    c.eval_every = max(1, config.more_steps // 3)
    return c


def _model(config: ml_collections.ConfigDict, name: str) -> Any:
    return template.create_model(config, variants.cifar_net_config(config, name))


def identity(
    config: ml_collections.ConfigDict, variables: dict[str, Any], images: Any, labels: Any
) -> dict[str, dict[str, Any]]:
    """Deepens plainD and resnetD with W = 0, b = 0 blocks; compares logits and test errors."""
    n = resnet.cifar_depth_to_blocks(config.depth)
    shape = template.image_shape(config)
    out = {}
    for kind in ("plain", "resnet"):
        shallow = _model(config, f"{kind}{config.depth}")
        deep = _model(config, f"{kind}{deep_depth(config)}")
        shallow_vars = variables[f"{kind}{config.depth}"]
        deep_vars = probes.deepen(shallow_vars, deep, shape, blocks_per_stage=n)
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


def gradients(
    config: ml_collections.ConfigDict, variables: dict[str, Any], images: Any, labels: Any
) -> dict[str, dict[str, list[float]]]:
    """|dL/dW| per layer of the deepest probed plain net and ResNet, at He et al.'s
    initialisation and trained, on one batch."""
    deepest = max(config.probe_depths)
    batch = min(len(labels), config.batch_size)
    standard = config.copy_and_resolve_references()
    standard.zero_init_residual = False  # zero-init branches get no weight gradient at step 0
    out = {}
    for kind in ("plain", "resnet"):
        name = f"{kind}{deepest}"
        model, fresh = _model(config, name), _model(standard, name)
        key = jax.random.PRNGKey(config.seed)
        init = jax.jit(functools.partial(fresh.init, train=False))(key, images[:1])
        out[name] = {
            when: [g for _, g in probes.gradient_norms(model, v, images[:batch], labels[:batch])]
            for when, v in (("init", init), ("trained", variables[name]))
        }
    return out


def _continue(
    job: template.Job,
    kind: str,
    ident: dict[str, Any],
    variables: dict[str, Any],
    results: dict[str, Any],
    curves: dict[str, list[dict[str, float]]],
    num_images: int,
) -> bool:
    """The identity's row of one kind, and its deepened and shallow nets trained on for
    `more_steps` (False if `stop_after` stopped them)."""
    config = job.config
    deep_name = f"{kind}{config.depth}_deepened"  # to depth `deep_depth`
    results["identity"][deep_name] = {k: v for k, v in ident.items() if k != "deep_variables"}
    template.say(
        config,
        f"{kind}{config.depth} -> {kind}{deep_depth(config)}: max |logit difference| "
        f"{ident['max_logit_difference']:.3g}, test error "
        f"{100 * ident['shallow_test_error']:.2f}% -> {100 * ident['deep_test_error']:.2f}% on "
        f"{num_images} test images",
    )
    shallow = f"{kind}{config.depth}"
    for name, net, init in (
        (deep_name, f"{kind}{deep_depth(config)}", ident["deep_variables"]),
        (shallow, shallow, variables[shallow]),
    ):
        c = continued_config(config, net)
        run_dir = os.path.join(job.workdir, "continued", name)
        cont = template.train_net(c, run_dir, stop_after=job.stop_after, init_variables=init)
        if cont is None:
            return False
        results["continued"][name] = results_lib.base_row(cont)
        curves[f"{name} continued"] = cont[0].curves
    return True


class WhyResnets(template.Study):
    name = "why_resnets"

    def validate(self, config: ml_collections.ConfigDict) -> None:
        for d in (config.depth, *config.probe_depths):
            resnet.cifar_depth_to_blocks(d)
        if config.seeds != 1:
            raise ValueError(
                f"seeds={config.seeds}: why_resnets probes the nets of one seed (valid: 1)"
            )
        if config.extra_blocks < 1 or config.more_steps < 1:
            raise ValueError(
                f"extra_blocks={config.extra_blocks} and more_steps={config.more_steps} "
                "must be >= 1"
            )

    def variants(self, config: ml_collections.ConfigDict) -> template.Configs:
        """The trained nets: plainD and resnetD for `depth` and every probe depth."""
        self.validate(config)
        depths = sorted({config.depth, *config.probe_depths})
        names = [f"{kind}{d}" for kind in ("plain", "resnet") for d in depths]
        return {name: variants.cifar_net_config(config, name) for name in names}

    def train(self, job: template.Job) -> template.Runs | None:
        """Trains the nets, or reads them from `from_workdir` (the same recipe, or one line)."""
        if not job.config.from_workdir:
            return super().train(job)
        runs = {}
        for name, c in job.configs.items():
            net = template.net_dir(job.config.from_workdir, name)
            if (stored := template.stored_results(c, net)) is None:
                raise ValueError(f"{net!r} holds no finished {name}; run resnet_depth first")
            runs[name] = stored
        return runs

    def collect(self, job: template.Job, runs: template.Runs) -> tuple[Results, Curves] | None:
        """The three probes on the trained nets (the identity's deepened nets trained on)."""
        config = job.config
        source = config.from_workdir or job.workdir
        variables = {n: template.load_variables(template.net_dir(source, n)) for n in job.configs}
        images, labels = template.normalised_examples(config, "test", config.probe_examples)
        results: dict[str, Any] = {"init": config.init, "identity": {}, "continued": {}}
        curves: dict[str, list[dict[str, float]]] = {}
        ident = identity(config, variables, images, labels)
        for kind in ("plain", "resnet"):
            if not _continue(job, kind, ident[kind], variables, results, curves, len(labels)):
                return None
        results["responses"] = {
            name: [s for _, s in probes.layer_responses(_model(config, name), v, images)]
            for name, v in variables.items()
            if variants.cifar_depth(name) in config.probe_depths
        }
        results["gradients"] = gradients(config, variables, images, labels)
        return results, curves

    def title_extra(self, config: ml_collections.ConfigDict) -> str:
        return f", width {config.width}"

    def figure(self, figure: template.Figure) -> None:
        """Continued training; Figure 7 by layer and sorted; gradient norms per layer (log)."""
        figures.why_resnets(figure.results, figure.curves, figure.path, title=figure.title)

    def summary(self, results: Results, workdir: str) -> str:
        """The identity table, the continued training, the response and gradient ranges."""
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
        text.append(results_lib.table(results["continued"], results_lib.RUN_COLUMNS))
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


STUDY = WhyResnets()
