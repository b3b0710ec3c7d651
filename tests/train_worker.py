"""Runs a tiny training in a fresh process (device count and multi-host set before jax starts).

python tests/train_worker.py OUT.npz WORKDIR [--devices N] [--kernels onednn|xla] [--seeds S]
                             [--process_id I --num_processes P --coordinator HOST:PORT]
                             [--dataset NAME --data_dir DIR --pipeline stream]
"""

import argparse
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("workdir")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--kernels", default="onednn", help="convolutions and BatchNorm")
    ap.add_argument("--seeds", type=int, default=1, help="seeds trained as one vmapped program")
    ap.add_argument("--process_id", type=int, default=None)
    ap.add_argument("--num_processes", type=int, default=None)
    ap.add_argument("--coordinator", default=None)
    ap.add_argument("--dataset", default="synthetic", help="with --data_dir: a prepared one")
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--pipeline", default="auto", help="auto, memory or stream")
    ap.add_argument(
        "--late_seconds", type=float, default=0.0, help="process 1 starts training this late"
    )
    args = ap.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"

    import jax
    import numpy as np

    from cnn_cases.engine import parallel, rundir, train
    from cnn_cases.kernels import library

    if args.coordinator:
        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    assert jax.device_count() == args.devices * (args.num_processes or 1), jax.devices()
    config = tiny_config(args.steps)
    config.kernels = args.kernels
    config.dataset, config.data_dir, config.pipeline = args.dataset, args.data_dir, args.pipeline
    # use_onednn falls back to XLA with a warning when the library is missing; not here.
    assert library.use_onednn(args.kernels) == (args.kernels == "onednn"), args.kernels
    if jax.process_index() == 1:
        time.sleep(args.late_seconds)  # a peer that loads or compiles slower than the others
    config.seeds = args.seeds
    result = train.train(config, args.workdir)[0]
    state = rundir.restore_checkpoint(args.workdir)
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_leaves_with_path(
            {"params": state["params"], "batch_stats": state["batch_stats"]}
        )
    }
    if jax.process_index() == 0:
        np.savez(args.out, test_error=result.test_error, **flat)
    print("devices", jax.device_count(), "processes", jax.process_count(), file=sys.stderr)


def tiny_config(steps: int):
    from cnn_cases.engine import defaults

    c = defaults.default_config()
    c.model = "resnet8"
    c.model_kwargs.width = 4
    c.dataset = "synthetic"
    c.batch_size = 16
    c.eval_batch_size = 64
    c.num_steps = steps
    c.lr_boundaries = (2,)
    c.log_every = 1
    c.checkpoint_every = 0
    c.final_train_eval_examples = 128
    c.final_test_eval_examples = 128
    c.verbose = False
    return c


if __name__ == "__main__":
    main()
