"""Resolves the project's install for every target platform and Python, from wheels only.

    python scripts/check_platforms.py                      # every target, Python 3.11-3.13
    python scripts/check_platforms.py --python=3.13 --target=macos-arm64,linux-aarch64

Prints one line per target and Python: OK with the versions that matter, or FAIL with the
resolver's reason. The requirements are the project's own: setup.cfg's install_requires and
the target's extras, and pyproject.toml's build requirements (the install builds the package
on the target). They are resolved by `uv pip compile --python-platform`, which evaluates
the environment markers of every dependency for the target; `pip install --dry-run
--platform` matches wheel tags for the target but evaluates markers for the machine it runs
on. TFDS depends on `promise`, published only as source: its (pure Python) wheel is built
once first. Needs uv (`pip install uv`) and access to the package index.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONS = ("3.11", "3.12", "3.13")
# The glibc of Ubuntu 22.04 (and Colab); macOS 14 (the `MACOSX_DEPLOYMENT_TARGET` for uv).
LINUX_X86, LINUX_ARM = "x86_64-manylinux_2_35", "aarch64-manylinux_2_35"
MACOS, MACOS_VERSION = "aarch64-apple-darwin", "14.0"
# Shown for each resolution, where present.
KEY_PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "libtpu",
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-datasets",
    "grain",
    "array-record",
    "onednn-cpu-gomp",
)


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    what: str
    platform: str
    extras: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"pip install -e '.{extras}'" if extras else "pip install -e ."


TARGETS = (
    Target("linux-x86_64", "Linux x86_64, CPU (oneDNN kernels)", LINUX_X86, ("tf",)),
    Target("linux-aarch64", "Linux aarch64, CPU (XLA's kernels)", LINUX_ARM, ("tf",)),
    Target("macos-arm64", "macOS 14+ arm64, CPU (XLA's kernels)", MACOS, ("tf",)),
    Target("cuda12", "Linux x86_64, NVIDIA GPU, CUDA 12", LINUX_X86, ("cuda12", "tf")),
    Target("cuda13", "Linux x86_64, NVIDIA GPU, CUDA 13", LINUX_X86, ("cuda13", "tf")),
    Target("tpu", "Linux x86_64, Cloud TPU", LINUX_X86, ("tpu", "tf")),
    # Without TensorFlow: prepared datasets only.
    Target("linux-x86_64-notf", "Linux x86_64, CPU, without TensorFlow", LINUX_X86),
    Target("linux-aarch64-notf", "Linux aarch64, CPU, without TensorFlow", LINUX_ARM),
    Target("macos-arm64-notf", "macOS 14+ arm64, CPU, without TensorFlow", MACOS),
)


def requirements(extras: tuple[str, ...]) -> list[str]:
    """The requirement lines (markers kept) of an install with `extras`, build included."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += cfg["options.extras_require"][extra].splitlines()
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        lines += tomllib.load(f)["build-system"]["requires"]
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def uv() -> list[str]:
    """The uv command, or SystemExit with how to get it."""
    if shutil.which("uv"):
        return ["uv"]
    try:
        import uv as uv_module  # the PyPI package ships the binary

        return [uv_module.find_uv_bin()]
    except ImportError:
        raise SystemExit("error: needs uv (pip install uv)") from None


def build_promise(wheel_dir: str) -> None:
    """TFDS's `promise` is published as source only: build its pure-Python wheel once."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "promise", "-w", wheel_dir],
        check=True,
    )


def resolve(target: Target, python: str, wheel_dir: str) -> tuple[bool, str]:
    """(resolved, the key versions or the resolver's reason)."""
    with tempfile.NamedTemporaryFile("w", suffix=".in", delete=False) as f:
        f.write("\n".join(requirements(target.extras)) + "\n")
    try:
        proc = subprocess.run(
            [
                *uv(),
                "pip",
                "compile",
                f.name,
                "--python-version",
                python,
                "--python-platform",
                target.platform,
                "--only-binary",
                ":all:",
                "--find-links",
                wheel_dir,
                "--no-header",
                "--no-annotate",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "MACOSX_DEPLOYMENT_TARGET": MACOS_VERSION},
            timeout=600,
        )
    finally:
        os.remove(f.name)
    if proc.returncode != 0:
        reason = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        return False, " ".join(reason)[:400]
    pins = dict(
        line.split("==", 1) for line in proc.stdout.splitlines() if "==" in line and line[0] != "#"
    )
    shown = [f"{k} {pins[k]}" for k in KEY_PACKAGES if k in pins]
    return True, f"{len(pins)} packages: " + ", ".join(shown)


def define_flags(flag_values: flags.FlagValues) -> None:
    """--python and --target, on `flag_values`; an unknown target fails the parse."""
    flags.DEFINE_string(
        "python", ",".join(PYTHONS), "comma-separated versions", flag_values=flag_values
    )
    flags.DEFINE_string(
        "target", "", "comma-separated names (default: all)", flag_values=flag_values
    )
    flags.register_validator("target", _check_targets, flag_values=flag_values)


def _check_targets(value: str) -> bool:
    unknown = {t for t in value.split(",") if t} - {t.name for t in TARGETS}
    if unknown:
        valid = ", ".join(t.name for t in TARGETS)
        raise flags.ValidationError(f"unknown target {sorted(unknown)[0]!r} (valid: {valid})")
    return True


def run(flag_values: flags.FlagValues) -> int:
    """Resolves every target the parsed `flag_values` name; 1 if any failed, else 0."""
    names = [t for t in flag_values.target.split(",") if t]
    targets = [t for t in TARGETS if not names or t.name in names]
    failed = 0
    with tempfile.TemporaryDirectory() as wheel_dir:
        build_promise(wheel_dir)
        for target in targets:
            for python in flag_values.python.split(","):
                ok, detail = resolve(target, python, wheel_dir)
                failed += not ok
                print(
                    f"{'OK  ' if ok else 'FAIL'} {target.name:<18} py{python}  "
                    f"{target.command:<28} {detail}",
                    flush=True,
                )
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(lambda argv: run(flags.FLAGS))
