"""ImageNet inference as torchvision evaluates its weights: preprocessing, class names, top-k.

torchvision's eval transform for its ImageNet weights: resize the shorter side to `resize`
(bilinear, antialiased: PIL's resize), center-crop `crop` x `crop`, scale to [0, 1], subtract
the ImageNet mean and divide by its standard deviation (per RGB channel). `resize` is 256 for
the original weights (IMAGENET1K_V1) and differs for some newer ones (ResNet-50 V2: 232);
`resize_for(weights_file)` reads it from torchvision's weight tables when torchvision is
installed.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence

import numpy as np

MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)
DEFAULT_RESIZE = 256
CROP = 224


def preprocess(path: str, *, resize: int = DEFAULT_RESIZE, crop: int = CROP) -> np.ndarray:
    """float32 (crop, crop, 3) of image file `path`; one-line ValueError if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ValueError(f"image {path!r} does not exist")
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path!r} is not an image PIL can read ({e})") from None
    w, h = image.size
    if w <= h:  # torchvision: the shorter side becomes `resize`, the longer int(resize * l / s)
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    image = image.resize(size, Image.BILINEAR)
    w, h = image.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)
    image = image.crop((left, top, left + crop, top + crop))
    x = np.asarray(image, np.float32) / 255.0
    return (x - np.asarray(MEAN_RGB, np.float32)) / np.asarray(STDDEV_RGB, np.float32)


@functools.cache
def synsets() -> tuple[str, ...]:
    """The 1,000 WordNet ids in class order (TFDS's imagenet2012 label file; no download)."""
    import tensorflow_datasets as tfds

    return tuple(tfds.builder("imagenet2012").info.features["label"].names)


@functools.cache
def _torchvision_weights() -> list:
    """Every ImageNet-1k weight entry torchvision lists; [] without torchvision (said once)."""
    try:
        from cnn_cases.interop.pytorch import import_torchvision

        tv = import_torchvision()
    except (ValueError, ImportError) as e:
        warnings.warn(
            f"cnn_cases: without torchvision ({e}), classes are named by their WordNet ids "
            f"and images are resized to {DEFAULT_RESIZE} for every weight file",
            stacklevel=2,
        )
        return []
    out = []
    for name in tv.models.list_models(module=tv.models):
        try:
            enum = tv.models.get_model_weights(name)
        except ValueError:
            continue
        out += [w for w in enum if w.meta.get("categories") and len(w.meta["categories"]) == 1000]
    return out


@functools.cache
def names() -> tuple[str, ...]:
    """Class names: torchvision's readable ones where it is installed, else the synsets."""
    weights = _torchvision_weights()
    return tuple(weights[0].meta["categories"]) if weights else synsets()


def resize_for(weights_file: str) -> int:
    """torchvision's eval resize for the weight file of that name (its URL's last part); 256
    when torchvision is missing or does not list the file."""
    base = os.path.basename(weights_file)
    for w in _torchvision_weights():
        if os.path.basename(w.url) == base:
            return int(w.transforms.keywords.get("resize_size", DEFAULT_RESIZE))
    return DEFAULT_RESIZE


def top_k(logits: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """(class index, probability) of the `k` most likely classes of one image's logits."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    best = np.argsort(-p)[:k]
    return [(int(i), float(p[i])) for i in best]


def format_top_k(path: str, top: Sequence[tuple[int, float]]) -> str:
    """One block per image: the file, then rank, probability, synset and name."""
    from cnn_cases.report import tables

    rows = [(r + 1, f"{100 * p:.2f}%", synsets()[i], names()[i]) for r, (i, p) in enumerate(top)]
    return f"{path}\n" + tables.format_table(("", "prob", "synset", "class"), rows, align=">><<")
