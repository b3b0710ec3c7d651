"""PyTorch weights in: a torchvision `state_dict` as the Flax variables of a registry model.

    state = pretrained.read_state_dict("resnet50-0676ba61.pth")   # or a .safetensors file
    variables = pretrained.to_flax("resnet50", state)
    logits = models.get_model("resnet50").apply(variables, images)   # images NHWC

Models and the PyTorch models whose `state_dict` they take:

    alexnet_torchvision                 torchvision.models.alexnet
    vgg11 ... vgg19, vgg11_bn ... vgg19_bn   torchvision.models.vgg*
    resnet18 ... resnet152              torchvision.models.resnet*
    resnetD, plainD (CIFAR)             cnn_cases.interop.pytorch (the same names as Flax)

Layouts: conv weights (O, I, H, W) become kernels (H, W, I, O); linear weights (out, in) become
(in, out), the first classifier layer of AlexNet/VGG with its inputs reordered from PyTorch's
(C, H, W) flattening to Flax's (H, W, C); BatchNorm weight/bias/running_mean/running_var become
scale/bias/mean/var (`num_batches_tracked` is not used). `save` writes the variables once
(msgpack file or Orbax checkpoint directory), so later use needs no PyTorch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from cnn_cases import models
from cnn_cases.analysis import costs

TORCHVISION = {
    "alexnet_torchvision": "alexnet",
    **{f"vgg{d}{bn}": f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"resnet{d}": f"resnet{d}" for d in (18, 34, 50, 101, 152)},
}
_CIFAR = re.compile(r"(resnet|plain)\d+$")
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# AlexNet's and VGG's last feature map, flattened into the first classifier layer: (C, H, W).
_FLATTENED = {"alexnet": (256, 6, 6), "vgg": (512, 7, 7)}


def supported(name: str) -> bool:
    return name in TORCHVISION or bool(_CIFAR.match(name))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a `.pth` (`torch.load(weights_only=True)`) or `.safetensors` file, as numpy.

    Raises a one-line ValueError for a missing file or one that is not a state_dict.
    """
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return dict(load_file(path))
        from cnn_cases.interop.pytorch import import_torch

        torch = import_torch()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError:
        raise
    except Exception as e:  # torch and safetensors raise many kinds on a bad file
        raise ValueError(
            f"{path!r} is not a readable .pth or .safetensors state_dict "
            f"({type(e).__name__} while reading it)"
        ) from None
    if not isinstance(state, Mapping) or not all(hasattr(v, "numpy") for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state_dict (a mapping of names to tensors)")
    return {k: v.detach().cpu().float().numpy() for k, v in state.items()}


def _torchvision_key(name: str, path: tuple[str, ...]) -> str:
    """The torchvision state_dict key of Flax variable `path` (collection dropped)."""
    *modules, leaf = path
    module = "/".join(modules)
    suffix = _BN.get(leaf, "weight") if leaf != "kernel" else "weight"
    if name.startswith("resnet"):
        m = re.fullmatch(r"stage(\d+)_block(\d+)/(\w+)", module)
        if m:
            stage, block, layer = m.group(1), int(m.group(2)) - 1, m.group(3)
            layer = {"conv_proj": "downsample.0", "bn_proj": "downsample.1"}.get(layer, layer)
            return f"layer{stage}.{block}.{layer}.{suffix}"
        return {"conv_init": "conv1", "bn_init": "bn1", "head": "fc"}[module] + f".{suffix}"
    classifier = {"fc6": 0, "fc7": 3, "fc8": 6} if name.startswith("vgg") else None
    if name.startswith("alexnet"):
        features = {f"conv{i + 1}": idx for i, idx in enumerate((0, 3, 6, 8, 10))}
        classifier = {"fc6": 1, "fc7": 4, "fc8": 6}
    else:
        features = _vgg_feature_indices(name)
    if module in classifier:
        return f"classifier.{classifier[module]}.{suffix}"
    return f"features.{features[module]}.{suffix}"


def _vgg_feature_indices(name: str) -> dict[str, int]:
    """torchvision's `features` index of every conv and BN: conv, [BN], ReLU per layer; a pool
    after each stage."""
    stages = models.vgg.STAGES[int(re.match(r"vgg(\d+)", name).group(1))]
    batch_norm, out, idx = name.endswith("_bn"), {}, 0
    for i, size in enumerate(stages):
        for j in range(size):
            out[f"conv{i + 1}_{j + 1}"] = idx
            if batch_norm:
                out[f"bn{i + 1}_{j + 1}"] = idx + 1
            idx += 3 if batch_norm else 2
        idx += 1
    return out


def _to_torch_layout(name: str, path: tuple[str, ...], shape: tuple[int, ...]) -> Any:
    """(torch shape, function from the torch array to the Flax one) for variable `path`."""
    if path[-1] == "kernel" and len(shape) == 4:  # conv: (H, W, I, O) <- (O, I, H, W)
        h, w, i, o = shape
        return (o, i, h, w), lambda t: t.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and path[-2] == "fc6":  # first classifier layer after flatten
        c, h, w = _FLATTENED["alexnet" if name.startswith("alexnet") else "vgg"]
        out = shape[1]
        return (
            out,
            c * h * w,
        ), lambda t: t.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)
    if path[-1] == "kernel":  # dense: (in, out) <- (out, in)
        return shape[::-1], lambda t: t.T
    return shape, lambda t: t


