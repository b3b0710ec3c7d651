"""Input pipeline throughput on this machine, in images/s, against grain's worker count,
beside what the train step consumes.

    python -m scripts.pipeline_benchmark --data_dir=../shared/tfds
    python -m scripts.pipeline_benchmark --data_dir=../shared/tfds --workers=0,1,2 --jpegs=3000

CIFAR-sized: the `cifar10_jpeg` train split, read from its ArrayRecord files (JPEG decode,
pad-crop-flip, per-pixel mean), and the same split decoded into memory first (the in-memory
pipeline, which does not decode per batch). ImageNet-sized: `--jpegs` CIFAR-10 images
upscaled to 500x375 / 375x500 / 500x333 and encoded as JPEG at quality 90
(`cnn_cases.perf.pipeline.write_jpegs`), read with random-resized crops to 224. Repetitions
alternate between the settings; medians are reported. The train step's rate is measured on
random batches (`cnn_cases.perf.workload.JaxTrainStep`) in the same run. Workers are
processes; on a machine with few cores they compete with each other and with the step.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Sequence

from absl import app, flags, logging

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir holding cifar10_jpeg")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker processes to try")
_JPEGS = flags.DEFINE_integer("jpegs", 2000, "ImageNet-sized JPEGs to make (0: skip)")
_BATCHES = flags.DEFINE_integer("batches", 20, "timed batches per repetition")
_REPS = flags.DEFINE_integer("reps", 3, "alternated repetitions")
_STEPS = flags.DEFINE_list(
    "step_models", ["resnet20:32:128", "resnet50:224:32"], "MODEL:IMAGE_SIZE:BATCH train steps"
)
_OUT = flags.DEFINE_string("out", None, "also write the results as JSON here")


def measure(
    data_dir: str,
    workers: Sequence[int],
    *,
    jpegs: int,
    batches: int,
    reps: int,
    step_models: Sequence[str],
    tmpdir: str,
) -> dict:
    """Every measurement of the report (see the module docstring)."""
    import numpy as np

    from cnn_cases.data import splits, streaming
    from cnn_cases.perf import pipeline, throughput, timing, workload

    builder = splits.prepared_builder("cifar10_jpeg", data_dir, download=False)
    cifar = streaming.open_stream(builder, "train")
    memory = splits.load_split("cifar10_jpeg", "train", data_dir=data_dir, download=False)
    cifar_pre = streaming.Preprocess(mean=splits.per_pixel_mean(memory.images))
    settings = {("cifar", w): (cifar, cifar_pre, 128) for w in workers}
    made = None
    if jpegs:
        path = os.path.join(tmpdir, "jpegs.array_record")
        made = pipeline.write_jpegs(
            memory.images[:jpegs], memory.labels[:jpegs], path, num_classes=10
        )
        stream = pipeline.jpeg_stream(path, 10)
        mean, std = (
            np.asarray(v, np.float32) for v in (streaming.IMAGENET_MEAN, streaming.IMAGENET_STD)
        )
        pre = streaming.Preprocess(kind="imagenet", image_size=224, mean=mean, std=std)
        settings.update({("imagenet", w): (stream, pre, 32) for w in workers})
    runs: dict = {key: [] for key in settings}
    memory_rates = []
    for rep in range(reps):
        for (kind, w), (stream, pre, batch) in settings.items():
            n = min(batches, len(stream) // batch - 1)
            r = pipeline.stream_images_per_s(
                stream, pre, batch_size=batch, batches=n, workers=w, seed=rep
            )
            runs[(kind, w)].append(r)
            logging.info("%s, %d workers: %.0f images/s", kind, w, r["images_per_s"])
        memory_rates.append(
            throughput.pipeline_images_per_s(
                "cifar10_jpeg", batch_size=128, batches=batches, seed=rep, data_dir=data_dir
            )
        )
    step_rates = {}
    for spec in step_models:
        model, size, batch = spec.split(":")
        classes = 1000 if int(size) >= 64 else 10
        job = workload.Workload(
            model=model, image_size=int(size), batch_size=int(batch), num_classes=classes
        )
        step = workload.JaxTrainStep(job)
        t = timing.time_calls({"step": step.step}, reps=3, warmup=1)["step"]
        step_rates[spec] = {"images_per_s": job.batch_size / t.median, "compile_s": step.compile_s}
        logging.info("%s train step: %.1f images/s", spec, step_rates[spec]["images_per_s"])
    return {
        "cpu_count": os.cpu_count(),
        "stream": {
            f"{kind}/{w}": {
                "images_per_s": pipeline.median_rates(rs),
                "startup_s": statistics.median(r["startup_s"] for r in rs),
            }
            for (kind, w), rs in runs.items()
        },
        "memory_cifar_images_per_s": statistics.median(memory_rates),
        "jpegs": made,
        "train_step": step_rates,
    }


def format_report(r: dict) -> str:
    lines = [
        "| pipeline | workers | images/s | start-up s |",
        "|---|---|---|---|",
        f"| CIFAR, in memory (decoded once) | - | {r['memory_cifar_images_per_s']:,.0f} | - |",
    ]
    for key, v in r["stream"].items():
        kind, w = key.split("/")
        name = "CIFAR 32x32 JPEG, streamed" if kind == "cifar" else "ImageNet-sized JPEG, RRC 224"
        lines.append(f"| {name} | {w} | {v['images_per_s']:,.0f} | {v['startup_s']:.1f} |")
    lines += ["", "| train step | images/s |", "|---|---|"]
    lines += [f"| {k} | {v['images_per_s']:,.1f} |" for k, v in r["train_step"].items()]
    if r["jpegs"]:
        j = r["jpegs"]
        lines.append(
            f"\nJPEGs: {j['jpeg_bytes'] / 1e3:.0f} kB, {j['pixels'] / 1e3:.0f}k pixels on average"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _DATA_DIR.value:
        raise app.UsageError("--data_dir (holding cifar10_jpeg) is required")
    with tempfile.TemporaryDirectory() as tmpdir:
        r = measure(
            _DATA_DIR.value,
            [int(w) for w in _WORKERS.value],
            jpegs=_JPEGS.value,
            batches=_BATCHES.value,
            reps=_REPS.value,
            step_models=_STEPS.value,
            tmpdir=tmpdir,
        )
    print(format_report(r))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    app.run(main)
