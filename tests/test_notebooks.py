"""Every notebook runs top to bottom (smoke preset, synthetic data, offline) so none can rot."""

import glob
import os

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))
EXPERIMENTS = (
    "resnet_depth",
    "inception_bottleneck",
    "googlenet_aux",
    "lenet5",
    "why_resnets",
    "history",
)


def test_there_is_a_tour_and_one_notebook_per_experiment():
    names = {os.path.basename(p).removesuffix(".ipynb") for p in NOTEBOOKS}
    assert names >= {"tour", "pretrained", *EXPERIMENTS}


def _install_cell(path: str) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and "%pip install" in c.source)


def test_every_notebook_installs_alike_from_one_marked_variable():
    cells = {_install_cell(p) for p in NOTEBOOKS}
    assert len(cells) == 1  # one install cell, copied into every notebook
    cell = cells.pop()
    assert cell.count('REPO = ""  # <--') == 1 and "jax-cuda12-plugin" in cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p))
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    # The kernel inherits this environment: CPU only, smoke preset, synthetic data, tmp workdir.
    monkeypatch.setenv("CNN_CASES_PRESET", "smoke")
    flags = ["--config.dataset=synthetic"]
    monkeypatch.setenv("CNN_CASES_WORKDIR", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("CNN_CASES_OFFLINE", "1")  # pretrained.ipynb: random weights, no download
    name = os.path.basename(path).removesuffix(".ipynb")
    if name == "resnet_depth":
        flags.append("--config.depths=8")  # one plain and one residual net
    if name == "history":
        flags.append("--config.nets=lenet5")  # one net: tests/test_history.py runs the smoke set
    monkeypatch.setenv("CNN_CASES_FLAGS", " ".join(flags))
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "%pip install" in source and 'find_spec("cnn_cases") is None' in source
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    if name in EXPERIMENTS:
        assert any("image/png" in o.get("data", {}) for o in outputs)
        assert os.path.exists(tmp_path / name / "results.json")
