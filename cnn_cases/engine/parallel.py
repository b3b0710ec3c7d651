"""Data parallelism with jit + Mesh + NamedSharding, on one or several hosts.

The batch is sharded on the `data` axis of a mesh over every device of every
process; parameters and optimiser state are replicated. Under jit, BatchNorm
statistics are taken over the global batch, so no `axis_name` is needed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls `jax.distributed.initialize` when a multi-process run is asked for.

    Explicit arguments win; otherwise JAX's own environment detection (SLURM, TPU pods,
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) decides. Returns whether
    it initialised. On CPU, collectives across processes go through gloo.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if not coordinator_address and not any(k in env for k in ("SLURM_JOB_ID", "TPU_NAME")):
        return False
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def create_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes, axis `data`."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, what: str = "batch_size") -> None:
    """The global batch must split evenly over devices and processes."""
    n = jax.device_count()
    if batch_size % n:
        raise ValueError(
            f"{what}={batch_size} does not divide evenly over {n} devices; use a multiple of {n}"
        )


def global_batch(mesh: Mesh, *local: np.ndarray, batch_axis: int = 0) -> tuple[jax.Array, ...]:
    """Assembles each process's slice of the batch into one global array sharded on `data`.

    `batch_axis` is the axis the batch is on (1 for batches stacked over seeds)."""
    spec = PartitionSpec(*([None] * batch_axis), DATA_AXIS)
    sharding = NamedSharding(mesh, spec)
    return tuple(jax.make_array_from_process_local_data(sharding, x) for x in local)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places a host pytree on every device; each process passes the same values."""
    sharding = replicated(mesh)

    def put(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree_util.tree_map(put, jax.device_get(tree))


# How long a process waits at a barrier for the slowest of its peers.
SYNC_TIMEOUT_S = 1800.0


def sync(name: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Waits until every process reaches the barrier `name`; nothing to do in one process.

    The barrier goes through JAX's coordination service, whose timeout is ours to set. A
    collective is no substitute: on CPU, gloo gives a late peer 30 s to join its first
    collective, which a process that loads data or compiles more slowly than the others can
    exceed.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client orbax and jax's serialization use too

    distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))


class SyncedJit:
    """`jax.jit(fn)` whose processes start each newly compiled program together.

    In a multi-process run a call whose argument shapes are new is compiled ahead of time,
    then every process waits at a barrier before running it, so no process enters the
    program's collectives while a peer is still compiling. One process: plain `jax.jit`.
    `mesh` is set (`jax.set_mesh`) while `fn` is traced, so that the oneDNN kernels run
    on each device's shard of the batch.
    """

    _ids = itertools.count()

    def __init__(
        self, fn: Callable[..., Any], name: str, mesh: Mesh | None = None, **jit_kwargs: Any
    ) -> None:
        self._jit = jax.jit(fn, **jit_kwargs)
        self._name = f"{name}-{next(self._ids)}"
        self._compiled: dict[Any, Any] = {}
        self._mesh = mesh

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with jax.set_mesh(self._mesh) if self._mesh is not None else contextlib.nullcontext():
            return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        if jax.process_count() == 1:
            return self._jit(*args, **kwargs)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        key = (
            treedef,
            tuple(
                (np.shape(x), getattr(x, "dtype", type(x)), getattr(x, "sharding", None))
                for x in leaves
            ),
        )
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._jit.lower(*args, **kwargs).compile()
            sync(f"cnn_cases:{self._name}:{len(self._compiled)}")
            self._compiled[key] = compiled
        return compiled(*args, **kwargs)
