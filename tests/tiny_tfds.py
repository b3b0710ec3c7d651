"""Tiny image datasets written as real TFDS datasets, for tests that read them from disk.

`write(data_dir, name, ...)` prepares `name` in `data_dir` with TFDS's own builder machinery
(TFRecord or ArrayRecord files, dataset_info.json, features.json), as `download_and_prepare`
would; the name is not registered, so TFDS finds it from the files, as it does `cifar10_jpeg`.
Writing needs TensorFlow (TFDS encodes the images with it); reading them does not.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def images(n: int, shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random uint8 images and labels 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def write(
    data_dir: str,
    name: str,
    *,
    shape: tuple[int, int, int] = (32, 32, 3),
    sizes: dict[str, int] | None = None,
    file_format: str = "tfrecord",
    encoding: str = "png",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Prepares dataset `name` (version 1.0.0) and returns what each split holds, in order."""
    sizes = sizes or {"train": 64, "test": 32}
    data = {split: images(n, shape, seed=k) for k, (split, n) in enumerate(sizes.items())}

    def info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=shape, encoding_format=encoding),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
        )
        return tfds.core.DatasetInfo(
            builder=self,
            features=features,
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # the examples stay in the order they are generated
        )

    def split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in data}

    def generate_examples(self, split):
        for i, (x, y) in enumerate(zip(*data[split], strict=True)):
            yield i, {"image": x, "label": int(y)}

    camel = "".join(part.title() for part in name.split("_"))
    builder_cls = type(
        camel,
        (tfds.core.GeneratorBasedBuilder,),
        {
            "VERSION": tfds.core.Version("1.0.0"),
            "_info": info,
            "_split_generators": split_generators,
            "_generate_examples": generate_examples,
            "__module__": __name__,
        },
        skip_registration=True,
    )
    builder = builder_cls(data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare()
    return data
