"""Converts a TFDS dataset prepared as TFRecord to ArrayRecord once, beside its TFRecord files.

    python -m scripts.convert_array_record --dataset_dir=/data/tfds/imagenet2012/5.1.0

The streamed pipeline reads by random access, which TFRecord files do not offer. This writes
an ArrayRecord copy of every TFRecord shard next to it (the same serialised records in the
same order, with TFDS's own ArrayRecord writer) and lists `array_record` under
`alternativeFileFormats` in dataset_info.json, as TFDS's `tfds convert_format` does; TFDS
and this project then read either. The records are read with grain's TFRecord reader, so
neither TensorFlow nor Apache Beam (which TFDS's converter imports) is needed. It needs as
much free disk as the dataset takes (imagenet2012: about 150 GB) and is safe to rerun: a
shard already converted is skipped, and dataset_info.json changes last.
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import os
from collections.abc import Sequence

from absl import app, flags, logging

_DIR = flags.DEFINE_string("dataset_dir", None, "a prepared dataset's NAME/VERSION folder")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count() or 1, "shards converted at once")


def _convert_shard(tfrecord: str) -> str:
    import grain
    from tensorflow_datasets.core import file_adapters

    out = tfrecord.replace(".tfrecord-", ".array_record-")
    if not os.path.exists(out):
        tmp = f"{out}.tmp.{os.getpid()}"
        records = grain.experimental.TFRecordIterDataset(tfrecord)
        file_adapters.ArrayRecordFileAdapter.write_examples(tmp, enumerate(records))
        os.replace(tmp, out)
    return out


def convert(dataset_dir: str, threads: int = 1) -> list[str]:
    """Adds ArrayRecord files to the TFRecord dataset in `dataset_dir` (its NAME/VERSION
    folder, holding dataset_info.json); returns them."""
    info_path = os.path.join(dataset_dir, "dataset_info.json")
    if not os.path.exists(info_path):
        raise ValueError(
            f"dataset_dir={dataset_dir!r} holds no dataset_info.json; pass a prepared "
            "dataset's NAME/VERSION folder"
        )
    with open(info_path) as f:
        info = json.load(f)
    shards = sorted(glob.glob(os.path.join(dataset_dir, "*.tfrecord-*-of-*")))
    if info.get("fileFormat", "tfrecord") != "tfrecord" or not shards:
        raise ValueError(f"{dataset_dir!r} is not prepared as TFRecord (no *.tfrecord-* shards)")
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        written = list(pool.map(_convert_shard, shards))
    formats = info.get("alternativeFileFormats", [])
    if "array_record" not in formats:
        info["alternativeFileFormats"] = [*formats, "array_record"]
        tmp = f"{info_path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2)
        os.replace(tmp, info_path)
    logging.info("%s: %d shards as ArrayRecord", dataset_dir, len(written))
    return written


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _DIR.value:
        raise app.UsageError("--dataset_dir is required")
    convert(_DIR.value, _THREADS.value)


if __name__ == "__main__":
    app.run(main)
