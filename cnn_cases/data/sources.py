"""The examples of a prepared TFDS split, read without TensorFlow.

TFDS prepares a dataset as ArrayRecord (random access), as TFRecord (sequential), or as
both (`alternativeFileFormats` in its dataset_info.json). ArrayRecord is read through TFDS's
own data source (`as_data_source`), TFRecord through grain's TFRecord reader
(`grain.experimental.TFRecordIterDataset`, which can also save and restore its position);
TFDS's NumPy parser deserialises the records either way. Pillow decodes every image, so a
JPEG dataset gives the same pixels wherever the project runs: TensorFlow's and OpenCV's JPEG
decoders each give pixels up to a few levels away from Pillow's and from each other.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

# Pillow modes of uint8 images with 1, 3 and 4 channels.
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_CHUNK = 1024  # records read per call of a random-access source


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """uint8 (H, W, channels) pixels of an encoded image (PNG, JPEG, ...), by Pillow.

    Images stored with other channels (a grayscale or CMYK JPEG in an RGB dataset) are
    converted, as TensorFlow's `decode_image(channels=...)` does.
    """
    from PIL import Image

    if channels not in _MODES:
        raise ValueError(f"images with {channels} channels are not supported (valid: 1, 3, 4)")
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != _MODES[channels]:
            image = image.convert(_MODES[channels])
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(*pixels.shape[:2], channels)


def random_access_source(
    builder: tfds.core.DatasetBuilder, split: str, decoders: Any = None
) -> Sequence[dict[str, Any]] | None:
    """TFDS's random-access data source of `split`, or None if it is prepared as TFRecord only."""
    try:
        return builder.as_data_source(split=split, decoders=decoders)
    except NotImplementedError:
        pass
    # A builder defined in TFDS's code knows only its code's file format; the prepared
    # files' dataset_info.json also lists the formats they were converted to.
    try:
        on_disk = tfds.builder_from_directory(os.fspath(builder.data_dir))
        return on_disk.as_data_source(split=split, decoders=decoders)
    except (NotImplementedError, FileNotFoundError):
        return None


def tfrecord_examples(
    builder: tfds.core.DatasetBuilder, split: str, decoders: Any = None
) -> Iterator[dict[str, Any]]:
    """The examples of `split` (slices such as 'train[:45000]' included), in TFDS's order,
    read from its TFRecord files with grain."""
    import grain

    features = builder.info.features
    for instruction in builder.info.splits[split].file_instructions:
        records = iter(grain.experimental.TFRecordIterDataset(os.fspath(instruction.filename)))
        for _ in range(instruction.skip):
            next(records)
        take = instruction.take if instruction.take >= 0 else None
        for k, record in enumerate(records):
            if take is not None and k >= take:
                break
            yield features.deserialize_example_np(record, decoders=decoders)


def read_supervised(
    builder: tfds.core.DatasetBuilder,
    split: str,
    keys: tuple[str, str],
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray, str]:
    """Every (image, label) of `split`: uint8 (N, *shape) images, int32 (N,) labels, and the
    file format they were read from ('array_record' or 'tfrecord')."""
    image_key, label_key = keys
    decoders = {image_key: tfds.decode.SkipDecoding()}  # bytes: Pillow decodes them here
    source = random_access_source(builder, split, decoders)
    if source is not None:
        fmt = "array_record"
        examples: Iterator[dict[str, Any]] = (
            ex
            for lo in range(0, len(source), _CHUNK)
            for ex in source.__getitems__(list(range(lo, min(len(source), lo + _CHUNK))))
        )
    else:
        fmt = "tfrecord"
        examples = tfrecord_examples(builder, split, decoders)
    images, labels = [], []
    for ex in examples:
        images.append(decode_image(ex[image_key], shape[-1]))
        labels.append(ex[label_key])
    if any(im.shape != shape for im in images):
        bad = next(im.shape for im in images if im.shape != shape)
        raise ValueError(f"{builder.name}: an image is {bad}, the dataset declares {shape}")
    images_arr = np.stack(images) if images else np.zeros((0, *shape), np.uint8)
    return images_arr, np.asarray(labels, dtype=np.int32).reshape(-1), fmt
