"""Several seeds as one vmapped train step, against the same seeds' steps one after another.

`benchmark` builds the seeds' train states as `train.train` does (`create_seed_states`:
each seed initialised as a run of its own) and times, alternating repetition by repetition so
that both see the same machine load: one jitted `jax.vmap` of `steps.train_step` over the
stacked states, and the jitted one-seed step called once per seed. Inputs are random normal
batches, one per seed. Medians after warm-up; the ratio is the speed-up of the vmapped step.
Both ran the same steps on the same batches, so each seed's parameters must agree at the end
(`max_param_difference`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases.engine import defaults, steps
from cnn_cases.kernels import library
from cnn_cases.perf.timing import time_calls
from cnn_cases.perf.workload import Workload
from cnn_cases.report.tables import format_table


def _random_batches(workload: Workload, seeds: int) -> tuple[jax.Array, jax.Array]:
    """One random batch per seed, stacked: images (seeds, N, H, W, C) and labels (seeds, N)."""
    rng = np.random.default_rng(workload.seed)
    batches = [workload.random_batch(rng) for _ in range(seeds)]
    images = jnp.asarray(np.stack([b[0] for b in batches]), jnp.float32)
    labels = jnp.asarray(np.stack([b[1] for b in batches]), jnp.int32)
    return images, labels


def _compiled_steps(
    step: Callable[..., Any], stacked: Any, single: Any, inputs: tuple[jax.Array, ...]
) -> tuple[Any, Any, dict[str, float]]:
    """`step` compiled vmapped over the stacked states and for one seed, with compile seconds.

    `inputs` are the stacked images, labels and keys; `single` is one seed's state.
    """
    compile_s = {}
    start = time.perf_counter()
    vmapped = jax.jit(jax.vmap(step), donate_argnums=0).lower(stacked, *inputs)
    vmapped = vmapped.compile()
    compile_s["vmapped"] = time.perf_counter() - start
    start = time.perf_counter()
    one = jax.jit(step, donate_argnums=0).lower(single, *(a[0] for a in inputs))
    one = one.compile()
    compile_s["one_by_one"] = time.perf_counter() - start
    return vmapped, one, compile_s


def _max_param_difference(stacked: Any, singles: list[Any]) -> float:
    """The largest absolute difference between seed k's stacked and own parameters, any k."""
    return max(
        float(jnp.max(jnp.abs(a[k] - b)))
        for k in range(len(singles))
        for a, b in zip(
            jax.tree_util.tree_leaves(stacked.params),
            jax.tree_util.tree_leaves(singles[k].params),
            strict=True,
        )
    )


def benchmark(
    workload: Workload, *, seeds: int = 3, warmup: int = 2, reps: int = 5, steps_per_rep: int = 2
) -> dict[str, Any]:
    """Seconds per step of all `seeds` seeds: vmapped, and one seed after another."""
    if seeds < 2:
        raise ValueError(f"seeds={seeds}: compare at least 2 seeds")
    config = workload.config()
    config.seeds = seeds
    model = defaults.create_model(config, workload.num_classes)
    stacked = steps.create_seed_states(model, config, workload.input_shape)
    singles = [steps.unstack(stacked, k) for k in range(seeds)]
    images, labels = _random_batches(workload, seeds)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in steps.seed_list(config)])

    step = functools.partial(steps.train_step, aux_loss_weight=config.aux_loss_weight)
    vmapped, single, compile_s = _compiled_steps(step, stacked, singles[0], (images, labels, keys))
    states = {"vmapped": stacked, "one_by_one": singles}

    def run_vmapped() -> Any:
        states["vmapped"], metrics = vmapped(states["vmapped"], images, labels, keys)
        return metrics

    def run_one_by_one() -> Any:
        out = []
        for k in range(seeds):
            states["one_by_one"][k], metrics = single(
                states["one_by_one"][k], images[k], labels[k], keys[k]
            )
            out.append(metrics)
        return out

    timing = time_calls(
        {"vmapped": run_vmapped, "one_by_one": run_one_by_one},
        reps=reps,
        warmup=warmup,
        number=steps_per_rep,
    )
    v, o = timing["vmapped"].median, timing["one_by_one"].median
    # Both ran the same steps on the same batches: seed k's parameters must agree.
    difference = _max_param_difference(states["vmapped"], states["one_by_one"])
    return {
        "model": workload.model,
        "batch_size": workload.batch_size,
        "input_shape": list(workload.input_shape),
        "width": workload.width,
        "seeds": seeds,
        "onednn": library.use_onednn(workload.kernels),
        "devices": f"{jax.device_count()} {jax.devices()[0].platform}",
        "vmapped_step_s": v,
        "one_by_one_step_s": o,
        "speedup": o / v,
        "max_param_difference": difference,
        "compile_s": compile_s,
        "vmapped_seconds": list(timing["vmapped"].seconds),
        "one_by_one_seconds": list(timing["one_by_one"].seconds),
    }


def format_report(r: dict[str, Any]) -> str:
    """`benchmark`'s dict as a title line and a table."""
    h, w, _ = r["input_shape"]
    width = f" width {r['width']}" if r["width"] else ""
    title = (
        f"{r['model']}{width}  batch {r['batch_size']}  "
        f"{h}x{w}  {r['seeds']} seeds  kernels {'oneDNN' if r['onednn'] else 'XLA'}  "
        f"on {r['devices']}"
    )
    per_image = lambda s: f"{r['seeds'] * r['batch_size'] / s:.0f}"
    rows = [
        [
            name,
            f"{1000 * r[f'{key}_step_s']:.1f}",
            per_image(r[f"{key}_step_s"]),
            f"{r['compile_s'][key]:.1f}",
        ]
        for name, key in (("one vmapped step", "vmapped"), ("seeds one by one", "one_by_one"))
    ]
    table = format_table(["all seeds' step", "ms", "images/s", "compile s"], rows)
    return (
        f"{title}\n{table}\nvmapped / one by one: {r['speedup']:.2f}x the speed "
        f"(medians, repetitions alternated); parameters agree to {r['max_param_difference']:.1g}"
    )
