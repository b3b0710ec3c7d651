"""A study's config from its presets and `--config.KEY=VALUE` overrides (ml_collections'
`config_flags`, as flax's examples use), and the line that announces a run.

Launchers define the flag on absl's FLAGS (`experiments/common.py`); notebooks and tests call
`parse_config`, which parses the same flags on a private `FlagValues`. Presets and keys are
checked (`check_config_args`) before the flags are parsed, so a bad one is one line.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from types import ModuleType

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

ACCELERATOR_PRESET = "full"  # the full-scale preset of every study, for a GPU or TPU
COLAB_PRESET = "colab"  # every study's preset for one Colab session on its GPU (a T4)
PRESETS = ("cpu", "smoke", COLAB_PRESET, ACCELERATOR_PRESET)  # what every study offers


def backend() -> str:
    """'cpu', 'gpu' or 'tpu'."""
    return jax.default_backend()


def backend_preset() -> str:
    """`cpu` on a CPU backend, `full` on a GPU or TPU."""
    return "cpu" if backend() == "cpu" else ACCELERATOR_PRESET


def notebook_preset() -> str:
    """What a notebook runs by default: `cpu` on a CPU, `colab` on a GPU or TPU runtime."""
    return "cpu" if backend() == "cpu" else COLAB_PRESET


def resolve_preset(
    config_flag: flags.Flag, get_config: Callable[..., ml_collections.ConfigDict]
) -> tuple[ml_collections.ConfigDict, bool]:
    """The flag's config, and whether its preset was chosen here for the backend.

    A config file given without a preset (`--config=FILE`, the launchers' default) yields the
    cpu preset's keys with `preset=""`; the backend is known only once `jax.distributed` is set
    up, so the preset is chosen now and the command line's overrides are applied to it again.
    """
    config = config_flag.value
    if config.preset:
        return config, False
    resolved = get_config(backend_preset())
    resolved.update_from_flattened_dict(config_flags.get_override_values(config_flag))
    resolved.lock()
    return resolved, True


def define_config_flag(
    config_file: str, flag_values: flags.FlagValues, sys_argv: Sequence[str] | None = None
) -> flags.FlagHolder:
    """`--config=FILE[:PRESET]` (FILE's `get_config(PRESET)`), overridable by `--config.KEY=V`."""
    return config_flags.DEFINE_config_file(
        "config",
        config_file,
        "The config: a file with get_config(preset), e.g. experiments/resnet_depth.py:cpu; "
        "override any key with --config.KEY=VALUE.",
        flag_values=flag_values,
        lock_config=True,
        sys_argv=list(sys_argv) if sys_argv is not None else None,
    )


def parse_config(
    configs: ModuleType, preset: str = "", overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """The config a launcher builds from `--config=FILE:PRESET` and `overrides`, FILE being
    the config file `configs` (e.g. `experiments.resnet_depth`).

    `overrides` are the launcher's flags, e.g. ["--config.num_steps=500", "--config.seed=1"];
    values are typed by the config (a string for an int key is a one-line error). An empty
    `preset` follows the backend, as the launchers do.
    """
    flag = f"--config={configs.__file__}:{preset}" if preset else f"--config={configs.__file__}"
    argv = ["parse_config", *overrides]
    check_config_args([flag, *overrides], configs.get_config)
    fv = flags.FlagValues()
    try:
        define_config_flag(flag.removeprefix("--config="), fv, argv)
        fv(argv)
    except (flags.Error, AttributeError, KeyError) as e:
        raise ValueError(first_line(e)) from None
    return resolve_preset(fv["config"], configs.get_config)[0]


def check_config_args(
    argv: Sequence[str], get_config: Callable[..., ml_collections.ConfigDict]
) -> None:
    """One-line ValueError for an unknown preset in `--config=FILE:PRESET` or an unknown key
    in `--config.KEY=VALUE` (named, with the nearest valid key), before any flag is parsed."""
    preset = None
    for arg in argv:
        if arg.startswith("--config=") and ":" in arg:
            preset = arg.rsplit(":", 1)[1]
    config = get_config(preset or None)  # raises for an unknown preset
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg.removeprefix("--config.").split("=", 1)[0]
        node = config
        for part in path.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                keys = list(node) if isinstance(node, ml_collections.ConfigDict) else []
                near = difflib.get_close_matches(part, keys)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(
                    f"unknown config key {path!r}{hint}; valid keys: " + ", ".join(sorted(keys))
                )
            node = node[part]


def resolve_config_path(argv: Sequence[str], root: str) -> list[str]:
    """`argv` with a relative `--config=FILE[:PRESET]` that is not found here resolved
    against `root` (the directory that holds experiments/); a one-line ValueError if it is in
    neither."""
    out = []
    for arg in argv:
        if arg.startswith("--config=") and not arg.startswith("--config=/"):
            path, _, preset = arg.removeprefix("--config=").partition(":")
            if not os.path.exists(path):
                there = os.path.join(root, path)
                if not os.path.exists(there):
                    raise ValueError(
                        f"config file {path!r} not found in {os.getcwd()!r} nor in {root!r}"
                    )
                arg = f"--config={there}" + (f":{preset}" if preset else "")
        out.append(arg)
    return out


def first_line(e: Exception) -> str:
    """The first line of a flag error (a value of the wrong type, say)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else repr(e)


def announce(
    preset: str,
    automatic: bool,
    expected_minutes: float,
    workdir: str,
    launcher: str = "LAUNCHER",
) -> None:
    """One line before a run: which preset (and why), its expected time, where output goes."""
    if jax.process_index() != 0:
        return
    why = (
        f" (chosen for the {backend()} backend; --config={launcher}:PRESET to change)"
        if automatic
        else ""
    )
    where = "a 2-core CPU" if backend() == "cpu" else "one " + backend().upper()
    if preset == COLAB_PRESET:
        where = "a T4-class GPU (an estimate from multiply-adds)"
    print(
        f"preset {preset}{why}; expected time about {expected_minutes:g} minutes on {where}; "
        f"workdir {workdir}",
        flush=True,
    )
