"""scripts/check_platforms.py reads the project's own requirements (no network here)."""

import pytest
from absl import flags

from scripts import check_platforms


def test_requirements_are_setup_cfg_s_with_the_extras_and_the_build():
    base = check_platforms.requirements(())
    assert any(r.startswith("jax>=") for r in base) and any(r.startswith("grain") for r in base)
    assert not any(r.startswith("tensorflow-cpu") for r in base)  # TensorFlow is an extra
    assert any(r.startswith("jaxlib") for r in base)  # pyproject.toml's build requirements
    tf = check_platforms.requirements(("tf",))
    pins = {r.split(";")[0].strip() for r in tf}
    assert pins >= {"tensorflow-cpu>=2.21,<2.22", "tensorflow>=2.20,<2.22"}
    gpu = check_platforms.requirements(("cuda12", "tf"))
    assert any(r.startswith("jax[cuda12]") for r in gpu) and len(gpu) == len(tf) + 1


def test_every_target_names_its_extras_in_its_command():
    for t in check_platforms.TARGETS:
        assert all(e in t.command for e in t.extras) and t.command.startswith("pip install -e")
        check_platforms.requirements(t.extras)  # every extra exists in setup.cfg


def _parse(argv):
    values = flags.FlagValues()
    check_platforms.define_flags(values)
    values(["check_platforms", *argv])
    return values


def test_unknown_target_is_one_line():
    with pytest.raises(
        flags.IllegalFlagValueError, match=r"unknown target 'windows' \(valid: linux-x86_64"
    ):
        _parse(["--target=linux-x86_64,windows"])
    values = _parse(["--target=macos-arm64"])
    assert (values.target, values.python) == ("macos-arm64", "3.11,3.12,3.13")
