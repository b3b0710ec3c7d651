"""Where a train step's time goes: every convolution of a model, timed pass by pass.

    python scripts/profile_convs.py --model=resnet20 --batch_size=128
    python scripts/profile_convs.py --model=resnet56 --vs_torch --json

For each distinct convolution of the model (input shape, kernel, stride; found by intercepting
`nn.Conv` while `jax.eval_shape` traces `init`), times its three passes on their own, jitted:
the forward convolution, the input gradient and the kernel gradient (median over --reps
repetitions after warm-up, random inputs, batch --batch_size). Totals are weighted by how many
layers share the shape and set beside the whole train step measured in the same run
(scripts/benchmark.py's step), so the remainder is everything that is not a convolution
(BatchNorm, ReLU, the optimiser, ...). `--vs_torch` times the same passes in PyTorch
(`aten.convolution_backward`, channels last), alternating with JAX, and the PyTorch step too.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnn_cases import models
from cnn_cases.models.layers import conv_function

_HERE = os.path.dirname(os.path.abspath(__file__))
_DN = ("NHWC", "HWIO", "NHWC")
PASSES = ("fwd", "dx", "dw")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="resnet20", help="registry name (resnet20, resnet56, ...)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--width", type=int, default=None, help="CIFAR nets: first-stage width")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per pass")
    p.add_argument("--reps", type=int, default=7, help="timed calls per pass (median)")
    p.add_argument("--step_reps", type=int, default=5, help="timed repetitions of the step")
    p.add_argument(
        "--kernels",
        default="auto",
        choices=("auto", "onednn", "xla"),
        help="convolutions and BatchNorm: auto (oneDNN on a CPU), onednn, xla",
    )
    p.add_argument("--vs_torch", action="store_true", help="time PyTorch's passes too")
    p.add_argument("--torch_threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args(argv)
    if min(args.batch_size, args.reps, args.step_reps) < 1:
        p.error("batch_size, reps and step_reps must be >= 1")
    return args


def _load_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(_HERE, "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the layers


def conv_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """The distinct convolutions of `model` with how many layers share each (`count`).

    Each entry: `in_shape` (H, W, C per example), `kernel` (kh, kw), `features`, `strides`,
    `pads` ((lo, hi) per spatial dimension), `count`. Grouped or dilated convolutions are not
    profiled (none in the CIFAR nets).
    """
    seen: collections.Counter = collections.Counter()

    def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            kernel = tuple(module.kernel_size)
            strides = module.strides or (1,) * len(kernel)
            strides = (strides,) * len(kernel) if isinstance(strides, int) else tuple(strides)
            padding = module.padding
            if isinstance(padding, str):
                pads = lax.padtype_to_pads(x.shape[1:3], kernel, strides, padding)
            else:
                pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
            if module.feature_group_count == 1 and len(kernel) == 2:
                key = (
                    tuple(x.shape[1:]),
                    kernel,
                    module.features,
                    strides,
                    tuple(tuple(int(v) for v in p) for p in pads),
                )
                seen[key] += 1
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(
            lambda: model.init(
                jax.random.PRNGKey(0), jnp.zeros((1, *input_shape), jnp.float32), train=True
            )
        )
    return [
        {"in_shape": s, "kernel": k, "features": f, "strides": st, "pads": p, "count": n}
        for (s, k, f, st, p), n in seen.items()
    ]


def _macs(layer: dict[str, Any], batch: int) -> int:
    h, w, c = layer["in_shape"]
    (kh, kw), (sh, sw) = layer["kernel"], layer["strides"]
    (pt, pb), (pl, pr) = layer["pads"]
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    return batch * ho * wo * kh * kw * c * layer["features"]


# ----------------------------------------------------------------------------- timing


def _median_ms(fn: Callable[[], Any], warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


class JaxConv:
    """One convolution's three passes, jitted."""

    def __init__(self, layer: dict[str, Any], batch: int, seed: int, kernels: str):
        rng = np.random.default_rng(seed)
        conv_general_dilated = conv_function(kernels)
        kh, kw = layer["kernel"]
        c, o = layer["in_shape"][-1], layer["features"]
        strides, pads = layer["strides"], layer["pads"]

        def conv(x: jax.Array, w: jax.Array) -> jax.Array:
            return conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN)

        self.x = jnp.asarray(rng.standard_normal((batch, *layer["in_shape"]), np.float32))
        self.w = jnp.asarray(rng.standard_normal((kh, kw, c, o), np.float32))
        y = jax.eval_shape(conv, self.x, self.w)
        self.g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
        self.fns = {
            "fwd": jax.jit(conv),
            "dx": jax.jit(lambda x, w, g: jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0]),
            "dw": jax.jit(lambda x, w, g: jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0]),
        }

    def call(self, name: str) -> Callable[[], Any]:
        args = (self.x, self.w) if name == "fwd" else (self.x, self.w, self.g)
        return lambda: jax.block_until_ready(self.fns[name](*args))


