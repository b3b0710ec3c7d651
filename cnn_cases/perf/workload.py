"""What a measurement runs: a registry model's train step at one batch size and precision.

`Workload` names the model and how it computes; `JaxTrainStep` is its jitted
`cnn_cases.engine.steps.train_step` on a real `TrainState` (SGD momentum + weight decay), fed a few
random normal batches.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_cases import models
from cnn_cases.analysis import costs
from cnn_cases.engine import defaults, steps


@dataclasses.dataclass(frozen=True)
class Workload:
    """A registry model's train step: which net, its size, the batch and how it computes.

    `width` (CIFAR nets' first-stage width) and `scan` (ResNets' `nn.scan` over repeated
    blocks) go to the model only when set; `image_size` replaces the registry's input size
    (e.g. 16 for CIFAR averaged down to 16x16); `kernels` picks convolutions and BatchNorm: auto
    (oneDNN on a CPU), onednn or xla.
    """

    model: str = "resnet20"
    batch_size: int = 128
    width: int | None = None
    num_classes: int = 10
    dtype: str = "float32"
    kernels: str = "auto"
    scan: bool = False
    seed: int = 0
    image_size: int | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's (H, W, C) per image; `image_size` x `image_size` when it is set."""
        h, w, c = models.input_shape(self.model)
        return (h, w, c) if self.image_size is None else (self.image_size, self.image_size, c)

    def model_kwargs(self, *, scan: bool | None = None) -> dict[str, Any]:
        """Registry overrides beyond the config's: `width`, and `scan` (default `self.scan`)."""
        scan = self.scan if scan is None else scan
        kwargs: dict[str, Any] = {} if self.width is None else {"width": self.width}
        return {**kwargs, "scan": True} if scan else kwargs

    def config(self) -> ml_collections.ConfigDict:
        """`defaults.default_config()` with this model, dtype, kernels, batch size and seed."""
        config = defaults.default_config()
        config.model = self.model
        config.dtype = self.dtype
        config.kernels = self.kernels
        config.batch_size = self.batch_size
        config.seed = self.seed
        config.model_kwargs = self.model_kwargs()
        return config

    def random_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random normal float64 images (N, H, W, C) and uniform integer labels."""
        images = rng.standard_normal((self.batch_size, *self.input_shape))
        return images, rng.integers(0, self.num_classes, self.batch_size)


class JaxTrainStep:
    """The jitted train step of `workload`, compiled ahead of time, cycling over 3 batches.

    `compile_s` is the first trace + compile; `step()` runs one step and returns its outputs
    (wait on them with `jax.block_until_ready`).
    """

    def __init__(self, workload: Workload):
        config = workload.config()
        self.model = defaults.create_model(config, workload.num_classes)
        self.state = steps.create_train_state(self.model, config, workload.input_shape)
        rng = np.random.default_rng(workload.seed)
        self.batches = []
        for _ in range(3):
            images, labels = workload.random_batch(rng)
            self.batches.append((jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)))
        step = functools.partial(
            steps.train_step,
            dropout_key=jax.random.PRNGKey(workload.seed + 1),
            aux_loss_weight=config.aux_loss_weight,
        )
        start = time.perf_counter()
        jitted = jax.jit(step, donate_argnums=0)
        self._step = jitted.lower(self.state, *self.batches[0]).compile()
        self.compile_s = time.perf_counter() - start
        self.params = costs.count(self.state.params)
        self._steps_done = 0

    def step(self) -> Any:
        """One train step on the next batch; returns (state, metrics)."""
        images, labels = self.batches[self._steps_done % len(self.batches)]
        self.state, metrics = self._step(self.state, images, labels)
        self._steps_done += 1
        return self.state, metrics
