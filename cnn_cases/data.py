"""TFDS input pipelines: whole splits decoded once into host memory, deterministic batches.

Small datasets (CIFAR, MNIST, ...) are decoded once by :func:`load_split` and batched by
:class:`Pipeline`, whose ``batch(step)`` depends only on ``(seed, step)``: a resumed run sees
the same data and every process of a multi-host run computes the same global batch, keeping
only its own rows. Datasets too large for memory (ImageNet) go through :func:`streaming_pipeline`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

_OFFLINE_HINT = (
    "pass --data_dir=DIR or set TFDS_DATA_DIR to a folder holding a prepared copy "
    "(e.g. the offline ../shared/tfds)"
)


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
    # TF only reads data here; left alone, a GPU build of TF grabs the accelerator memory JAX needs.
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # TF already initialised its devices, or has no such device type


def _get_builder(name: str, data_dir: str | None, download: bool) -> tfds.core.DatasetBuilder:
    """Returns a prepared builder, or raises DatasetNotFoundError (one line)."""
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
    try:
        builder.download_and_prepare()
    except Exception as e:
        reason = (str(e).splitlines() or [""])[0][:200]
        raise DatasetNotFoundError(
            f"dataset {name!r} is not prepared in {searched} and downloading it failed "
            f"({type(e).__name__}: {reason}); {_OFFLINE_HINT}"
        ) from e
    return builder


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
            "load_split needs fixed-size images, use streaming_pipeline instead"
        )
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:
        raise ValueError(f"{name}: label feature {label_feature} is not a ClassLabel")
    _hide_accelerators_from_tf()
    # Batched loop rather than batch_size=-1: same speed, and no second full-size copy in TF.
    ds = builder.as_dataset(
        split=split,
        batch_size=1024,
        as_supervised=True,
        shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),
    ).prefetch(2)
    images, labels = [], []
    for x, y in tfds.as_numpy(ds):
        images.append(x)
        labels.append(y)
    images_arr = np.concatenate(images) if images else np.zeros((0, *shape), np.uint8)
    labels_arr = np.concatenate(labels).astype(np.int32) if labels else np.zeros(0, np.int32)
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


def downsample(split: Split, factor: int) -> Split:
    """Averages `factor` x `factor` pixel blocks (32x32 -> 16x16 for factor 2): a cheaper task."""
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
        _check_pad_to(pad_to, h, w)
        return pad_to, pad_to, c
    return h, w, c


# --------------------------------------------------------------------------- batching


def _check_pad_to(pad_to: int, h: int, w: int) -> None:
    if pad_to < max(h, w):
        raise ValueError(f"pad_to={pad_to} is smaller than the images ({h}x{w})")


def _broadcast_mean(mean: np.ndarray | None, hwc: tuple[int, int, int]) -> np.ndarray | None:
    if mean is None:
        return None
    return np.ascontiguousarray(np.broadcast_to(np.asarray(mean, np.float32), hwc))


def _normalise_padded(
    images: np.ndarray, mean: np.ndarray | None, pad: tuple[int, int, int, int]
) -> np.ndarray:
    """uint8 (b, H, W, C) -> float32 images/255 - mean, zero-padded by (top, bottom, left, right).

    Padding after mean subtraction puts zeros in normalised space, as He et al. do.
    """
    b, h, w, c = images.shape
    top, bottom, left, right = pad
    out = np.zeros((b, top + h + bottom, left + w + right, c), np.float32)
    interior = out[:, top : top + h, left : left + w]
    np.divide(images, np.float32(255), out=interior)
    if mean is not None:
        interior -= mean
    return out


def _crop_flip(
    padded: np.ndarray, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray, out_hw: tuple[int, int]
) -> np.ndarray:
    """Per-image crops ``padded[i, oy[i]:oy[i]+h, ox[i]:ox[i]+w]``, reversed along W where flip[i].

    One gather over flat pixel indices instead of a Python loop over images.
    """
    b, hp, wp, c = padded.shape
    h, w = out_hw
    rows = oy[:, None] + np.arange(h)  # (b, h)
    cols = ox[:, None] + np.arange(w)  # (b, w)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    flat = (np.arange(b)[:, None, None] * hp + rows[:, :, None]) * wp + cols[:, None, :]
    return np.take(padded.reshape(b * hp * wp, c), flat, axis=0)


def _center_pad(h: int, w: int, pad_to: int | None) -> tuple[int, int, int, int]:
    if pad_to is None:
        return 0, 0, 0, 0
    _check_pad_to(pad_to, h, w)
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    return top, pad_to - h - top, left, pad_to - w - left


def _local_rows(global_size: int, process_index: int, process_count: int) -> slice:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index={process_index} / process_count={process_count}")
    if global_size % process_count:
        raise ValueError(f"batch size {global_size} is not divisible by {process_count} processes")
    local = global_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


class Pipeline:
    """Deterministic, stateless batches: batch(step) depends only on (seed, step).

    Epochs are seeded permutations (``default_rng([seed, epoch])``) with the remainder dropped;
    batch ``step`` holds positions ``step*B .. step*B+B-1`` of the concatenated epoch stream.
    Augmentation (pad ``crop_padding`` zeros in normalised space, random crop back to the input
    size, random horizontal flip) draws from ``default_rng([seed, 1, step])`` for the whole
    global batch, so a process's rows do not depend on ``process_count``. ``pad_to`` centres the
    images on a ``pad_to`` x ``pad_to`` zero canvas first (LeNet-5's 28 -> 32).
    """

    def __init__(
        self,
        split: Split,
        *,
        global_batch_size: int,
        seed: int,
        augment: bool,
        mean: np.ndarray | None,
        pad_to: int | None = None,
        crop_padding: int = 4,
        flip: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        n, h, w, c = split.images.shape
        if not 0 < global_batch_size <= n:
            raise ValueError(f"global_batch_size={global_batch_size} must be in [1, {n}]")
        if crop_padding < 0:
            raise ValueError(f"crop_padding={crop_padding} must be >= 0")
        self._images = split.images
        self._labels = split.labels
        self._batch_size = global_batch_size
        self._rows = _local_rows(global_batch_size, process_index, process_count)
        self._seed = seed
        self._augment = augment
        self._flip = flip
        self._crop_padding = crop_padding if augment else 0
        self._mean = _broadcast_mean(mean, (h, w, c))
        self._pad = _center_pad(h, w, pad_to)
        self._out_hw = (h + self._pad[0] + self._pad[1], w + self._pad[2] + self._pad[3])
        # Consecutive steps reuse one epoch's permutation; 2 covers a prefetch thread at a boundary.
        self._permutation = functools.lru_cache(maxsize=2)(self._make_permutation)

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (the remainder is dropped)."""
        return len(self._images) // self._batch_size

    def _make_permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self._seed, epoch]).permutation(len(self._images))

    def indices(self, step: int) -> np.ndarray:
        """Example indices of the whole global batch ``step``."""
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self._batch_size
        return self._permutation(epoch)[start : start + self._batch_size]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's rows of global batch ``step``: float32 (b, H', W', C), int32 (b,)."""
        idx = self.indices(step)[self._rows]
        images = self._images[idx]
        labels = self._labels[idx]
        p = self._crop_padding
        top, bottom, left, right = self._pad
        padded = _normalise_padded(images, self._mean, (top + p, bottom + p, left + p, right + p))
        if not self._augment:
            return padded, labels
        rng = np.random.default_rng([self._seed, 1, step])
        oy = rng.integers(0, 2 * p + 1, size=self._batch_size)[self._rows]
        ox = rng.integers(0, 2 * p + 1, size=self._batch_size)[self._rows]
        flip = rng.random(self._batch_size)[self._rows] < 0.5
        if not self._flip:
            flip = np.zeros_like(flip)
        return _crop_flip(padded, oy, ox, flip, self._out_hw), labels

    def iterate(
        self,
        start_step: int,
        num_steps: int,
        *,
        prefetch: int = 2,
        put: Callable[[tuple[np.ndarray, np.ndarray]], Any] | None = None,
    ) -> Iterator[Any]:
        """Yields ``put(batch(s))`` (or ``batch(s)``) for s in start_step .. start_step+num_steps-1.

        A background thread works ``prefetch`` batches ahead, applying ``put`` (e.g. a
        device transfer) there so it overlaps compute. Its exceptions re-raise in the consumer;
        ``close()`` (or dropping the iterator) stops it.
        """
        produce = self.batch if put is None else (lambda step: put(self.batch(step)))
        return _Prefetcher(produce, range(start_step, start_step + num_steps), prefetch)


