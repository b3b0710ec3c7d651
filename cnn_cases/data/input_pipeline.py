"""Deterministic batches of an in-memory :class:`~cnn_cases.data.splits.Split`.

:class:`Pipeline`'s ``batch(step)`` depends only on ``(seed, step)``: a resumed run sees the
same data, and every process of a multi-host run computes the same global batch, keeping only
its own rows. :func:`eval_batches` walks a split in order with a mask for the padded tail.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnn_cases.data import splits
from cnn_cases.data.splits import Split


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
    splits.check_pad_to(pad_to, h, w)
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    return top, pad_to - h - top, left, pad_to - w - left


def local_rows(global_size: int, process_index: int, process_count: int) -> slice:
    """The rows of a global batch that process `process_index` of `process_count` holds."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index={process_index} / process_count={process_count}")
    if global_size % process_count:
        raise ValueError(f"batch size {global_size} is not divisible by {process_count} processes")
    local = global_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


class _Batches:
    """What every batch source offers on top of its ``batch(step)``: prefetched iteration."""

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

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
        return prefetch_steps(produce, range(start_step, start_step + num_steps), prefetch)


def prefetch_steps(produce: Callable[[int], Any], steps: range, prefetch: int = 2) -> _Prefetcher:
    """An iterator over ``produce(s)`` for s in `steps`, which a background thread computes
    ``prefetch`` ahead. Its exceptions re-raise in the consumer; ``close()`` (or dropping the
    iterator) stops it."""
    return _Prefetcher(produce, steps, prefetch)


class Pipeline(_Batches):
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
        self._rows = local_rows(global_batch_size, process_index, process_count)
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


class StackedPipeline(_Batches):
    """Several pipelines (one per seed) whose batches are stacked on a new leading axis:
    float32 (seeds, b, H', W', C), int32 (seeds, b)."""

    def __init__(self, pipelines: list[Pipeline]) -> None:
        self.pipelines = pipelines

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = zip(*(p.batch(step) for p in self.pipelines), strict=True)
        return np.stack(images), np.stack(labels)


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
    rows = local_rows(batch_size, process_index, process_count)
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
