"""What a run reads before it trains: its data as its runs see it, and a finished run's
results and variables."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_cases.data import input_pipeline, splits
from cnn_cases.engine import defaults, rundir
from cnn_cases.engine.rundir import RunResult


@dataclasses.dataclass
class Data:
    """A run's splits, its per-pixel mean (None without mean subtraction) and image shape."""

    train: splits.Split
    test: splits.Split
    mean: np.ndarray | None
    image_shape: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def load_split(config: ml_collections.ConfigDict, split: str) -> splits.Split:
    """One split of the config's dataset as its runs see it (downsampled, cached)."""
    loaded = splits.load_split(
        config.dataset, split, data_dir=config.data_dir, download=config.download
    )
    return splits.downsample(loaded, config.downsample)


def load_data(config: ml_collections.ConfigDict, workdir: str | None = None) -> Data:
    """The config's train and test splits as its runs see them (downsampled, cached).

    With a `workdir`, the mean is the one stored with that run (computed and stored the first
    time), so a resumed run normalises as it began.
    """
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
    images, labels, _ = next(
        input_pipeline.eval_batches(
            examples, batch_size=min(limit, len(examples)), mean=data.mean, pad_to=config.pad_to
        )
    )
    return jnp.asarray(images), jnp.asarray(labels)


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
