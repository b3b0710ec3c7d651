"""The streamed input pipeline: the same batches as the in-memory one, exact evaluation,
grain's saved position, ImageNet preprocessing, and a run killed with SIGKILL that resumes
to the numbers of an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnn_cases.data import input_pipeline, splits, streaming
from cnn_cases.engine import launch, loading, train
from experiments import train as train_launcher
from tests import tiny_tfds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "interrupt_worker.py")
NAME = "tiny_cifar_ar"  # conftest's: 64 train and 32 test images, as ArrayRecord


@pytest.fixture
def data_dir(tiny_tfds_dir):
    return tiny_tfds_dir


def _stream(data_dir, split):
    return streaming.open_stream(splits.prepared_builder(NAME, data_dir), split)


def _memory(data_dir, split):
    return splits.load_split(NAME, split, data_dir=data_dir)


def test_streamed_batches_are_the_in_memory_batches(data_dir):
    stream, split = _stream(data_dir, "train"), _memory(data_dir, "train")
    mean = splits.per_pixel_mean(split.images)
    assert np.array_equal(streaming.per_pixel_mean(stream, streaming.Preprocess()), mean)
    for pad_to, augment in ((None, True), (36, False)):
        pre = streaming.Preprocess(mean=mean, pad_to=pad_to, augment=augment)
        kw = {"global_batch_size": 16, "seed": 5}
        memory = [
            input_pipeline.Pipeline(split, augment=augment, mean=mean, pad_to=pad_to, **kw, **p)
            for p in (
                {"process_index": 0, "process_count": 2},
                {"process_index": 1, "process_count": 2},
            )
        ]
        for p, pipeline in enumerate(memory):
            batches = streaming.TrainBatches(
                stream, pre, num_steps=12, process_index=p, process_count=2, **kw
            )
            for step in range(12):  # 3 epochs: 4 batches of 16 per epoch
                images, labels = next(batches)
                want = pipeline.batch(step)
                assert np.array_equal(images, want[0]) and np.array_equal(labels, want[1])
            batches.close()


def test_evaluation_covers_the_split_exactly_once(data_dir):
    stream, split = _stream(data_dir, "test"), _memory(data_dir, "test")
    pre = streaming.Preprocess(mean=None)
    seen = []
    for p in range(2):
        got = list(
            streaming.eval_batches(stream, pre, batch_size=12, process_index=p, process_count=2)
        )
        want = list(
            input_pipeline.eval_batches(
                split, batch_size=12, mean=None, process_index=p, process_count=2
            )
        )
        assert len(got) == len(want) == 3  # ceil(32 / 12): the last of 8 and 4 padding rows
        for g, w in zip(got, want, strict=True):
            assert all(np.array_equal(a, b) for a, b in zip(g, w, strict=True))
        seen.append(np.concatenate([labels[mask > 0] for _, labels, mask in got]))
    assert sum(len(s) for s in seen) == 32  # nothing dropped, nothing counted twice
    rows = np.concatenate([np.stack([b[1] for b in _rows(stream, p)]) for p in range(2)])
    assert sorted(rows.tolist()) == sorted(split.labels.tolist())


def _rows(stream, p):
    for images, labels, mask in streaming.eval_batches(
        stream, streaming.Preprocess(), batch_size=12, process_index=p, process_count=2
    ):
        yield from ((im, lab) for im, lab, m in zip(images, labels, mask, strict=True) if m)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_reader_opened_with_the_saved_state_continues_at_the_next_batch(data_dir, workers):
    stream, pre = _stream(data_dir, "train"), streaming.Preprocess()
    kw = {"global_batch_size": 16, "seed": 1, "num_steps": 9, "workers": workers}
    first = streaming.TrainBatches(stream, pre, **kw)
    for _ in range(4):
        next(first)
    saved = first.state()
    rest = [next(first)[0] for _ in range(5)]
    first.close()
    assert saved["workers"] == workers and saved["base"] == 0
    resumed = streaming.TrainBatches(stream, pre, start=4, resume=saved, **kw)
    assert all(np.array_equal(next(resumed)[0], r) for r in rest)
    resumed.close()
    # Another worker count cannot take grain's state: the reader seeks by step instead.
    other = streaming.TrainBatches(
        stream, pre, start=4, resume={**saved, "workers": 7}, **{**kw, "workers": 0}
    )
    assert np.array_equal(next(other)[0], rest[0])


def test_imagenet_preprocessing_makes_fixed_size_standardised_images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pre = streaming.Preprocess(
        kind="imagenet",
        image_size=16,
        mean=np.asarray(streaming.IMAGENET_MEAN, np.float32),
        std=np.asarray(streaming.IMAGENET_STD, np.float32),
    )
    crops = [pre.train_image(pixels, None, lambda s=s: np.random.default_rng(s)) for s in range(8)]
    assert all(c.shape == (16, 16, 3) and c.dtype == np.float32 for c in crops)
    assert len({c.tobytes() for c in crops}) == 8  # random crops differ
    again = pre.train_image(pixels, None, lambda: np.random.default_rng(3))
    assert np.array_equal(again, crops[3])  # and depend only on their generator
    ev = pre.eval_image(pixels)  # shorter side 40 -> round(16 / 0.875) = 18, centre 16x16
    assert ev.shape == (16, 16, 3)
    plain = streaming.Preprocess(kind="imagenet", image_size=16, eval_resize=40)
    centre = plain.eval_image(pixels) * 255  # no resize: the centre crop of the pixels
    assert np.allclose(centre, pixels[12:28, 22:38], atol=1e-3)
    with pytest.raises(ValueError, match="image_size"):
        streaming.Preprocess(kind="imagenet")


def test_a_tfrecord_only_dataset_names_the_conversion(tiny_tfds_dir):
    builder = splits.prepared_builder("tiny_cifar", tiny_tfds_dir)  # conftest's, TFRecord
    with pytest.raises(ValueError, match=r"TFRecord only.*convert_array_record"):
        streaming.open_stream(builder, "train")


def _config(data_dir, flags=()):
    flags = [
        f"--config.dataset={NAME}",
        f"--config.data_dir={data_dir}",
        "--config.pipeline=stream",
        "--config.num_steps=6",
        "--config.checkpoint_every=2",
        *flags,
    ]
    return flags, launch.parse_config(train_launcher, "smoke", flags)


def test_a_streamed_run_killed_with_sigkill_resumes_to_the_uninterrupted_numbers(
    tmp_path, data_dir
):
    flags, config = _config(data_dir)
    workdir, marker = tmp_path / "run", tmp_path / "at_step_3"
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [
            sys.executable,
            WORKER,
            "3",
            str(marker),
            "--config=experiments/train.py:smoke",
            *flags,
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    saved = workdir / "checkpoints" / "2" / "data" / "process_0-of-1.json"
    deadline = time.time() + 240
    while not (marker.exists() and saved.exists()):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(saved.read_text())["step"] == 2  # the position saved with step 2
    resumed = train.train(config, str(workdir))[0]
    full = train.train(config, str(tmp_path / "full"))[0]
    memory = config.copy_and_resolve_references()
    memory.pipeline = "memory"
    in_memory = train.train(memory, str(tmp_path / "memory"))[0]
    for other in (full, in_memory):
        assert resumed.curves == other.curves and resumed.test_error == other.test_error
        assert resumed.train_loss == other.train_loss and resumed.test_loss == other.test_loss


def test_auto_streams_what_memory_cannot_hold(data_dir):
    _, config = _config(data_dir, ["--config.pipeline=auto"])
    assert loading.pipeline(config) == "memory"
    config.image_size = 24
    assert loading.pipeline(config) == "stream"
    assert loading.load_data(config).image_shape == (24, 24, 3)
    config.pipeline = "memory"
    with pytest.raises(ValueError, match="pipeline='memory' takes the images as they are"):
        loading.load_data(config)


def test_a_tfrecord_dataset_converted_once_streams_the_same_examples(tmp_path):
    from scripts import convert_array_record

    written = tiny_tfds.write(str(tmp_path), "tiny_converted", sizes={"train": 8, "test": 8})
    (shard,) = convert_array_record.convert(str(tmp_path / "tiny_converted" / "1.0.0"))[:1]
    assert ".array_record-" in shard
    builder = splits.prepared_builder("tiny_converted", str(tmp_path))
    stream = streaming.open_stream(builder, "train")
    got = [stream.example(i) for i in range(len(stream))]
    images, labels = written["train"]  # PNG: the pixels as written
    assert np.array_equal(np.stack([g[0] for g in got]), images)
    assert [g[1] for g in got] == labels.tolist()
