"""scripts/check_platforms.py reads the project's own requirements (no network here)."""

import pytest

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


def test_unknown_target_is_one_line():
    with pytest.raises(SystemExit, match=r"unknown target 'windows' \(valid: linux-x86_64"):
        check_platforms.main(["--target=windows"])
