"""What a run reads before it trains: its data as its runs see it, and a finished run's
results and variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_cases.data import input_pipeline, splits, streaming
from cnn_cases.engine import defaults, rundir
from cnn_cases.engine.rundir import RunResult

# `pipeline="auto"` decodes a split into memory up to this many bytes of pixels.
MEMORY_PIPELINE_BYTES = 2 << 30


@dataclasses.dataclass
class Data:
    """A run's splits, its mean (None without mean subtraction) and image shape.

    In memory (`preprocess` None) the splits are decoded `splits.Split`s and the mean is
    per-pixel. Streamed, they are `streaming.Stream`s read through `preprocess`, which holds
    the mean (per pixel for cifar, per channel for imagenet, with the std).
    """

    train: splits.Split | streaming.Stream
    test: splits.Split | streaming.Stream
    mean: np.ndarray | None
    image_shape: tuple[int, int, int]
    preprocess: streaming.Preprocess | None = None

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def streamed(self) -> bool:
        return self.preprocess is not None


def pipeline(config: ml_collections.ConfigDict) -> str:
    """ "memory" or "stream": the config's `pipeline`, with "auto" resolved.

    auto streams what memory cannot hold or its pipeline cannot make: imagenet
    preprocessing, resized images, images of varying size, and splits of more than
    MEMORY_PIPELINE_BYTES pixels. Synthetic data is always in memory.
    """
    synthetic = config.dataset == "synthetic" or config.dataset.startswith("synthetic_")
    if config.pipeline == "stream" and synthetic:
        raise ValueError(
            f"dataset={config.dataset!r} is generated in memory; pipeline='stream' reads "
            "prepared TFDS datasets (valid here: auto, memory)"
        )
    if config.pipeline != "auto" or synthetic:
        return "memory" if synthetic else config.pipeline
    if config.preprocess != "cifar" or config.image_size is not None:
        return "stream"
    builder = splits.prepared_builder(config.dataset, config.data_dir, config.download)
    image = builder.info.features[builder.info.supervised_keys[0]]
    shape = tuple(image.shape)
    if None in shape:
        return "stream"
    examples = builder.info.splits[config.train_split].num_examples
    return "memory" if examples * int(np.prod(shape)) <= MEMORY_PIPELINE_BYTES else "stream"


def check_memory_config(config: ml_collections.ConfigDict) -> None:
    """What the in-memory pipeline cannot do, as a one-line ValueError."""
    if config.preprocess != "cifar" or config.image_size is not None:
        raise ValueError(
            f"pipeline='memory' takes the images as they are (preprocess='cifar', no "
            f"image_size); got preprocess={config.preprocess!r}, image_size="
            f"{config.image_size!r}: use pipeline='stream' or 'auto'"
        )


def open_stream(config: ml_collections.ConfigDict, split: str) -> streaming.Stream:
    """One split of the config's dataset, read on demand."""
    if config.downsample != 1:
        raise ValueError(
            f"downsample={config.downsample} is an in-memory operation; streamed datasets "
            "are resized with image_size"
        )
    builder = splits.prepared_builder(config.dataset, config.data_dir, config.download)
    return streaming.open_stream(builder, split)


def preprocess(
    config: ml_collections.ConfigDict, mean: np.ndarray | None = None
) -> streaming.Preprocess:
    """The streamed pipeline's preprocessing for `config`, with the cifar per-pixel `mean`."""
    std = None
    if config.preprocess == "imagenet" and config.mean_subtract:
        mean = np.asarray(streaming.IMAGENET_MEAN, np.float32)
        std = np.asarray(streaming.IMAGENET_STD, np.float32)
    return streaming.Preprocess(
        kind=config.preprocess,
        image_size=config.image_size,
        mean=mean,
        std=std,
        pad_to=config.pad_to,
        augment=config.augment,
        crop_padding=config.crop_padding,
        flip=config.flip,
        eval_resize=config.eval_resize,
        min_crop_scale=config.min_crop_scale,
    )


def _stream_data(config: ml_collections.ConfigDict, workdir: str | None) -> Data:
    train, test = (open_stream(config, s) for s in (config.train_split, config.test_split))
    pre = preprocess(config)
    mean = None
    if config.mean_subtract and config.preprocess == "cifar":
        compute = lambda: streaming.per_pixel_mean(
            train, pre, workers=config.data_workers, threads=config.data_threads
        )
        mean = compute() if workdir is None else rundir.dataset_mean(workdir, compute)
        pre = preprocess(config, mean)
    return Data(train, test, pre.mean, pre.output_shape(train.shape), pre)


def load_split(config: ml_collections.ConfigDict, split: str) -> splits.Split:
    """One split of the config's dataset as its runs see it (downsampled, cached)."""
    loaded = splits.load_split(
        config.dataset, split, data_dir=config.data_dir, download=config.download
    )
    return splits.downsample(loaded, config.downsample)


def load_data(config: ml_collections.ConfigDict, workdir: str | None = None) -> Data:
    """The config's train and test splits as its runs see them (downsampled, cached).

    With a `workdir`, the mean is the one stored with that run (computed and stored the first
    time), so a resumed run normalises as it began. Streamed (`pipeline`), the splits stay
    on disk.
    """
    if pipeline(config) == "stream":
        return _stream_data(config, workdir)
    check_memory_config(config)
    train, test = (load_split(config, s) for s in (config.train_split, config.test_split))
    mean = None
    if config.mean_subtract:
        compute = lambda: splits.per_pixel_mean(train.images)
        mean = compute() if workdir is None else rundir.dataset_mean(workdir, compute)
    return Data(train, test, mean, splits.image_shape(train, config.pad_to))


def normalised_examples(
    config: ml_collections.ConfigDict, split: str, limit: int
) -> tuple[jax.Array, jax.Array]:
    """(images, labels) of the first `limit` examples of "train" or "test", normalised and
    padded as the config's runs see them in evaluation."""
    data = load_data(config)
    examples = data.train if split == "train" else data.test
    images, labels, _ = next(eval_batches(config, data, examples, min(limit, len(examples))))
    return jnp.asarray(images), jnp.asarray(labels)


def eval_batches(
    config: ml_collections.ConfigDict,
    data: Data,
    split: splits.Split | streaming.Stream,
    batch_size: int,
    limit: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This process's rows of the in-order, padded and masked evaluation batches of
    `split` (one of `data`'s), from whichever pipeline holds it."""
    where = {"limit": limit, "process_index": process_index, "process_count": process_count}
    if data.streamed:
        return streaming.eval_batches(
            split,
            data.preprocess,
            batch_size=batch_size,
            workers=config.data_workers,
            threads=config.data_threads,
            **where,
        )
    return input_pipeline.eval_batches(
        split, batch_size=batch_size, mean=data.mean, pad_to=config.pad_to, **where
    )


def stored_results(config: ml_collections.ConfigDict, workdir: str) -> list[RunResult] | None:
    """The results of `config`'s finished run in `workdir` (None if it has not finished); a
    one-line ValueError if the workdir holds another config."""
    if not os.path.isdir(workdir):
        return None
    rundir.check_config(workdir, config, defaults.RESUMABLE_KEYS, defaults.ADDED_KEYS)
    return rundir.read_results(workdir)


def load_variables(workdir: str) -> dict[str, Any]:
    """{"params", "batch_stats"} of the latest checkpoint of a run directory."""
    state = rundir.restore_checkpoint(workdir)
    return {"params": state["params"], "batch_stats": state["batch_stats"]}
