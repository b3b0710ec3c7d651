"""Test set-up: CPU only, quiet TensorFlow, no GPU memory grabbing, and one JAX compilation
cache for the whole session (its test processes and their subprocesses), so that the many
identical tiny programs compile once."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Set before jax is imported; pytest-xdist workers and the tests' subprocesses inherit it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnn_cases_jax_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


import pytest

from tests import tiny_tfds

# What `tiny_tfds_dir` holds: name -> (image shape, file format).
TINY_DATASETS = {
    "tiny_cifar": ((32, 32, 3), "tfrecord"),
    "tiny_cifar_ar": ((32, 32, 3), "array_record"),
    "tiny_mnist": ((28, 28, 1), "tfrecord"),
}


@pytest.fixture(scope="session")
def tiny_tfds_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A TFDS data dir with the `TINY_DATASETS`, 64 train and 32 test images each (PNG)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for name, (shape, file_format) in TINY_DATASETS.items():
        tiny_tfds.write(data_dir, name, shape=shape, file_format=file_format)
    return data_dir
