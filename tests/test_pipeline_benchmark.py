"""The pipeline benchmark's pieces on a handful of images: ImageNet-sized JPEGs made from small
images read back as a stream, timed batches, and the report."""

import numpy as np

from cnn_cases.data import streaming
from cnn_cases.perf import pipeline
from scripts import pipeline_benchmark


def test_made_jpegs_stream_as_imagenet_sized_examples(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    path = str(tmp_path / "jpegs.array_record")
    made = pipeline.write_jpegs(images, np.arange(8) % 10, path, num_classes=10)
    assert made["pixels"] >= 500 * 333 and made["jpeg_bytes"] > 0
    stream = pipeline.jpeg_stream(path, 10)
    pixels, label = stream.example(5)
    assert (pixels.shape[1], pixels.shape[0]) in pipeline.IMAGENET_SIZES and label == 5
    pre = streaming.Preprocess(kind="imagenet", image_size=32)
    r = pipeline.stream_images_per_s(stream, pre, batch_size=4, batches=1, workers=0)
    assert r["images_per_s"] > 0 and r["startup_s"] >= 0


def test_the_report_names_every_setting():
    r = {
        "memory_cifar_images_per_s": 20000.0,
        "stream": {
            "cifar/0": {"images_per_s": 4000.0, "startup_s": 0.5},
            "imagenet/2": {"images_per_s": 90.0, "startup_s": 3.0},
        },
        "train_step": {"resnet50:224:32": {"images_per_s": 6.5}},
        "jpegs": {"jpeg_bytes": 60000.0, "pixels": 187500.0},
    }
    report = pipeline_benchmark.format_report(r)
    assert "| CIFAR 32x32 JPEG, streamed | 0 | 4,000 | 0.5 |" in report
    assert "| ImageNet-sized JPEG, RRC 224 | 2 | 90 | 3.0 |" in report
    assert "| resnet50:224:32 | 6.5 |" in report and "60 kB" in report
