"""Batches read on demand from a TFDS data source: datasets of any size, through grain.

A :class:`Stream` is a split that stays on disk: TFDS's random-access (ArrayRecord) data
source, its records deserialised by TFDS and their images decoded by Pillow only when a batch
needs them. grain runs that work, with the augmentation, in threads or worker processes
(`workers`), and saves where its iterator stands.

Batches follow the in-memory pipeline's rule (`input_pipeline.Pipeline`): global batch `s`
holds positions ``s*B .. s*B+B-1`` of the stream of seeded epoch permutations
(``default_rng([seed, epoch])``, remainder dropped), and each process reads only its own
rows. With the CIFAR preprocessing (``preprocess="cifar"``: zero-padded random crops and
flips, per-pixel mean) every example's crop and flip come from the same draws as the
in-memory pipeline's, so a stream yields the same batches as the decoded split, bit for bit.
``preprocess="imagenet"`` is torchvision's reference: random-resized crop (scale 8-100 %,
aspect 3/4-4/3) and flip for training; shorter side resized to `eval_resize`, then a centre
crop, for evaluation; channel mean and std normalisation.

A training iterator's state (:meth:`TrainBatches.state`) is grain's own, per process; the
engine saves it in every checkpoint, and an iterator opened with it resumes at the next batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cnn_cases.data import input_pipeline, sources

# torchvision's (and most ImageNet models') channel statistics, in [0, 1] pixel units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS = ("cifar", "imagenet")

_CONVERT_HINT = (
    "convert it once: python -m scripts.convert_array_record --dataset_dir={dir} "
    "(TensorFlow is not needed)"
)


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """A split read on demand: a random-access source of TFDS examples whose images are
    still encoded. `shape` is the declared (H, W, C), with None for sizes that vary."""

    source: Sequence[dict[str, Any]]
    image_key: str
    label_key: str
    num_classes: int
    shape: tuple[int | None, int | None, int]
    name: str

    def __len__(self) -> int:
        return len(self.source)

    @property
    def channels(self) -> int:
        return self.shape[-1]

    def example(self, index: int) -> tuple[np.ndarray, int]:
        """uint8 (H, W, C) pixels and the label of example `index`."""
        ex = self.source[int(index)]
        return sources.decode_image(ex[self.image_key], self.channels), int(ex[self.label_key])


def open_stream(builder: tfds.core.DatasetBuilder, split: str) -> Stream:
    """`split` of a prepared dataset as a :class:`Stream`; one-line ValueError when the
    dataset is not prepared for random access (TFRecord only) or not an image dataset."""
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{builder.name}: needs supervised_keys=(image, label), got {keys}")
    image_feature, label_feature = (builder.info.features[k] for k in keys)
    shape = tuple(image_feature.shape)
    if len(shape) != 3 or shape[-1] not in (1, 3, 4) or image_feature.np_dtype != np.uint8:
        raise ValueError(f"{builder.name}: images are {image_feature.np_dtype} {shape}, not uint8")
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:
        raise ValueError(f"{builder.name}: label feature {label_feature} is not a ClassLabel")
    decoders = {keys[0]: tfds.decode.SkipDecoding()}
    source = sources.random_access_source(builder, split, decoders)
    if source is None:
        hint = _CONVERT_HINT.format(dir=os.fspath(builder.data_dir))
        raise ValueError(
            f"{builder.name}: split {split!r} is prepared as TFRecord only, and streaming "
            f"reads by random access (ArrayRecord); {hint}"
        )
    return Stream(source, keys[0], keys[1], int(num_classes), shape, builder.name)


# --------------------------------------------------------------------------- one example


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How an example becomes a float32 image. Pickled into grain's worker processes.

    cifar: resized to `image_size` first if given (datasets of varying sizes), centred on a
    `pad_to` canvas, ``/255 - mean`` (per-pixel mean or None); training pads `crop_padding`
    zeros and crops back, with flips. imagenet: see the module docstring.
    """

    kind: str = "cifar"
    image_size: int | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    pad_to: int | None = None
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    eval_resize: int | None = None
    min_crop_scale: float = 0.08

    def __post_init__(self) -> None:
        if self.kind not in PREPROCESS:
            raise ValueError(f"preprocess={self.kind!r} (valid: {', '.join(PREPROCESS)})")
        if self.kind == "imagenet" and not self.image_size:
            raise ValueError("preprocess='imagenet' needs image_size (e.g. 224)")

    def output_shape(self, shape: tuple[int | None, int | None, int]) -> tuple[int, int, int]:
        """(H, W, C) of the images made from a split whose images are `shape`."""
        h, w, c = shape
        if self.image_size:
            h = w = self.image_size
        if h is None or w is None:
            raise ValueError(
                "the images vary in size: set image_size (--config.image_size=N) to resize them"
            )
        if self.kind == "cifar" and self.pad_to is not None:
            if self.pad_to < max(h, w):
                raise ValueError(f"pad_to={self.pad_to} is smaller than the images ({h}x{w})")
            h = w = self.pad_to
        return h, w, c

    def _resized(self, pixels: np.ndarray) -> np.ndarray:
        s = self.image_size
        if s is None or pixels.shape[:2] == (s, s):
            return pixels
        return _resize(pixels, (s, s))

    def _normalised(self, pixels: np.ndarray, pad: int) -> np.ndarray:
        """cifar: float32 pixels/255 - mean, centred on the pad_to canvas, `pad` zeros around
        (as the in-memory pipeline's `_normalise_padded`, one image)."""
        h, w, c = pixels.shape
        top = left = bottom = right = 0
        if self.pad_to is not None:
            top, left = (self.pad_to - h) // 2, (self.pad_to - w) // 2
            bottom, right = self.pad_to - h - top, self.pad_to - w - left
        out = np.zeros((top + bottom + h + 2 * pad, left + right + w + 2 * pad, c), np.float32)
        interior = out[top + pad : top + pad + h, left + pad : left + pad + w]
        np.divide(pixels, np.float32(255), out=interior)
        if self.mean is not None:
            interior -= self.mean
        return out

    def _standardised(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32) / np.float32(255)
        if self.mean is not None:
            x -= self.mean
        if self.std is not None:
            x /= self.std
        return x

    def train_image(
        self,
        pixels: np.ndarray,
        draws: Callable[[], tuple[int, int, bool]],
        rng: Callable[[], np.random.Generator],
    ) -> np.ndarray:
        """A training image. `draws()` gives the cifar crop offsets and flip, `rng()` the
        imagenet crop's generator; each is called only by the preprocessing that uses it."""
        if self.kind == "imagenet":
            return self._standardised(_random_resized_crop(pixels, self, rng()))
        pixels = self._resized(pixels)
        if not self.augment:
            return self._normalised(pixels, 0)
        p = self.crop_padding
        padded = self._normalised(pixels, p)
        oy, ox, flip = draws()
        h, w = padded.shape[0] - 2 * p, padded.shape[1] - 2 * p
        crop = padded[oy : oy + h, ox : ox + w]
        return np.ascontiguousarray(crop[:, ::-1] if flip and self.flip else crop)

    def eval_image(self, pixels: np.ndarray) -> np.ndarray:
        if self.kind == "imagenet":
            resize = self.eval_resize or round(self.image_size / 0.875)
            return self._standardised(
                _center_crop(_resize_shorter(pixels, resize), self.image_size)
            )
        return self._normalised(self._resized(pixels), 0)


