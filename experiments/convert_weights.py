"""PyTorch weights (torchvision's, or the CIFAR reference's) converted once into Flax variables.

    python -m experiments.convert_weights --model=resnet50 --weights=resnet50-0676ba61.pth \\
        --out=resnet50.msgpack
    python -m experiments.convert_weights --model=vgg16 --weights=vgg16.safetensors --out=vgg16_ckpt

Reads a `.pth` (`torch.load(weights_only=True)`) or `.safetensors` state_dict, checks every
tensor against the registry model (a wrong file or model is one line naming the first tensor
that does not fit) and writes `--out`: a msgpack file (name ending in .msgpack) or an Orbax
checkpoint directory. Later use (`experiments.classify`, `pretrained.load`) needs no PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from cnn_cases.analysis import costs
from cnn_cases.interop import pretrained
from experiments import common

_MODEL = flags.DEFINE_string("model", None, "Registry model, e.g. resnet50.", required=True)
_WEIGHTS = flags.DEFINE_string("weights", None, ".pth or .safetensors file.", required=True)
_OUT = flags.DEFINE_string("out", None, "FILE.msgpack or an Orbax directory.", required=True)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.show_progress()
    variables = pretrained.to_flax(_MODEL.value, pretrained.read_state_dict(_WEIGHTS.value))
    pretrained.save(variables, _OUT.value)
    count = costs.count(variables["params"])
    print(f"{_MODEL.value}: {count:,} parameters from {_WEIGHTS.value} -> {_OUT.value}")


if __name__ == "__main__":
    common.run(main)
