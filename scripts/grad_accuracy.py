"""How far a model's f32 gradients are from float64 ones, under this process's XLA flags.

    python scripts/grad_accuracy.py --model=resnet20
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce \\
        python scripts/grad_accuracy.py --model=resnet20

Computes the loss gradient of one batch (random normal images, fixed seed, BatchNorm in
training mode) in float32 under the current XLA_FLAGS, and the same gradient in float64 in a
child process run without XLA_FLAGS (the reference). Prints the relative error over all
parameters, ||g32 - g64|| / ||g64||, and the worst single tensor. Use it before trusting a speed
flag: an f32 gradient usually agrees with float64 to about 1e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="resnet20", help="registry name (resnet20, resnet56, ...)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--width", type=int, default=None, help="CIFAR nets: first-stage width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)  # the child's output file
    p.add_argument("--float64", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def gradients(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The loss gradient of one random batch, flattened to {path: array}."""
    if args.float64:
        os.environ["JAX_ENABLE_X64"] = "1"
    import jax
    import jax.numpy as jnp

    from cnn_cases import models
    from cnn_cases import train as train_lib

    dtype = jnp.float64 if args.float64 else jnp.float32
    config = train_lib.default_config()
    config.model = args.model
    config.seed = args.seed
    if args.width is not None:
        config.model_kwargs.width = args.width
    model = train_lib.create_model(config, 10)
    shape = tuple(models.input_shape(args.model))
    state = train_lib.create_train_state(model, config, shape)
    params, stats = jax.tree.map(lambda a: jnp.asarray(a, dtype), (state.params, state.batch_stats))
    rng = np.random.default_rng(args.seed)
    x = jnp.asarray(rng.standard_normal((args.batch_size, *shape)), dtype)
    y = jnp.asarray(rng.integers(0, 10, args.batch_size), jnp.int32)

    def loss(p: Any) -> jax.Array:
        logits, _ = model.apply(
            {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        logits = logits[0] if isinstance(logits, tuple) else logits
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    grads = jax.jit(jax.grad(loss))(params)
    return {
        jax.tree_util.keystr(path): np.asarray(g, np.float64)
        for path, g in jax.tree_util.tree_leaves_with_path(grads)
    }


def _reference(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The float64 gradient from a child process without XLA_FLAGS."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ref.npz")
        argv = [f"--model={args.model}", f"--batch_size={args.batch_size}"]
        argv += [f"--seed={args.seed}", "--float64", f"--save={out}"]
        if args.width is not None:
            argv.append(f"--width={args.width}")
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *argv],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            raise RuntimeError(f"the float64 reference failed:\n{proc.stderr[-2000:]}")
        with np.load(out) as z:
            return {k: z[k] for k in z.files}


def compare(test: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
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


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    args = parse_args(argv)
    if args.save:
        np.savez(args.save, **gradients(args))
        return {}
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        **compare(gradients(args), _reference(args)),
    }
    if args.json:
        out(json.dumps(result))
    else:
        out(
            f"{args.model}, batch {args.batch_size}, XLA_FLAGS={result['xla_flags']!r}: f32 "
            f"gradient vs float64, relative error {result['relative_error']:.2e} (worst tensor "
            f"{result['worst_tensor']}: {result['worst_tensor_relative_error']:.2e})"
        )
    return result


if __name__ == "__main__":
    main()
