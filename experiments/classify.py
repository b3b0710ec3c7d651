"""The top-5 ImageNet classes of images, with a registry model and torchvision's weights.

    python -m experiments.classify --model=resnet50 --weights=resnet50-0676ba61.pth cat.jpg dog.png
    python -m experiments.classify --model=resnet50 --weights=resnet50.msgpack cat.jpg

`--weights`: a torchvision `.pth` / `.safetensors` (converted on the fly; needs PyTorch for
.pth) or the output of `experiments.convert_weights` (.msgpack or an Orbax directory; no
PyTorch). Each image gets torchvision's eval preprocessing for that weight: shorter side
resized (256, or what torchvision lists for the file: 232 for ResNet-50 V2; `--resize` to set),
center crop 224, ImageNet mean/std. Class ids come from TFDS's imagenet2012 label file, readable
names from torchvision where it is installed; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from absl import flags

from cnn_cases import models
from cnn_cases.interop import imagenet, pretrained
from experiments import common

_MODEL = flags.DEFINE_string("model", None, "Registry model, e.g. resnet50.", required=True)
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights file or directory.", required=True)
_RESIZE = flags.DEFINE_integer(
    "resize", None, "Shorter side before the crop (default: the weights')."
)
_TOP = flags.DEFINE_integer("top", 5, "How many classes per image.")


def classify(
    model_name: str, weights: str, images: Sequence[str], *, resize: int | None = None, top: int = 5
) -> list[list[tuple[int, float]]]:
    """(class, probability) of the `top` classes of every image."""
    if not images:
        raise ValueError("no images given: python -m experiments.classify ... IMAGE [IMAGE ...]")
    batch = np.stack(
        [imagenet.preprocess(p, resize=resize or imagenet.resize_for(weights)) for p in images]
    )  # every image read before the (slower) weights: a bad path fails fast
    variables = pretrained.load(weights, model_name)
    model = models.get_model(model_name)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, batch))
    if logits.shape[-1] != 1000:
        raise ValueError(f"{model_name} has {logits.shape[-1]} classes, not ImageNet's 1000")
    return [imagenet.top_k(row, top) for row in logits]


def main(argv: Sequence[str]) -> None:
    common.show_progress()
    images = list(argv[1:])
    for path, best in zip(
        images,
        classify(_MODEL.value, _WEIGHTS.value, images, resize=_RESIZE.value, top=_TOP.value),
        strict=True,
    ):
        print(imagenet.format_top_k(path, best))


if __name__ == "__main__":
    common.run(main)