def _pillow(pixels: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def _from_pillow(image: Any, channels: int) -> np.ndarray:
    out = np.asarray(image, dtype=np.uint8)
    return out.reshape(*out.shape[:2], channels)


def _resize(
    pixels: np.ndarray, hw: tuple[int, int], box: tuple[int, ...] | None = None
) -> np.ndarray:
    """Bilinear (antialiased when shrinking, as torchvision's Pillow path) resize to (h, w)
    of the whole image or of `box` = (left, top, right, bottom)."""
    from PIL import Image

    image = _pillow(pixels).resize((hw[1], hw[0]), Image.BILINEAR, box=box)
    return _from_pillow(image, pixels.shape[-1])


def _resize_shorter(pixels: np.ndarray, size: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if min(h, w) == size:
        return pixels
    if h <= w:
        return _resize(pixels, (size, max(1, int(size * w / h))))
    return _resize(pixels, (max(1, int(size * h / w)), size))


def _center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if h < size or w < size:  # as torchvision: pad with zeros, then crop
        ph, pw = max(0, size - h), max(0, size - w)
        pixels = np.pad(pixels, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = pixels.shape[:2]
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return pixels[top : top + size, left : left + size]


def _random_resized_crop(
    pixels: np.ndarray, pre: Preprocess, rng: np.random.Generator
) -> np.ndarray:
    """torchvision's RandomResizedCrop (10 tries, then the centre crop of the clamped aspect)
    and a random horizontal flip, resized to image_size."""
    h, w = pixels.shape[:2]
    area = h * w
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    box = None
    for _ in range(10):
        target = area * rng.uniform(pre.min_crop_scale, 1.0)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw = round(math.sqrt(target * ratio))
        ch = round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            box = (left, top, left + cw, top + ch)
            break
    if box is None:
        ratio = w / h
        if ratio < 3 / 4:
            cw, ch = w, round(w / (3 / 4))
        elif ratio > 4 / 3:
            ch, cw = h, round(h * (4 / 3))
        else:
            cw, ch = w, h
        cw, ch = min(cw, w), min(ch, h)
        top, left = (h - ch) // 2, (w - cw) // 2
        box = (left, top, left + cw, top + ch)
    out = _resize(pixels, (pre.image_size, pre.image_size), box=box)
    if pre.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- elements


def _local_rows(global_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    """(first row, rows) of this process in a global batch, as the in-memory pipeline's."""
    rows = input_pipeline.local_rows(global_size, process_index, process_count)
    return rows.start, rows.stop - rows.start


class _TrainElement:
    """Local element j -> (image, label): row r of this process's part of global batch s.

    Picklable (grain sends it to its workers); each worker caches the epoch permutations and
    the per-step draws it is using.
    """

    def __init__(
        self,
        stream: Stream,
        pre: Preprocess,
        global_batch: int,
        first_row: int,
        rows: int,
        seed: int,
    ) -> None:
        self.stream, self.pre, self.seed = stream, pre, seed
        self.global_batch, self.first_row, self.rows = global_batch, first_row, rows
        self.epoch_length = (len(stream) // global_batch) * global_batch

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}

    @functools.cached_property
    def _cache_permutation(self) -> Callable[[int], np.ndarray]:
        return functools.lru_cache(maxsize=2)(
            lambda epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.stream))
        )

    @functools.cached_property
    def _cache_draws(self) -> Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        def draws(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # The in-memory pipeline's draws for the whole global batch, in its order.
            rng = np.random.default_rng([self.seed, 1, step])
            b, p = self.global_batch, self.pre.crop_padding
            oy = rng.integers(0, 2 * p + 1, size=b)
            ox = rng.integers(0, 2 * p + 1, size=b)
            return oy, ox, rng.random(b) < 0.5

        return functools.lru_cache(maxsize=4)(draws)

    def index(self, j: int) -> tuple[int, int, int]:
        """(step, row in the global batch, example index) of local element j."""
        step, r = divmod(j, self.rows)
        row = self.first_row + r
        epoch, pos = divmod(step * self.global_batch + row, self.epoch_length)
        return step, row, int(self._cache_permutation(epoch)[pos])

    def __call__(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        step, row, idx = self.index(j)
        pixels, label = self.stream.example(idx)

        def draws() -> tuple[int, int, bool]:
            oy, ox, flip = self._cache_draws(step)
            return int(oy[row]), int(ox[row]), bool(flip[row])

        rng = lambda: np.random.default_rng([self.seed, 1, step * self.global_batch + row])
        return self.pre.train_image(pixels, draws, rng), np.int32(label)


class _EvalElement:
    """Position i of the padded evaluation stream -> (image, label, mask)."""

    def __init__(
        self,
        stream: Stream,
        pre: Preprocess,
        n: int,
        global_batch: int,
        first_row: int,
        rows: int,
        shape: tuple[int, int, int],
        raw: bool = False,
    ) -> None:
        self.stream, self.pre, self.n, self.shape = stream, pre, n, shape
        self.global_batch, self.first_row, self.rows = global_batch, first_row, rows
        self.raw = raw  # uint8 pixels as sized for the model, not normalised

    def __call__(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, r = divmod(j, self.rows)
        pos = b * self.global_batch + self.first_row + r
        if pos >= self.n:
            dtype = np.uint8 if self.raw else np.float32
            return np.zeros(self.shape, dtype), np.int32(0), np.float32(0)
        pixels, label = self.stream.example(pos)
        image = self.pre._resized(pixels) if self.raw else self.pre.eval_image(pixels)
        return image, np.int32(label), np.float32(1)


def _stack(items: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack(column) for column in zip(*items, strict=True))


def _iterate(dataset: Any, workers: int, threads: int) -> Any:
    """grain's iterator over a MapDataset of batches: `threads` reading threads, and
    `workers` processes (0: none)."""
    import grain

    it_ds = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=max(2, threads))
    )
    if workers > 0:
        from absl import flags

        # grain's worker processes read grain's own absl flags; outside an absl app (a
        # notebook, a test) nothing has parsed them, and their defaults are what is meant.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(it_ds)


# --------------------------------------------------------------------------- batches


class TrainBatches:
    """This process's rows of the global training batches ``start+1 .. num_steps`` of one
    seed, read by grain. ``next()`` gives the batch of the next step, ``state()`` grain's
    iterator state after it (JSON-able), which `resume` (the `start` it was opened with and
    that state) continues from."""

    def __init__(
        self,
        stream: Stream,
        pre: Preprocess,
        *,
        global_batch_size: int,
        seed: int,
        num_steps: int,
        start: int = 0,
        resume: dict[str, Any] | None = None,
        workers: int = 0,
        threads: int = 1,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        import grain

        if not 0 < global_batch_size <= len(stream):
            raise ValueError(f"global_batch_size={global_batch_size} must be in [1, {len(stream)}]")
        first, rows = _local_rows(global_batch_size, process_index, process_count)
        self._element = _TrainElement(stream, pre, global_batch_size, first, rows, seed)
        self._workers = workers
        base = start
        if resume is not None and resume.get("workers") == workers:
            base = int(resume["base"])
        # Batch k of this dataset is global batch base + k (0-based): that of step base + k + 1.
        dataset = (
            grain.MapDataset.range(base * rows, num_steps * rows)
            .map(self._element)
            .batch(rows, drop_remainder=True, batch_fn=_stack)
        )
        self._base = base
        self._it = _iterate(dataset, workers, threads)
        if base != start:
            self._it.set_state(resume["grain"])

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return next(self._it)

    def state(self) -> dict[str, Any]:
        """Where the iterator stands: grain's state and what it was opened with."""
        return {"base": self._base, "workers": self._workers, "grain": self._it.get_state()}

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def eval_batches(
    stream: Stream,
    pre: Preprocess,
    *,
    batch_size: int,
    limit: int | None = None,
    workers: int = 0,
    threads: int = 1,
    process_index: int = 0,
    process_count: int = 1,
    raw: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """In-order batches over the first `limit` examples (all by default), as
    `input_pipeline.eval_batches`: the last global batch padded with zeros, label 0, mask 0;
    this process's rows of each. `raw`: uint8 pixels, resized but not normalised (cifar)."""
    import grain

    n = len(stream) if limit is None else min(limit, len(stream))
    first, rows = _local_rows(batch_size, process_index, process_count)
    shape = pre.output_shape(stream.shape)
    batches = math.ceil(n / batch_size)
    element = _EvalElement(stream, pre, n, batch_size, first, rows, shape, raw)
    dataset = (
        grain.MapDataset.range(0, batches * rows)
        .map(element)
        .batch(rows, drop_remainder=True, batch_fn=_stack)
    )
    it = _iterate(dataset, workers, threads)
    try:
        yield from it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def per_pixel_mean(
    stream: Stream, pre: Preprocess, *, workers: int = 0, threads: int = 1
) -> np.ndarray:
    """float32 (H, W, C) mean of the split's images as `pre` sizes them, in [0, 1] units
    (the in-memory `splits.per_pixel_mean`, read in one pass)."""
    plain = dataclasses.replace(pre, kind="cifar", mean=None, std=None, pad_to=None)
    total, count = None, 0
    for images, _, mask in eval_batches(
        stream, plain, batch_size=1000, workers=workers, threads=threads, raw=True
    ):
        # Sums of whole pixel levels are exact in float64, so the mean is the in-memory one.
        part = images[mask > 0].sum(axis=0, dtype=np.float64)
        total = part if total is None else total + part
        count += int(mask.sum())
    return (total / count / 255.0).astype(np.float32)
