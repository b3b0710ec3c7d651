"""How far a model's f32 gradients are from float64 ones, under this process's XLA flags.

`measure` computes the loss gradient of one batch (random normal images, fixed seed, BatchNorm
in training mode) in float32 under the current XLA_FLAGS, and the same gradient in float64 in
a child process run without XLA_FLAGS and on XLA's own kernels (the reference), and reports the
relative error over all parameters, ||g32 - g64|| / ||g64||, and the worst single tensor. With
`vs_torch` it also measures PyTorch's own f32 gradient of the same CIFAR net against its float64
one, on the same batch (`cnn_cases.interop.pytorch`, PyTorch's initialisation): the yardstick for
"f32-faithful".

Run as a module (`python -m cnn_cases.perf.gradients`), it is that child: it reads
{"workload": ..., "out": path} as JSON on stdin and saves the gradient to `path` (.npz).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnn_cases.engine import defaults, steps
from cnn_cases.interop import pytorch
from cnn_cases.perf.workload import Workload


def gradients(workload: Workload) -> dict[str, np.ndarray]:
    """The loss gradient of `workload`'s random batch in `workload.dtype`, as {path: array}.

    Parameters and BatchNorm statistics are cast to the dtype too; float64 needs a process
    started with JAX_ENABLE_X64=1.
    """
    dtype = jnp.dtype(workload.dtype)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("a float64 gradient needs JAX_ENABLE_X64=1 when the process starts")
    config = workload.config()
    model = defaults.create_model(config, workload.num_classes)
    state = steps.create_train_state(model, config, workload.input_shape)
    params, stats = jax.tree.map(lambda a: jnp.asarray(a, dtype), (state.params, state.batch_stats))
    images, labels = workload.random_batch(np.random.default_rng(workload.seed))
    x, y = jnp.asarray(images, dtype), jnp.asarray(labels, jnp.int32)

    def loss(p: Any) -> jax.Array:
        logits, _ = model.apply(
            {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        logits = logits[0] if isinstance(logits, tuple) else logits
        # optax keeps the logits' dtype; train.cross_entropy computes in float32.
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.jit(jax.grad(loss))(params)
    return {
        jax.tree_util.keystr(path): np.asarray(g, np.float64)
        for path, g in jax.tree_util.tree_leaves_with_path(grads)
    }


def reference_gradients(workload: Workload) -> dict[str, np.ndarray]:
    """`workload`'s float64 gradient on XLA's kernels, from a child process without XLA_FLAGS."""
    reference = dataclasses.replace(workload, dtype="float64", kernels="xla")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_ENABLE_X64"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "reference.npz")
        proc = subprocess.run(
            [sys.executable, "-m", __name__],
            input=json.dumps({"workload": dataclasses.asdict(reference), "out": out}),
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            raise RuntimeError(f"the float64 reference failed:\n{proc.stderr[-2000:]}")
        with np.load(out) as z:
            return {k: z[k] for k in z.files}


def compare(test: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    """Relative error of `test` against `ref` over all tensors, and the worst single tensor."""
    num = sum(float(np.sum((test[k] - ref[k]) ** 2)) for k in ref)
    den = sum(float(np.sum(ref[k] ** 2)) for k in ref)
    per = {
        k: float(np.linalg.norm(test[k] - ref[k]) / max(np.linalg.norm(ref[k]), 1e-300))
        for k in ref
    }
    worst = max(per, key=per.get)
    return {
        "relative_error": (num / den) ** 0.5,
        "worst_tensor": worst,
        "worst_tensor_relative_error": per[worst],
    }


def torch_gradient_error(workload: Workload) -> dict[str, Any]:
    """`compare` of PyTorch's f32 gradient of the CIFAR net against its float64 one."""
    torch = pytorch.import_torch()
    torch.manual_seed(workload.seed)
    net = pytorch.cifar_net(workload.model, width=workload.width, num_classes=workload.num_classes)
    images, labels = workload.random_batch(np.random.default_rng(workload.seed))
    f32, f64 = (
        pytorch.gradients(net, images, labels, dtype) for dtype in (torch.float32, torch.float64)
    )
    return compare(f32, f64)


def measure(workload: Workload, *, vs_torch: bool = False) -> dict[str, Any]:
    """The f32 gradient's error against float64 (and PyTorch's own with `vs_torch`), as a dict."""
    result = {
        "model": workload.model,
        "batch_size": workload.batch_size,
        "kernels": workload.kernels,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        **compare(gradients(workload), reference_gradients(workload)),
    }
    if vs_torch:
        torch_r = torch_gradient_error(workload)
        result["torch_relative_error"] = torch_r["relative_error"]
        result["torch_worst_tensor_relative_error"] = torch_r["worst_tensor_relative_error"]
    return result


def _error_text(error: float, worst: float, worst_tensor: str | None = None) -> str:
    where = "" if worst_tensor is None else f"{worst_tensor}: "
    return f"relative error {error:.2e} (worst tensor {where}{worst:.2e})"


def format_report(r: dict[str, Any]) -> str:
    """`measure`'s dict in a sentence (two with PyTorch's)."""
    own = _error_text(r["relative_error"], r["worst_tensor_relative_error"], r["worst_tensor"])
    text = f"{r['model']}, batch {r['batch_size']}, XLA_FLAGS={r['xla_flags']!r}: f32 gradient "
    text += f"vs float64, {own}"
    if "torch_relative_error" in r:
        torch_r = _error_text(r["torch_relative_error"], r["torch_worst_tensor_relative_error"])
        text += f"\n  PyTorch's own f32 gradient vs its float64 one: {torch_r}"
    return text


def _child() -> None:
    request = json.load(sys.stdin)
    np.savez(request["out"], **gradients(Workload(**request["workload"])))


if __name__ == "__main__":
    _child()
