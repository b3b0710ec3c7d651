"""The config of one training run: every knob with its default, and the model it names.

Experiments start from `default_config()` and override; `train.train` runs it.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from cnn_cases import models

# Config keys that may change between an interrupted run and its resumption.
RESUMABLE_KEYS = frozenset(
    {
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "data_dir",
        "download",
        "prefetch",
        "verbose",
        "kernels",  # oneDNN and XLA kernels compute the same function on the same variables
        "data_workers",  # who reads the batches does not change them
        "data_threads",
    }
)

# Keys newer than some stored configs, with the value a config.json without them means.
ADDED_KEYS = {
    "seeds": 1,
    "pipeline": "auto",
    "preprocess": "cifar",
    "image_size": None,
    "eval_resize": None,
    "min_crop_scale": 0.08,
    "data_workers": 0,
    "data_threads": 1,
    "accumulate_steps": 1,
    "lr_decay_every": 0,
    "init": "flax",  # runs made before the models had their papers' initialisations
    "grad_clip_norm": 0.0,
}

PIPELINES = ("auto", "memory", "stream")


def default_config() -> ml_collections.ConfigDict:
    """Every knob of a run; experiments start from this and override."""
    c = ml_collections.ConfigDict()
    c.model = "resnet20"
    c.model_kwargs = ml_collections.ConfigDict()
    # Weights' initialisation (`cnn_cases.models.inits`): reference (each model's cited one),
    # paper (the paper's stated rule), flax (flax's defaults).
    c.init = "reference"
    c.dtype = "float32"
    c.kernels = "auto"  # convolutions and BatchNorm: auto (oneDNN on a CPU), onednn, xla
    c.dataset = "cifar10"
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.download = True  # let TFDS download a dataset missing from data_dir
    c.train_split = "train"
    c.test_split = "test"
    c.augment = True
    c.crop_padding = 4
    c.flip = True
    c.mean_subtract = True
    c.pad_to = ml_collections.config_dict.placeholder(int)
    c.downsample = 1  # average factor x factor pixel blocks (2: CIFAR at 16x16, 4x cheaper)
    # Input pipeline (`cnn_cases.engine.loading`): memory decodes the splits once into host
    # memory; stream reads batches from disk through grain (datasets of any size); auto
    # takes memory for fixed-size images that fit (cifar preprocessing), else stream.
    c.pipeline = "auto"
    c.preprocess = "cifar"  # cifar: pad-crop-flip, per-pixel mean; imagenet: see streaming
    c.image_size = ml_collections.config_dict.placeholder(int)  # resize to this (stream)
    c.eval_resize = ml_collections.config_dict.placeholder(int)  # imagenet: shorter side
    c.min_crop_scale = 0.08  # imagenet: smallest random-resized crop, as a share of the area
    c.data_workers = 0  # stream: grain worker processes (0: read in the training process)
    c.data_threads = 1  # stream: reading threads per worker
    c.batch_size = 128
    c.eval_batch_size = 500
    c.num_steps = 64_000
    c.learning_rate = 0.1
    c.lr_boundaries = (32_000, 48_000)
    c.lr_decay = 0.1
    c.lr_decay_every = 0  # > 0: lr x lr_decay every this many steps instead of boundaries
    c.warmup_steps = 0  # He et al.: ResNet-110 trains at warmup_lr for ~400 steps first
    c.warmup_lr = 0.01
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    c.grad_clip_norm = 0.0  # > 0: the gradient clipped to this global norm (0: not clipped)
    c.aux_loss_weight = 0.3
    c.accumulate_steps = 1  # gradient accumulation: micro-batches of batch_size / this
    c.seed = 0
    c.seeds = 1  # train seeds seed .. seed + seeds - 1 as one vmapped program
    c.log_every = 100
    c.eval_every = 0  # 0: evaluate only at the end
    c.curve_eval_examples = 2_000  # train/test examples per intermediate evaluation
    c.final_train_eval_examples = 10_000
    c.final_test_eval_examples = ml_collections.config_dict.placeholder(int)  # None: all
    c.checkpoint_every = 1_000
    c.keep_checkpoints = 2
    c.prefetch = 2
    c.verbose = True
    return c


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The registry model `config.model` with `config.model_kwargs`, dtype and kernels."""
    kwargs = dict(config.model_kwargs)
    try:
        dtype = jnp.dtype(config.dtype)
    except TypeError:
        raise ValueError(f"dtype={config.dtype!r} (valid: float32, bfloat16)") from None
    try:
        return models.get_model(
            config.model,
            num_classes=num_classes,
            dtype=dtype,
            kernels=config.kernels,
            weight_init=config.init,
            **kwargs,
        )
    except TypeError as e:  # an argument the model does not take
        raise ValueError(f"model {config.model!r} with model_kwargs {kwargs}: {e}") from None


def validate(config: ml_collections.ConfigDict) -> None:
    """One-line ValueError for a run's config that cannot train: sizes, steps and cadences,
    dtype, kernels, the model and its arguments. Reads no data."""
    for key, least in (("num_steps", 1), ("batch_size", 1), ("eval_batch_size", 1)):
        _check_count(config, key, least)
    for key in ("log_every", "eval_every", "checkpoint_every", "warmup_steps"):
        _check_count(config, key, 0)
    _check_count(config, "downsample", 1)
    _check_count(config, "seeds", 1)
    for key in ("data_workers", "lr_decay_every"):
        _check_count(config, key, 0)
    for key in ("data_threads", "accumulate_steps"):
        _check_count(config, key, 1)
    if config.batch_size % config.accumulate_steps:
        raise ValueError(
            f"batch_size={config.batch_size} is not a multiple of "
            f"accumulate_steps={config.accumulate_steps}"
        )
    if config.pipeline not in PIPELINES:
        raise ValueError(f"pipeline={config.pipeline!r} (valid: {', '.join(PIPELINES)})")
    if config.preprocess not in PREPROCESS:
        raise ValueError(f"preprocess={config.preprocess!r} (valid: {', '.join(PREPROCESS)})")
    if config.preprocess == "imagenet" and not config.image_size:
        raise ValueError("preprocess='imagenet' needs image_size, e.g. --config.image_size=224")
    if config.image_size is not None and config.image_size < 1:
        raise ValueError(f"image_size={config.image_size!r} must be a whole number >= 1")
    if not 0 < config.min_crop_scale <= 1:
        raise ValueError(f"min_crop_scale={config.min_crop_scale!r} must be in (0, 1]")
    if not config.grad_clip_norm >= 0:
        raise ValueError(f"grad_clip_norm={config.grad_clip_norm!r} must be >= 0 (0: no clipping)")
    if config.init not in models.INITS:
        raise ValueError(f"init={config.init!r} (valid: {', '.join(models.INITS)})")
    if config.kernels not in KERNELS:
        raise ValueError(f"kernels={config.kernels!r} (valid: {', '.join(KERNELS)})")
    create_model(config, num_classes=10)


KERNELS = ("auto", "onednn", "xla")
PREPROCESS = ("cifar", "imagenet")


def _check_count(config: ml_collections.ConfigDict, key: str, least: int) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{key}={value!r} must be a whole number >= {least}")
