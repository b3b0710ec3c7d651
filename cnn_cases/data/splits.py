"""TFDS datasets decoded whole into host memory: :func:`load_split` and what is computed on a split.

Small image datasets (CIFAR, MNIST, ...) are decoded once per process into a read-only
:class:`Split`; `input_pipeline` batches them. ``synthetic`` datasets need no files (tests,
benchmarks).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cnn_cases.data import sources

_OFFLINE_HINT = (
    "point data_dir (the launchers' --config.data_dir=DIR) or TFDS_DATA_DIR at a folder "
    "holding a prepared copy (NAME/VERSION/dataset_info.json and its record files)"
)
_TF_HINT = "pip install 'cnn_cases[tf]' (or tensorflow) so that TFDS can prepare it"


class DatasetNotFoundError(ValueError):
    """The dataset is unknown, or not prepared in the data dir and could not be downloaded."""


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """A whole split decoded into host memory.

    ``eq=False``: comparing arrays element-wise is never what ``==`` on a split should mean.
    """

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int32 (N,)
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        labels = np.asarray(self.labels, dtype=np.int32)
        if labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {labels.shape} != ({len(self.images)},)")
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.images)


# --------------------------------------------------------------------------- loading


def _hide_accelerators_from_tf() -> None:
    # TF only prepares data here; left alone, a GPU build of TF grabs the memory JAX needs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # its start-up INFO lines say nothing here
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # TF already initialised its devices, or has no such device type


def _get_builder(name: str, data_dir: str | None, download: bool) -> tfds.core.DatasetBuilder:
    """Returns a prepared builder, or raises DatasetNotFoundError (one line).

    Reading a prepared dataset needs no TensorFlow; preparing one (TFDS's
    `download_and_prepare`) does, and writes it as ArrayRecord, the random-access format.
    """
    searched = data_dir or tfds.core.constants.DATA_DIR  # what tfds uses when data_dir is None
    try:
        # Names with no registered builder (e.g. cifar10_jpeg) resolve from files in data_dir.
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"dataset {name!r} is neither a registered TFDS dataset nor prepared in {searched}; "
            f"check the name, or {_OFFLINE_HINT}"
        ) from e
    if builder.is_prepared():
        return builder
    if not download:
        raise DatasetNotFoundError(
            f"dataset {name!r} is not prepared in {searched} (looked for {builder.data_dir}) "
            f"and download=False; {_OFFLINE_HINT}"
        )
    if importlib.util.find_spec("tensorflow") is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} is not prepared in {searched}, and TFDS needs TensorFlow to "
            f"download and prepare it, which is not installed: {_TF_HINT}; or {_OFFLINE_HINT}"
        )
    _hide_accelerators_from_tf()
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
    except Exception as e:
        reason = (str(e).splitlines() or [""])[0][:200]
        raise DatasetNotFoundError(
            f"dataset {name!r} is not prepared in {searched} and downloading it failed "
            f"({type(e).__name__}: {reason}); {_OFFLINE_HINT}"
        ) from e
    return builder


def prepared_builder(
    name: str, data_dir: str | None, download: bool = True
) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of `name` (prepared first when `download`); a one-line
    DatasetNotFoundError when it is neither prepared nor downloadable."""
    return _get_builder(name, data_dir, download)


def _supervised_features(builder: tfds.core.DatasetBuilder) -> tuple[Any, Any]:
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{builder.name}: needs supervised_keys=(image, label), got {keys}")
    return builder.info.features[keys[0]], builder.info.features[keys[1]]


@functools.cache  # = lru_cache(maxsize=None)
def _load_split_cached(name: str, split: str, data_dir: str | None, download: bool) -> Split:
    builder = _get_builder(name, data_dir, download)
    image_feature, label_feature = _supervised_features(builder)
    shape = tuple(image_feature.shape)
    if len(shape) != 3 or None in shape or image_feature.np_dtype != np.uint8:
        raise ValueError(
            f"{name}: images are {image_feature.np_dtype} {shape}, not a fixed uint8 (H, W, C); "
            "load_split needs fixed-size images (resize them into a prepared TFDS dataset first)"
        )
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:
        raise ValueError(f"{name}: label feature {label_feature} is not a ClassLabel")
    images_arr, labels_arr, _ = sources.read_supervised(
        builder, split, builder.info.supervised_keys, shape
    )
    # Shared by every caller through the cache: make accidental in-place edits fail loudly.
    images_arr.flags.writeable = False
    labels_arr.flags.writeable = False
    return Split(images=images_arr, labels=labels_arr, num_classes=int(num_classes))


