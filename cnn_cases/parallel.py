"""Data parallelism with jit + Mesh + NamedSharding, on one or several hosts.

The batch is sharded on the `data` axis of a mesh over every device of every
process; parameters and optimiser state are replicated. Under jit, BatchNorm
statistics are taken over the global batch, so no `axis_name` is needed.
"""

from __future__ import annotations

import os
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


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, what: str = "batch_size") -> None:
    """The global batch must split evenly over devices and processes."""
    n = jax.device_count()
    if batch_size % n:
        raise ValueError(
            f"{what}={batch_size} does not divide evenly over {n} devices; use a multiple of {n}"
        )


def global_batch(mesh: Mesh, *local: np.ndarray) -> tuple[jax.Array, ...]:
    """Assembles each process's slice of the batch into one global array sharded on `data`."""
    sharding = data_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, x) for x in local)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places a host pytree on every device; each process passes the same values."""
    sharding = replicated(mesh)

    def put(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree_util.tree_map(put, jax.device_get(tree))
