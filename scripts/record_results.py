"""Copies a finished study's result files into docs/results/<name>/ with how they were made.

    python -m scripts.record_results --workdir=runs/history --name=history \\
        --command="python -m experiments.history --config=experiments/history.py:cpu ..." \\
        --commit=fbf95b8 --wall_time="43m12s"

Copies results.json, curves.csv and machine.json (where the study wrote one) and the study's
figure, and writes run.json: the command exactly as it ran, the commit it ran at, the wall
time, and the machine (CPU model, family and core count from /proc/cpuinfo, jax's backend).
The docs' tables are read from these files, so a number lives in one place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "the study's finished workdir", required=True)
_NAME = flags.DEFINE_string("name", None, "folder under docs/results", required=True)
_COMMAND = flags.DEFINE_string("command", None, "the command exactly as it ran", required=True)
_COMMIT = flags.DEFINE_string("commit", None, "the commit it ran at", required=True)
_WALL = flags.DEFINE_string("wall_time", None, "wall-clock time of the run", required=True)
_NOTE = flags.DEFINE_string("note", "", "what else a reader must know (load, resumes)")
_OUT = flags.DEFINE_string("out", "docs/results", "where the folders go")

FILES = ("results.json", "curves.csv", "machine.json")


def cpu() -> dict[str, str | int | None]:
    """Model name and family of this machine's CPU, and its core count."""
    info: dict[str, str | int | None] = {"model": None, "family": None, "cores": os.cpu_count()}
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and info["model"] is None:
                    info["model"] = value.strip()
                if key.strip() == "cpu family" and info["family"] is None:
                    info["family"] = int(value)
    return info


def main(argv: Sequence[str]) -> None:
    del argv
    import jax

    out = os.path.join(_OUT.value, _NAME.value)
    os.makedirs(out, exist_ok=True)
    copied = []
    for name in os.listdir(_WORKDIR.value):
        if name in FILES or name.endswith(".png"):
            shutil.copy(os.path.join(_WORKDIR.value, name), os.path.join(out, name))
            copied.append(name)
    if "results.json" not in copied:
        raise SystemExit(f"error: {_WORKDIR.value!r} holds no results.json: has the run finished?")
    run = {
        "command": _COMMAND.value,
        "commit": _COMMIT.value,
        "wall_time": _WALL.value,
        "cpu": cpu(),
        "backend": jax.default_backend(),
        "note": _NOTE.value,
        "files": sorted(copied),
    }
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(run, f, indent=2)
        f.write("\n")
    print(f"wrote {', '.join(sorted(copied))} and run.json to {out}")


if __name__ == "__main__":
    app.run(main)