class TorchConv:
    """The same passes in PyTorch, channels last (padding symmetric, as torch's ResNets)."""

    def __init__(self, layer: dict[str, Any], batch: int, seed: int):
        import torch

        self.torch = torch
        g = torch.Generator().manual_seed(seed)
        h, w, c = layer["in_shape"]
        kh, kw = layer["kernel"]
        o = layer["features"]
        cl = torch.channels_last
        self.stride = list(layer["strides"])
        self.padding = [kh // 2, kw // 2]
        self.x = torch.randn(batch, c, h, w, generator=g).contiguous(memory_format=cl)
        self.w = torch.randn(o, c, kh, kw, generator=g).contiguous(memory_format=cl)
        y = torch.nn.functional.conv2d(self.x, self.w, stride=self.stride, padding=self.padding)
        self.g = torch.randn(y.shape, generator=g).contiguous(memory_format=cl)

    def call(self, name: str) -> Callable[[], Any]:
        torch = self.torch
        conv2d = torch.nn.functional.conv2d
        if name == "fwd":
            return lambda: conv2d(self.x, self.w, stride=self.stride, padding=self.padding)
        mask = [name == "dx", name == "dw", False]

        def backward() -> Any:
            return torch.ops.aten.convolution_backward(
                self.g, self.x, self.w, None, self.stride, self.padding, [1, 1], False, [0, 0],
                1, mask,
            )  # fmt: skip

        return backward


# ----------------------------------------------------------------------------- the run


def profile(args: argparse.Namespace) -> dict[str, Any]:
    bench = _load_benchmark()
    name = args.model
    kwargs = {"width": args.width} if args.width is not None else {}
    model = models.get_model(name, **kwargs)
    layers = conv_shapes(model, models.input_shape(name))
    if not layers:
        raise ValueError(f"{name!r} has no convolutions to profile")
    if args.vs_torch:
        try:
            import torch
        except ImportError:
            raise ValueError("--vs_torch needs PyTorch: pip install -e '.[bench]'") from None
        torch.set_num_threads(args.torch_threads)
    rows = []
    for i, layer in enumerate(layers):
        jc = JaxConv(layer, args.batch_size, args.seed + i, args.kernels)
        tc = TorchConv(layer, args.batch_size, args.seed + i) if args.vs_torch else None
        row = {**layer, "macs": _macs(layer, args.batch_size)}
        for p in PASSES:  # alternate the frameworks pass by pass
            row[f"jax_{p}_ms"] = _median_ms(jc.call(p), args.warmup, args.reps)
            if tc is not None:
                row[f"torch_{p}_ms"] = _median_ms(tc.call(p), args.warmup, args.reps)
        rows.append(row)

    step_args = bench.parse_args(
        [
            f"--model={name}",
            f"--batch_size={args.batch_size}",
            f"--kernels={args.kernels}",
            f"--reps={args.step_reps}",
            "--steps_per_rep=1",
            f"--warmup={args.warmup}",
            f"--torch_threads={args.torch_threads}",
            f"--seed={args.seed}",
            *([f"--width={args.width}"] if args.width is not None else []),
        ]
    )
    frameworks = ["jax"] + (["torch"] if args.vs_torch else [])
    steppers = {"jax": bench.JaxBench(step_args)}
    if args.vs_torch:
        steppers["torch"] = bench.TorchBench(step_args)
    step_s: dict[str, list[float]] = {f: [] for f in frameworks}
    for _ in range(args.step_reps):
        for f in frameworks:
            step_s[f].append(steppers[f].run(1))

    out: dict[str, Any] = {
        "model": name,
        "batch_size": args.batch_size,
        "platform": jax.devices()[0].platform,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "kernels": args.kernels,
        "layers": rows,
    }
    for f in frameworks:
        totals = {p: sum(r[f"{f}_{p}_ms"] * r["count"] for r in rows) for p in PASSES}
        step_ms = 1000 * statistics.median(step_s[f])
        conv_ms = sum(totals.values())
        out[f] = {
            **{f"{p}_ms": v for p, v in totals.items()},
            "conv_ms": conv_ms,
            "step_ms": step_ms,
            "other_ms": step_ms - conv_ms,
            "conv_share": conv_ms / step_ms,
        }
    return out


def format_report(r: dict[str, Any]) -> str:
    frameworks = [f for f in ("jax", "torch") if f in r]
    head = f"{'input HxWxC':>12} {'kernel':>7} {'out':>4} {'n':>3} {'GMAC':>6}"
    for f in frameworks:
        head += "".join(f" {f + ' ' + p + ' ms':>14}" for p in PASSES)
    lines = [
        f"{r['model']}, batch {r['batch_size']}, {r['platform']}, kernels {r['kernels']}  "
        f"XLA_FLAGS={r['xla_flags']!r}"
    ]
    lines += [head]
    for row in r["layers"]:
        h, w, c = row["in_shape"]
        kh, kw = row["kernel"]
        stride = row["strides"][0]
        line = (
            f"{f'{h}x{w}x{c}':>12} {f'{kh}x{kw}/{stride}':>7} {row['features']:>4} "
            f"{row['count']:>3} {row['macs'] / 1e9:6.3f}"
        )
        for f in frameworks:
            line += "".join(f" {row[f'{f}_{p}_ms']:14.2f}" for p in PASSES)
        lines.append(line)
    for f in frameworks:
        t = r[f]
        lines.append(
            f"{f:>5}: convolutions {t['conv_ms']:.1f} ms per step (forward {t['fwd_ms']:.1f}, "
            f"input gradient {t['dx_ms']:.1f}, kernel gradient {t['dw_ms']:.1f}); whole step "
            f"{t['step_ms']:.1f} ms, so {100 * t['conv_share']:.0f}% convolutions, "
            f"{t['other_ms']:.1f} ms the rest"
        )
    if "torch" in r:
        for p in (*PASSES, "conv", "other", "step"):
            j, t = r["jax"][f"{p}_ms"], r["torch"][f"{p}_ms"]
            lines.append(f"  jax / torch time, {p:>5}: {j / t:5.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], Any] = print) -> dict:
    args = parse_args(argv)
    try:
        result = profile(args)
    except ValueError as e:
        sys.exit(f"error: {e}")
    out(json.dumps(result) if args.json else format_report(result))
    return result


if __name__ == "__main__":
    main()
