"""How fast the input pipelines make training batches, and how fast the train step eats them.

`stream_images_per_s` times `streaming.TrainBatches` (grain) at a number of worker processes;
`cnn_cases.perf.throughput.pipeline_images_per_s` times the in-memory pipeline. For ImageNet-sized
images without ImageNet, `write_jpegs` makes a few thousand JPEGs from images on hand
(upscaled to ImageNet's usual 500x375 or 375x500, quality 90) as TFDS-serialised examples in
an ArrayRecord file, and `jpeg_stream` reads them the way TFDS's data source does.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cnn_cases.data import streaming

# ImageNet's most common sizes (width x height): about a third of its images are one of them.
IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333))
JPEG_QUALITY = 90


def _features(num_classes: int) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=num_classes),
        }
    )


def write_jpegs(
    images: np.ndarray, labels: np.ndarray, path: str, *, num_classes: int, seed: int = 0
) -> dict[str, float]:
    """Writes each uint8 (H, W, 3) image upscaled (bicubic) to one of IMAGENET_SIZES and
    encoded as JPEG (quality 90), with its label, as TFDS-serialised examples in the
    ArrayRecord file `path`. Returns the mean JPEG bytes and pixels per image."""
    from array_record.python import array_record_module
    from PIL import Image

    features = _features(num_classes)
    rng = np.random.default_rng(seed)
    tmp = f"{path}.tmp.{os.getpid()}"
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    sizes, pixels = [], []
    for image, label in zip(images, labels, strict=True):
        w, h = IMAGENET_SIZES[rng.integers(len(IMAGENET_SIZES))]
        buf = io.BytesIO()
        Image.fromarray(image).resize((w, h), Image.BICUBIC).save(buf, "JPEG", quality=JPEG_QUALITY)
        data = buf.getvalue()
        writer.write(features.serialize_example({"image": io.BytesIO(data), "label": int(label)}))
        sizes.append(len(data))
        pixels.append(w * h)
    writer.close()
    os.replace(tmp, path)
    return {"jpeg_bytes": float(np.mean(sizes)), "pixels": float(np.mean(pixels))}


class _Records:
    """Random access to the examples of an ArrayRecord file, deserialised as TFDS's data
    source does (images left encoded). Picklable, for grain's workers."""

    def __init__(self, path: str, num_classes: int) -> None:
        from array_record.python import array_record_data_source

        self._source = array_record_data_source.ArrayRecordDataSource([path])
        self._features = _features(num_classes)
        self._decoders = {"image": tfds.decode.SkipDecoding()}

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._source[index]
        return self._features.deserialize_example_np(record, decoders=self._decoders)


def jpeg_stream(path: str, num_classes: int) -> streaming.Stream:
    """The examples `write_jpegs` wrote, as a `streaming.Stream` of varying-size images."""
    return streaming.Stream(
        _Records(path, num_classes), "image", "label", num_classes, (None, None, 3), "jpegs"
    )


def stream_images_per_s(
    stream: streaming.Stream,
    pre: streaming.Preprocess,
    *,
    batch_size: int,
    batches: int,
    workers: int,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Images/s of `streaming.TrainBatches` over `batches` batches after the first (which
    includes starting the workers): the whole interval's rate, and the start-up seconds."""
    start = time.perf_counter()
    reader = streaming.TrainBatches(
        stream,
        pre,
        global_batch_size=batch_size,
        seed=seed,
        num_steps=batches + 1,
        workers=workers,
        threads=threads,
    )
    next(reader)
    first = time.perf_counter()
    for _ in range(batches):
        next(reader)
    end = time.perf_counter()
    reader.close()
    return {"images_per_s": batches * batch_size / (end - first), "startup_s": first - start}


def median_rates(runs: Sequence[dict[str, float]]) -> float:
    """The median images/s of repeated `stream_images_per_s` runs."""
    return statistics.median(r["images_per_s"] for r in runs)