def load_split(
    name: str, split: str, *, data_dir: str | None = None, download: bool = True
) -> Split:
    """Decodes a whole TFDS split into host memory, once per process.

    Args:
      name: TFDS name ('cifar10', 'mnist', 'fashion_mnist', 'cifar10_jpeg', ...); names with
        no registered builder are read from the prepared files in ``data_dir``.
      split: any TFDS split string ('train', 'test', 'train[:45000]', ...).
      data_dir: TFDS data dir; None means TFDS's default (TFDS_DATA_DIR, read when tfds is
        imported, else ~/tensorflow_datasets).
      download: whether to try ``download_and_prepare`` when the dataset is not prepared.

    Results are cached by ``(name, split, data_dir, download)``; arrays are read-only.
    ``synthetic`` (32x32x3) or ``synthetic_HxWxC`` is a small generated dataset with learnable
    labels, needing no files: for tests and benchmarks.

    Raises:
      DatasetNotFoundError: unknown name, or not prepared and not downloadable (one line).
    """
    if name == "synthetic" or name.startswith("synthetic_"):
        return _synthetic_split(name, split)
    return _load_split_cached(name, split, data_dir, download)


SYNTHETIC_SIZES = {"train": 2048, "test": 512}


@functools.cache
def _synthetic_split(name: str, split: str) -> Split:
    """Class-dependent mean images plus noise: deterministic, learnable, 10 classes."""
    if split not in SYNTHETIC_SIZES:
        raise ValueError(f"synthetic data has splits {', '.join(SYNTHETIC_SIZES)}, not {split!r}")
    shape_text = name.removeprefix("synthetic").removeprefix("_") or "32x32x3"
    try:
        h, w, c = (int(v) for v in shape_text.split("x"))
    except ValueError:
        raise DatasetNotFoundError(
            f"synthetic dataset {name!r}: expected 'synthetic' or 'synthetic_HxWxC', "
            "e.g. synthetic_28x28x1"
        ) from None
    num_classes = 10
    protos = np.random.default_rng(1234).uniform(40, 215, (num_classes, h, w, c))
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = SYNTHETIC_SIZES[split]
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    images = np.clip(protos[labels] + rng.normal(0, 40, (n, h, w, c)), 0, 255).astype(np.uint8)
    images.flags.writeable = False
    labels.flags.writeable = False
    return Split(images=images, labels=labels, num_classes=num_classes)


def clear_cache() -> None:
    """Drops every split cached by :func:`load_split`."""
    _load_split_cached.cache_clear()


@functools.lru_cache(maxsize=8)  # splits hash by identity; the cached ones are reused per run
def downsample(split: Split, factor: int) -> Split:
    """Averages `factor` x `factor` pixel blocks (32x32 -> 16x16 for factor 2): a cheaper task.

    The result is cached for the last few (split, factor) pairs: every net of a study, and
    every model a study builds, would otherwise average the same 50,000 images again.
    """
    if factor == 1:
        return split
    n, h, w, c = split.images.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"downsample factor {factor} does not divide the {h}x{w} images")
    blocks = split.images.reshape(n, h // factor, factor, w // factor, factor, c)
    images = np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
    images.flags.writeable = False
    return Split(images=images, labels=split.labels, num_classes=split.num_classes)


def per_pixel_mean(images: np.ndarray) -> np.ndarray:
    """float32 (H, W, C) mean over the split, in [0, 1] pixel units."""
    return (np.mean(images, axis=0, dtype=np.float64) / 255.0).astype(np.float32)


def image_shape(split: Split, pad_to: int | None = None) -> tuple[int, int, int]:
    """(H, W, C) of the images the pipelines yield for ``split``."""
    _, h, w, c = split.images.shape
    if pad_to is not None:
        check_pad_to(pad_to, h, w)
        return pad_to, pad_to, c
    return h, w, c


def check_pad_to(pad_to: int, h: int, w: int) -> None:
    if pad_to < max(h, w):
        raise ValueError(f"pad_to={pad_to} is smaller than the images ({h}x{w})")
