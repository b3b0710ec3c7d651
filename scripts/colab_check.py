"""Runs a notebook's install cell in a Colab-like environment and checks what it leaves.

    python scripts/colab_check.py --python=python3.13 [--notebook=resnet_depth] [--workdir=DIR]

1. Builds a virtual environment with Colab's GPU runtime packages at Colab's versions
   (`scripts/colab_gpu_runtime.txt`, from googlecolab/backend-info), the CUDA plugin
   included although there is no GPU here, and records `pip freeze` and `pip check`.
2. Clones this repository (its committed HEAD, as a user would) next to it.
3. Executes the notebook in that environment's kernel, from a folder outside the clone (as
   Colab's /content), with the install cell's `REPO` set to the clone and the smoke preset
   on synthetic data (offline).
4. Checks that jax, jaxlib and the CUDA plugin and pjrt have one version, that tensorflow,
   keras, torch and cnn_cases import in a fresh process, that `pip check` reports nothing it
   did not report before, and that the notebook ran without an error and wrote its results.

Prints each check and what changed in the environment; exits 1 if a check failed. Needs the
package index (the environment is about 8 GB, mostly CUDA libraries).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "scripts", "colab_gpu_runtime.txt")
JAX_FAMILY = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt")

_EXECUTE = """
import sys, nbclient, nbformat
path, out, repo = sys.argv[1:4]
nb = nbformat.read(path, as_version=4)
for cell in nb.cells:
    if cell.cell_type == "code" and 'REPO = ""  # <--' in cell.source:
        cell.source = cell.source.replace('REPO = ""', f"REPO = {repo!r}", 1)
try:
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3").execute()
finally:
    nbformat.write(nb, out)
"""

_IMPORTS = """
import importlib, json
out = {}
for name in ("tensorflow", "keras", "torch", "torchvision", "jax", "flax", "cnn_cases"):
    try:
        out[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as e:
        out[name] = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
import jax
out["jax backend"] = jax.default_backend()
print(json.dumps(out))
"""


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=kw.pop("check", True), text=True, **kw)


def freeze(py: str) -> dict[str, str]:
    out = sh(py, "-m", "pip", "freeze", "--all", capture_output=True).stdout
    pins = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if not sep:
            name, _, version = line.partition(" @ ")
        pins[name.lower().replace("_", "-")] = version
    return pins


def pip_check(py: str) -> set[str]:
    out = sh(py, "-m", "pip", "check", capture_output=True, check=False).stdout
    return {line for line in out.splitlines() if line.strip() and "No broken" not in line}


def define_flags(flag_values: flags.FlagValues) -> None:
    """--python, --notebook and --workdir, on `flag_values`."""
    fv = flag_values
    flags.DEFINE_string("python", "python3.13", "a Python 3.13 interpreter", flag_values=fv)
    flags.DEFINE_string("notebook", "resnet_depth", "notebooks/NAME.ipynb", flag_values=fv)
    flags.DEFINE_string("workdir", "", "where to build (default: a temporary dir)", flag_values=fv)


def build_environment(python: str, venv: str) -> tuple[dict[str, str], set[str]]:
    """Colab's runtime packages in a fresh `venv`; its `pip freeze` and `pip check` before."""
    py = os.path.join(venv, "bin", "python")
    print(f"== building the Colab-like environment in {venv}", flush=True)
    if not os.path.exists(py):
        sh(python, "-m", "venv", venv)
        sh(py, "-m", "pip", "install", "-q", "pip==24.1.2")
        sh(py, "-m", "pip", "install", "-q", "-r", RUNTIME)
    before, broken_before = freeze(py), pip_check(py)
    print(f"   {len(before)} packages; pip check before: {len(broken_before)} line(s)")
    for line in sorted(broken_before):
        print(f"     {line}")
    return before, broken_before


def clone_repository(clone: str) -> None:
    """The repository's committed HEAD, cloned to `clone` (once)."""
    print(f"== cloning {ROOT} into {clone}", flush=True)
    if not os.path.isdir(clone):
        sh("git", "clone", "-q", ROOT, clone)
    head = sh("git", "-C", clone, "rev-parse", "--short", "HEAD", capture_output=True).stdout
    print(f"   at {head.strip()}")


def notebook_env(notebook: str, content: str) -> dict[str, str]:
    """The notebook's environment: the smoke preset on synthetic data, offline."""
    env = {
        **os.environ,
        "CNN_CASES_PRESET": "smoke",
        "CNN_CASES_FLAGS": "--config.dataset=synthetic --config.depths=8",
        "CNN_CASES_WORKDIR": os.path.join(content, "runs"),
        "CNN_CASES_OFFLINE": "1",
    }
    env.pop("PYTHONPATH", None)
    if notebook != "resnet_depth":
        env["CNN_CASES_FLAGS"] = "--config.dataset=synthetic"
    return env


def execute_notebook(
    py: str, notebook: str, clone: str, content: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Runs the clone's notebook from `content`; the process and the error outputs."""
    print(f"== executing notebooks/{notebook}.ipynb with REPO={clone!r}", flush=True)
    os.makedirs(content, exist_ok=True)
    out_nb = os.path.join(content, f"{notebook}.executed.ipynb")
    nb_path = os.path.join(clone, "notebooks", f"{notebook}.ipynb")
    proc = sh(py, "-c", _EXECUTE, nb_path, out_nb, clone, cwd=content, env=env, check=False,
              capture_output=True)  # fmt: skip
    with open(out_nb) as f:
        executed = json.load(f)
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    return proc, [o for o in outputs if o.get("output_type") == "error"]


def run(args: flags.FlagValues) -> int:
    """Builds, executes and checks with the parsed flag values `args`; 1 if a check failed."""
    work = args.workdir or tempfile.mkdtemp(prefix="colab_check_")
    os.makedirs(work, exist_ok=True)
    venv, clone, content = (os.path.join(work, d) for d in ("venv", "clone", "content"))
    py = os.path.join(venv, "bin", "python")
    before, broken_before = build_environment(args.python, venv)
    clone_repository(clone)
    env = notebook_env(args.notebook, content)
    proc, errors = execute_notebook(py, args.notebook, clone, content, env)

    after, broken_after = freeze(py), pip_check(py)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    print(f"== the install changed {len(changed)} package(s):")
    for k in changed:
        print(f"     {k}: {before.get(k, '-')} -> {after.get(k, '-')}")
    imports = json.loads(
        sh(py, "-c", _IMPORTS, cwd=content, capture_output=True, env=env).stdout.splitlines()[-1]
    )

    checks = {
        "jax, jaxlib, CUDA plugin and pjrt at one version": len({after.get(k) for k in JAX_FAMILY})
        == 1,
        "tensorflow, keras, torch, cnn_cases import": not any(
            str(v).startswith("FAILED") for v in imports.values()
        ),
        "pip check reports nothing new": not (broken_after - broken_before),
        "the notebook ran without an error": proc.returncode == 0 and not errors,
        "the notebook wrote results.json": os.path.exists(
            os.path.join(content, "runs", args.notebook, "results.json")
        ),
    }
    print("== " + ", ".join(f"{k} {after.get(k, '-')}" for k in JAX_FAMILY))
    print("== imports in a fresh process: " + ", ".join(f"{k} {v}" for k, v in imports.items()))
    for line in sorted(broken_after - broken_before):
        print(f"   new in pip check: {line}")
    for e in errors:
        print(f"   notebook error: {e.get('ename')}: {e.get('evalue')}")
    if proc.returncode:
        print(proc.stderr[-3000:])
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(lambda argv: run(flags.FLAGS))