def to_flax(name: str, state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Flax variables ({"params", "batch_stats"}) of registry model `name` from `state_dict`.

    Every variable must find its tensor with the right shape, and every tensor a variable;
    otherwise a one-line ValueError names the first that does not fit.
    """
    if not supported(name):
        valid = ", ".join([*TORCHVISION, "resnetD", "plainD"])
        raise ValueError(f"no PyTorch counterpart for model {name!r} (valid: {valid})")
    shapes = costs.init_shapes(models.get_model(name), models.input_shape(name), train=False)
    source = "torchvision " + TORCHVISION[name] if name in TORCHVISION else "the PyTorch reference"
    needed = {}  # torch key -> (Flax path, torch shape, layout conversion); params first
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    for path, leaf in sorted(leaves, key=lambda pl: str(pl[0][0].key) != "params"):
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        if name in TORCHVISION:
            key = _torchvision_key(name, keys[1:])
        else:  # the reference mirrors the Flax names
            suffix = "weight" if keys[-1] == "kernel" else _BN.get(keys[-1], keys[-1])
            key = ".".join((*keys[1:-1], suffix))
        needed[key] = (keys, *_to_torch_layout(name, keys, tuple(leaf.shape)))
    flat = {}
    for key, tensor in state_dict.items():  # in the file's order: the first misfit is named
        if key.endswith("num_batches_tracked"):
            continue
        if key not in needed:
            raise ValueError(f"tensor {key!r} has no place in {name}; are they {source}'s?")
        keys, torch_shape, convert = needed[key]
        if tuple(np.shape(tensor)) != torch_shape:
            raise ValueError(
                f"tensor {key!r} has shape {tuple(np.shape(tensor))}, {name} needs "
                f"{torch_shape} ({'/'.join(keys)}); are the weights {source}'s?"
            )
        flat[keys] = jnp.asarray(convert(np.asarray(tensor)).astype(np.float32))
    for key, (keys, _, _) in needed.items():
        if keys not in flat:
            raise ValueError(
                f"the weights have no tensor {key!r} ({'/'.join(keys)} of {name}); "
                f"are they {source}'s?"
            )
    return flax.traverse_util.unflatten_dict(flat)


def save(variables: Mapping[str, Any], out: str) -> None:
    """`out` ending in .msgpack: one msgpack file; otherwise an Orbax checkpoint directory."""
    if out.endswith(".msgpack"):
        with open(out, "wb") as f:
            f.write(flax.serialization.msgpack_serialize(jax.device_get(dict(variables))))
        return
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.abspath(out), dict(variables), force=True)


def load(path: str, name: str) -> dict[str, Any]:
    """Variables of model `name` from a converted file (.msgpack / Orbax directory) or straight
    from PyTorch weights (.pth / .safetensors)."""
    if path.endswith((".pth", ".pt", ".safetensors")):
        return to_flax(name, read_state_dict(path))
    if os.path.isdir(path):
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckpt:
            variables = ckpt.restore(os.path.abspath(path))
    elif os.path.isfile(path):
        with open(path, "rb") as f:
            try:
                variables = flax.serialization.msgpack_restore(f.read())
            except Exception as e:
                raise ValueError(f"{path!r} is not a msgpack file of variables ({e})") from None
    else:
        raise ValueError(f"weights {path!r} do not exist")
    _check_tree(name, variables, path)
    return variables


def _check_tree(name: str, variables: Mapping[str, Any], path: str) -> None:
    """A converted file must hold exactly `name`'s variables, shape for shape."""
    want = flax.traverse_util.flatten_dict(
        costs.init_shapes(models.get_model(name), models.input_shape(name), train=False)
    )
    have = flax.traverse_util.flatten_dict(dict(variables))
    for key, leaf in want.items():
        if key not in have or tuple(np.shape(have[key])) != tuple(leaf.shape):
            got = "missing" if key not in have else f"shape {tuple(np.shape(have[key]))}"
            raise ValueError(
                f"{path!r} does not fit {name}: {'/'.join(key)} is {got}, needs {tuple(leaf.shape)}"
            )
    extra = [k for k in have if k not in want]
    if extra:
        raise ValueError(f"{path!r} does not fit {name}: {'/'.join(extra[0])} has no place")
