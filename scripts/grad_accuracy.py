"""How far a model's f32 gradients are from float64 ones, under this process's XLA flags.

    python scripts/grad_accuracy.py --model=resnet20
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce \\
        python scripts/grad_accuracy.py --model=resnet20

Computes the loss gradient of one batch (random normal images, fixed seed, BatchNorm in
training mode) in float32 under the current XLA_FLAGS, and the same gradient in float64 in a
child process run without XLA_FLAGS (the reference). Prints the relative error over all
parameters, ||g32 - g64|| / ||g64||, and the worst single tensor. Use it before trusting a speed
flag: an f32 gradient usually agrees with float64 to about 1e-6. `--kernels` picks the f32
run's convolutions and BatchNorm (the float64 reference always runs on XLA's). `--vs_torch`
also measures PyTorch's own f32 gradient of the same CIFAR net against its float64 one, on the
same batch (scripts/torch_resnet.py, PyTorch's initialisation): the yardstick for "f32-faithful".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
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
    p.add_argument("--kernels", default="auto", choices=("auto", "onednn", "xla"))
    p.add_argument("--vs_torch", action="store_true", help="PyTorch's own f32 error too")
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
    config.dtype = jnp.dtype(dtype).name  # the reference computes in float64 throughout
    config.kernels = "xla" if args.float64 else args.kernels
    if args.width is not None:
        config.model_kwargs.width = args.width
    model = train_lib.create_model(config, 10)
    shape = tuple(models.input_shape(args.model))
    state = train_lib.create_train_state(model, config, shape)
    params, stats = jax.tree.map(lambda a: jnp.asarray(a, dtype), (state.params, state.batch_stats))
    images, labels = batch(args, shape)
    x, y = jnp.asarray(images, dtype), jnp.asarray(labels, jnp.int32)

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


def batch(args: argparse.Namespace, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The seed's random normal images (N, H, W, C) and labels."""
    rng = np.random.default_rng(args.seed)
    return rng.standard_normal((args.batch_size, *shape)), rng.integers(0, 10, args.batch_size)


def torch_gradient_error(args: argparse.Namespace) -> dict[str, Any]:
    """PyTorch's f32 gradient of the CIFAR net `args.model` against its float64 one."""
    match = re.fullmatch(r"(resnet|plain)(\d+)", args.model)
    if match is None:
        raise ValueError(f"--vs_torch needs a CIFAR net (resnetD or plainD), not {args.model!r}")
    try:
        import torch
    except ImportError:
        raise ValueError("--vs_torch needs PyTorch: pip install -e '.[bench]'") from None
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_resnet.py")
    spec = importlib.util.spec_from_file_location("torch_resnet", path)
    tr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tr)
    torch.manual_seed(args.seed)
    net = tr.CifarResNet(
        int(match.group(2)),
        width=args.width if args.width is not None else 16,
        residual=match.group(1) == "resnet",
    ).train()
    images, labels = batch(args, (32, 32, 3))
    grads = []
    for dtype in (torch.float32, torch.float64):
        model = net.to(dtype)
        model.zero_grad(set_to_none=True)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype)
        loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels))
        loss.backward()
        grads.append(
            {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters()}
        )
    return compare(grads[0], grads[1])


def _reference(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The float64 gradient from a child process without XLA_FLAGS."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ref.npz")
        argv = [f"--model={args.model}", f"--batch_size={args.batch_size}"]
        argv += [f"--seed={args.seed}", "--float64", f"--save={out}", "--kernels=xla"]
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
        "kernels": args.kernels,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        **compare(gradients(args), _reference(args)),
    }
    if args.vs_torch:
        torch_r = torch_gradient_error(args)
        result["torch_relative_error"] = torch_r["relative_error"]
        result["torch_worst_tensor_relative_error"] = torch_r["worst_tensor_relative_error"]
    if args.json:
        out(json.dumps(result))
    else:
        out(
            f"{args.model}, batch {args.batch_size}, XLA_FLAGS={result['xla_flags']!r}: f32 "
            f"gradient vs float64, relative error {result['relative_error']:.2e} (worst tensor "
            f"{result['worst_tensor']}: {result['worst_tensor_relative_error']:.2e})"
        )
        if args.vs_torch:
            out(
                f"  PyTorch's own f32 gradient vs its float64 one: relative error "
                f"{result['torch_relative_error']:.2e} (worst tensor "
                f"{result['torch_worst_tensor_relative_error']:.2e})"
            )
    return result


if __name__ == "__main__":
    main()
