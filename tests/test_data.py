"""Tests for the data: random in-memory splits and tiny TFDS datasets written by the tests."""

import io
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cnn_cases.data import input_pipeline, sources, splits
from tests import tiny_tfds
from tests.conftest import TINY_DATASETS


def _split(n: int = 50, hw: tuple[int, int] = (8, 8), c: int = 3, seed: int = 0) -> splits.Split:
    """Random images; label i marks example i so batches reveal which examples they hold."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *hw, c), dtype=np.uint8)
    return splits.Split(images=images, labels=np.arange(n, dtype=np.int32), num_classes=n)


def _pipeline(split: splits.Split, **kw) -> input_pipeline.Pipeline:
    args = dict(global_batch_size=8, seed=3, augment=True, mean=splits.per_pixel_mean(split.images))
    args.update(kw)
    return input_pipeline.Pipeline(split, **args)


def _normalised(split: splits.Split, mean: np.ndarray | None) -> np.ndarray:
    x = split.images.astype(np.float32) / 255
    return x if mean is None else x - mean


def test_split_validates_and_casts_labels():
    s = splits.Split(np.zeros((3, 2, 2, 1), np.uint8), np.array([0, 1, 2], np.int64), 3)
    assert s.labels.dtype == np.int32 and len(s) == 3
    with pytest.raises(ValueError):
        splits.Split(np.zeros((3, 2, 2), np.uint8), np.zeros(3, np.int32), 3)
    with pytest.raises(ValueError):
        splits.Split(np.zeros((3, 2, 2, 1), np.uint8), np.zeros(4, np.int32), 3)


def test_per_pixel_mean():
    s = _split()
    mean = splits.per_pixel_mean(s.images)
    assert mean.dtype == np.float32 and mean.shape == (8, 8, 3)
    np.testing.assert_allclose(mean, s.images.mean(axis=0) / 255, rtol=1e-6)


def test_batch_is_deterministic_in_seed_and_step():
    s = _split()
    a, b = _pipeline(s), _pipeline(s)
    x0, y0 = a.batch(0)
    assert x0.dtype == np.float32 and x0.shape == (8, 8, 8, 3)
    assert y0.dtype == np.int32 and y0.shape == (8,)
    x0b, y0b = b.batch(0)
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    x1, y1 = a.batch(1)
    assert not np.array_equal(y0, y1) and not np.array_equal(x0, x1)
    assert not np.array_equal(_pipeline(s, seed=4).batch(0)[1], y0)


def test_resume_sees_the_same_batches():
    s = _split()
    first = _pipeline(s)
    seen = [first.batch(i) for i in range(20)]
    resumed = _pipeline(s)  # fresh object, starts mid-run
    for i in (13, 7, 19):
        np.testing.assert_array_equal(resumed.batch(i)[0], seen[i][0])
        np.testing.assert_array_equal(resumed.batch(i)[1], seen[i][1])


def test_epochs_cover_each_example_once_and_drop_remainder():
    s = _split(n=50)
    p = _pipeline(s, global_batch_size=8, augment=False)
    assert p.steps_per_epoch == 6  # 48 of 50 used per epoch
    for epoch in range(3):
        steps = range(epoch * 6, epoch * 6 + 6)
        labels = np.concatenate([p.batch(i)[1] for i in steps])
        assert len(np.unique(labels)) == 48
        np.testing.assert_array_equal(
            labels, np.random.default_rng([3, epoch]).permutation(50)[:48]
        )
    assert not np.array_equal(p.batch(0)[1], p.batch(6)[1])  # new permutation each epoch


def test_no_augment_is_normalised_images():
    s = _split()
    mean = splits.per_pixel_mean(s.images)
    x, y = _pipeline(s, augment=False).batch(2)
    np.testing.assert_allclose(x, _normalised(s, mean)[y], atol=1e-6)
    x, y = _pipeline(s, augment=False, mean=None).batch(2)
    np.testing.assert_allclose(x, _normalised(s, None)[y], atol=1e-6)


def _candidates(image: np.ndarray, pad: int) -> np.ndarray:
    """Every pad-crop of ``image`` and its horizontal flip: (2, 2p+1, 2p+1, H, W, C)."""
    h, w, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    crops = np.stack(
        [
            np.stack([padded[i : i + h, j : j + w] for j in range(2 * pad + 1)])
            for i in range(2 * pad + 1)
        ]
    )
    return np.stack([crops, crops[:, :, :, ::-1]])


def test_augmentation_is_a_crop_of_the_zero_padded_image_or_its_flip():
    s = _split(n=64)
    mean = splits.per_pixel_mean(s.images)
    ref = _normalised(s, mean)
    p = _pipeline(s, global_batch_size=32, crop_padding=2)
    offsets, flips = set(), set()
    for step in range(4):
        x, y = p.batch(step)
        assert x.shape == (32, 8, 8, 3)
        for img, label in zip(x, y, strict=True):
            cand = _candidates(ref[label], 2)
            match = np.argwhere(np.all(np.abs(cand - img) < 1e-6, axis=(3, 4, 5)))
            assert len(match) == 1, "output is not exactly one crop/flip of its source"
            f, i, j = match[0]
            flips.add(int(f))
            offsets.add((int(i), int(j)))
    assert flips == {0, 1}
    assert len(offsets) > 15  # of 25 possible


def test_flip_false_never_flips():
    s = _split(n=32)
    ref = _normalised(s, None)
    x, y = _pipeline(s, global_batch_size=32, mean=None, crop_padding=0, flip=False).batch(0)
    np.testing.assert_allclose(x, ref[y], atol=1e-6)
    x, y = _pipeline(s, global_batch_size=32, mean=None, crop_padding=0).batch(0)
    flipped = [np.allclose(a, ref[b][:, ::-1]) for a, b in zip(x, y, strict=True)]
    assert 0 < sum(flipped) < 32


def test_pad_to_centres_28_in_32():
    s = _split(n=10, hw=(28, 28), c=1)
    mean = splits.per_pixel_mean(s.images)
    assert splits.image_shape(s) == (28, 28, 1)
    assert splits.image_shape(s, pad_to=32) == (32, 32, 1)
    x, y = _pipeline(s, global_batch_size=5, augment=False, mean=mean, pad_to=32).batch(0)
    assert x.shape == (5, 32, 32, 1)
    np.testing.assert_allclose(x[:, 2:30, 2:30], _normalised(s, mean)[y], atol=1e-6)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x[:, border] == 0)
    xa, _ = _pipeline(s, global_batch_size=5, mean=mean, pad_to=32).batch(0)
    assert xa.shape == (5, 32, 32, 1)
    with pytest.raises(ValueError):
        splits.image_shape(s, pad_to=20)


@pytest.mark.parametrize("augment", [False, True])
def test_process_slices_concatenate_to_the_global_batch(augment):
    s = _split()
    whole = _pipeline(s, augment=augment).batch(5)
    parts = [
        _pipeline(s, augment=augment, process_index=i, process_count=2).batch(5) for i in (0, 1)
    ]
    assert parts[0][0].shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])
    with pytest.raises(ValueError):
        _pipeline(s, process_index=0, process_count=3)  # 8 rows do not split 3 ways


def test_iterate_matches_batch_and_applies_put():
    s = _split()
    p = _pipeline(s)
    got = list(p.iterate(4, 10, prefetch=3))
    assert len(got) == 10
    for i, (x, y) in enumerate(got):
        np.testing.assert_array_equal(x, p.batch(4 + i)[0])
        np.testing.assert_array_equal(y, p.batch(4 + i)[1])
    threads = []

    def put(batch):
        threads.append(threading.current_thread())
        return batch[1].sum()

    sums = list(p.iterate(0, 3, put=put))
    assert sums == [p.batch(i)[1].sum() for i in range(3)]
    assert all(t is not threading.main_thread() for t in threads)


def test_iterate_reraises_producer_exceptions():
    s = _split()

    def put(batch):
        if put.calls == 2:
            raise RuntimeError("boom in put")
        put.calls += 1
        return batch

    put.calls = 0
    it = _pipeline(s).iterate(0, 5, put=put)
    next(it)
    next(it)
    with pytest.raises(RuntimeError, match="boom in put"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_iterate_stops_its_thread_when_closed_early():
    s = _split()
    it = _pipeline(s).iterate(0, 1_000_000, prefetch=2)
    next(it)
    thread = it._thread
    assert thread.is_alive()
    it.close()
    assert not thread.is_alive()
    with it:  # closing twice, and the context manager, are harmless
        pass


def test_eval_batches_pad_the_last_batch_with_a_mask():
    s = _split(n=23)
    mean = splits.per_pixel_mean(s.images)
    batches = list(input_pipeline.eval_batches(s, batch_size=8, mean=mean))
    assert len(batches) == input_pipeline.num_eval_batches(23, 8) == 3
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    mask = np.concatenate([b[2] for b in batches])
    assert images.shape == (24, 8, 8, 3) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, [1.0] * 23 + [0.0])
    np.testing.assert_array_equal(labels[:23], np.arange(23))
    np.testing.assert_allclose(images[:23], _normalised(s, mean), atol=1e-6)
    assert np.all(images[23] == 0) and labels[23] == 0

    limited = list(input_pipeline.eval_batches(s, batch_size=8, mean=None, limit=10, pad_to=12))
    assert [b[2].sum() for b in limited] == [8.0, 2.0]
    assert limited[0][0].shape == (8, 12, 12, 3)

    parts = [
        list(
            input_pipeline.eval_batches(
                s, batch_size=8, mean=mean, process_index=i, process_count=2
            )
        )
        for i in (0, 1)
    ]
    for k, (x, y, m) in enumerate(batches):
        np.testing.assert_array_equal(np.concatenate([parts[0][k][0], parts[1][k][0]]), x)
        np.testing.assert_array_equal(np.concatenate([parts[0][k][1], parts[1][k][1]]), y)
        np.testing.assert_array_equal(np.concatenate([parts[0][k][2], parts[1][k][2]]), m)


def test_missing_dataset_raises_one_line_error(tmp_path):
    with pytest.raises(splits.DatasetNotFoundError) as info:
        splits.load_split("mnist", "train", data_dir=str(tmp_path), download=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "mnist" in msg and str(tmp_path) in msg and "TFDS_DATA_DIR" in msg
    assert isinstance(info.value, ValueError)


def test_failed_download_raises_one_line_error(tmp_path, monkeypatch):
    # Offline, a real attempt takes minutes of retries; fake the failure instead.
    def fail(self, *args, **kwargs):
        raise OSError("Max retries exceeded\nsecond line")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with pytest.raises(splits.DatasetNotFoundError) as info:
        splits.load_split("mnist", "test", data_dir=str(tmp_path))
    msg = str(info.value)
    assert "\n" not in msg and "mnist" in msg and str(tmp_path) in msg
    assert "Max retries exceeded" in msg and isinstance(info.value.__cause__, OSError)


def test_unknown_dataset_raises_one_line_error(tmp_path):
    # cifar10_jpeg has no registered builder: it exists only as prepared files in a data dir.
    for name in ("cifar10_jpeg", "no_such_dataset_xyz"):
        with pytest.raises(splits.DatasetNotFoundError) as info:
            splits.load_split(name, "train", data_dir=str(tmp_path), download=False)
        msg = str(info.value)
        assert "\n" not in msg and name in msg and str(tmp_path) in msg


@pytest.mark.parametrize("name", ["tiny_cifar", "tiny_cifar_ar", "tiny_mnist"])
def test_load_split_reads_every_pixel_and_label_of_both_file_formats(name, tiny_tfds_dir):
    shape, _ = TINY_DATASETS[name]
    splits.clear_cache()
    try:
        split = splits.load_split(name, "train", data_dir=tiny_tfds_dir, download=False)
        again = splits.load_split(name, "train", data_dir=tiny_tfds_dir, download=False)
        assert again is split  # decoded once, then cached
        images, labels = tiny_tfds.images(64, shape, seed=0)  # what the dataset was written with
        np.testing.assert_array_equal(split.images, images)
        np.testing.assert_array_equal(split.labels, labels)
        assert split.labels.dtype == np.int32 and split.num_classes == 10
        assert not split.images.flags.writeable
        part = splits.load_split(name, "test[8:20]", data_dir=tiny_tfds_dir, download=False)
        np.testing.assert_array_equal(part.images, tiny_tfds.images(32, shape, seed=1)[0][8:20])
        x, y = input_pipeline.Pipeline(
            split, global_batch_size=8, seed=0, augment=True, mean=splits.per_pixel_mean(images)
        ).batch(0)
        assert x.shape == (8, *shape) and y.shape == (8,)
    finally:
        splits.clear_cache()


def test_decode_image_converts_to_the_dataset_s_channels():
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    buf = io.BytesIO()
    Image.fromarray(gray, "L").save(buf, format="PNG")
    rgb = sources.decode_image(buf.getvalue(), 3)  # a grayscale file in an RGB dataset
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(sources.decode_image(buf.getvalue(), 1), gray[..., None])
    with pytest.raises(ValueError, match="2 channels"):
        sources.decode_image(buf.getvalue(), 2)


def test_stacked_pipeline_holds_each_seed_s_own_batch():
    s = _split()
    seeds = [_pipeline(s, seed=k) for k in (3, 4, 5)]
    stacked = input_pipeline.StackedPipeline(seeds)
    for step in (0, 7):
        images, labels = stacked.batch(step)
        assert images.shape == (3, 8, 8, 8, 3) and labels.shape == (3, 8)
        for k, p in enumerate(seeds):
            np.testing.assert_array_equal(images[k], p.batch(step)[0])
            np.testing.assert_array_equal(labels[k], p.batch(step)[1])
    assert not np.array_equal(labels[0], labels[1])  # other seeds, other examples
    with stacked.iterate(2, 2, prefetch=1) as it:
        first = next(it)
    np.testing.assert_array_equal(first[1], stacked.batch(2)[1])