_DONE, _ITEM, _ERROR = range(3)


def _produce_into(
    produce: Callable[[int], Any], steps: range, out: queue.Queue, stop: threading.Event
) -> None:
    # Module-level (no reference to the _Prefetcher) so dropping the iterator lets GC close it.
    def put(message: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(message, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    try:
        for step in steps:
            if not put((_ITEM, produce(step))):
                return
        put((_DONE, None))
    except BaseException as e:  # anything raised, even KeyboardInterrupt, must reach the consumer
        put((_ERROR, e))


class _Prefetcher(Iterator[Any]):
    """Iterator fed by a daemon thread; see :meth:`Pipeline.iterate`."""

    def __init__(self, produce: Callable[[int], Any], steps: range, prefetch: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=_produce_into,
            args=(produce, steps, self._queue, self._stop),
            name="cnn_cases-prefetch",
            daemon=True,
        )
        self._thread.start()

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stops the producer thread and waits for it."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()


def eval_batches(
    split: Split,
    *,
    batch_size: int,
    mean: np.ndarray | None,
    pad_to: int | None = None,
    limit: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """In-order batches over the first ``limit`` examples, without augmentation.

    The last global batch is padded to ``batch_size`` (zeros, label 0) so shapes stay static;
    the float32 mask is 1 for real examples, 0 for padding. Yields this process's rows of each
    global batch: (images, labels, mask).
    """
    n, h, w, c = split.images.shape
    n = n if limit is None else min(limit, n)
    rows = _local_rows(batch_size, process_index, process_count)
    mean_hwc = _broadcast_mean(mean, (h, w, c))
    pad = _center_pad(h, w, pad_to)
    for start in range(0, n, batch_size):
        # Global positions of this process's rows; those past n are padding.
        pos = np.arange(start, start + batch_size)[rows]
        real = pos < n
        idx = np.where(real, pos, 0)
        images = _normalise_padded(split.images[idx], mean_hwc, pad)
        images[~real] = 0.0
        labels = np.where(real, split.labels[idx], 0).astype(np.int32)
        yield images, labels, real.astype(np.float32)


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """How many batches :func:`eval_batches` yields for ``num_examples`` examples."""
    return math.ceil(num_examples / batch_size)


# --------------------------------------------------------------------------- streaming

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def streaming_pipeline(
    name: str,
    split: str,
    *,
    data_dir: str | None,
    global_batch_size: int,
    image_size: int,
    seed: int,
    train: bool,
    download: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    shuffle_buffer: int = 16_384,
) -> Iterator[tuple[np.ndarray, ...]]:
    """tf.data pipeline for image datasets too large for memory (e.g. imagenet2012).

    Each process reads only its shard (``tfds.split_for_jax_process``) and yields local
    batches of ``global_batch_size // process_count`` float32 (image_size, image_size, 3)
    images normalised with the ImageNet mean/std.

    train=True: endless, shuffled; Inception-style random-resized crop (area 8-100 %, aspect
    3/4-4/3) and horizontal flip; yields (images, labels). Seeded, but not resumable step by
    step like :class:`Pipeline`.
    train=False: one pass in order; center crop of ``image_size/(image_size+32)`` of the
    shorter side; last batch padded with mask 0; yields (images, labels, mask).
    JPEG images are decoded only inside the crop window (``decode_and_crop_jpeg``).
    """
    import tensorflow as tf

    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    local_batch = global_batch_size // process_count
    if local_batch * process_count != global_batch_size:
        raise ValueError(f"batch {global_batch_size} not divisible by {process_count} processes")
    _hide_accelerators_from_tf()
    builder = _get_builder(name, data_dir, download)
    image_key, label_key = builder.info.supervised_keys
    jpeg = getattr(builder.info.features[image_key], "encoding_format", None) == "jpeg"
    host_split = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count, drop_remainder=train
    )
    ds = builder.as_dataset(
        split=host_split,
        shuffle_files=train,
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )

    def decode_crop(encoded: tf.Tensor, crop: Callable) -> tf.Tensor:
        if jpeg:
            oh, ow, h, w = crop(tf.image.extract_jpeg_shape(encoded))
            return tf.image.decode_and_crop_jpeg(encoded, tf.stack([oh, ow, h, w]), channels=3)
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        oh, ow, h, w = crop(tf.shape(image))
        return image[oh : oh + h, ow : ow + w]

    def random_crop(shape: tf.Tensor, key: tf.Tensor) -> tuple[tf.Tensor, ...]:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            seed=key,
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return begin[0], begin[1], size[0], size[1]

    def center_crop(shape: tf.Tensor) -> tuple[tf.Tensor, ...]:
        h, w = shape[0], shape[1]
        side = tf.cast(
            image_size / (image_size + 32) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32
        )
        return (h - side + 1) // 2, (w - side + 1) // 2, side, side

    mean = tf.constant(IMAGENET_MEAN_RGB, tf.float32) * 255
    std = tf.constant(IMAGENET_STDDEV_RGB, tf.float32) * 255

    def finish(image: tf.Tensor) -> tf.Tensor:
        image = tf.image.resize(image, [image_size, image_size], method="bicubic")
        return (image - mean) / std

    def preprocess_train(index: tf.Tensor, example: dict) -> tuple[tf.Tensor, tf.Tensor]:
        # Per-example stateless keys: (seed, global element id) makes the draws reproducible.
        key = tf.stack([tf.constant(seed, tf.int64), index * process_count + process_index])
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        image = decode_crop(example[image_key], lambda s: random_crop(s, crop_key))
        image = tf.image.stateless_random_flip_left_right(finish(image), flip_key)
        return image, tf.cast(example[label_key], tf.int32)

    def preprocess_eval(example: dict) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image = finish(decode_crop(example[image_key], center_crop))
        return image, tf.cast(example[label_key], tf.int32), tf.constant(1.0)

    if train:
        # Shuffle encoded bytes (cheap to buffer) before repeat, so epochs stay whole.
        ds = ds.shuffle(shuffle_buffer, seed=seed + process_index).repeat().enumerate()
        ds = ds.map(lambda i, ex: preprocess_train(i, ex), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(local_batch, drop_remainder=True)
    else:
        ds = ds.map(preprocess_eval, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(local_batch)
        # Pad the last batch to full size so shapes stay static; padded rows get mask 0.
        ds = ds.map(
            lambda x, y, m: tuple(
                tf.pad(t, [[0, local_batch - tf.shape(t)[0]]] + [[0, 0]] * (t.shape.rank - 1))
                for t in (x, y, m)
            )
        )
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))
