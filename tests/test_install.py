"""The suite installs from a checkout only: ``pip install -e .`` works, ``pip install .`` (a wheel)
stops with one sentence saying so (README, "Installing")."""

from __future__ import annotations

import importlib.util
import site
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, clone_working_tree


def backend() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("checkout_only", REPO_ROOT / "install" / "checkout_only.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_backend_refuses_a_wheel_and_builds_an_editable_install_as_setuptools_does() -> None:
    from setuptools import build_meta

    system = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]
    assert (system["build-backend"], system["backend-path"]) == ("checkout_only", ["install"])
    checkout_only = backend()
    for hook in (checkout_only.build_wheel, checkout_only.get_requires_for_build_wheel):
        with pytest.raises(SystemExit, match="runs from a checkout") as stopped:
            hook("dist") if hook is checkout_only.build_wheel else hook()
        assert "`pip install -e .`" in str(stopped.value)
    assert checkout_only.build_editable is build_meta.build_editable
    assert not hasattr(checkout_only, "prepare_metadata_for_build_wheel")  # pip would reach build_wheel


@pytest.mark.slow  # a scratch virtualenv and two pip runs, no download: about 30 s on 2 CPUs
def test_pip_refuses_a_wheel_and_an_editable_install_runs_from_another_directory(tmp_path: Path) -> None:
    clone = tmp_path / "core-tokenset-bench"
    clone_working_tree(clone)
    scratch = tmp_path / "scratch"
    # A bare venv that borrows this environment's packages (torch, pip, setuptools) through a .pth:
    # nothing is downloaded, nothing installed here is touched, and the suite itself is not visible.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(scratch)], check=True)
    (purelib,) = (scratch / "lib").glob("python3*/site-packages")
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = str(scratch / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": "Agg"}
    absent = subprocess.run([python, "-c", "import benchmark"], cwd=elsewhere, env=env, capture_output=True)
    assert absent.returncode != 0  # the borrowed packages do not bring the suite along

    wheel = subprocess.run([*pip, str(clone)], capture_output=True, text=True, env=env)
    assert wheel.returncode != 0
    assert "error: core-tokenset-bench runs from a checkout" in wheel.stdout + wheel.stderr

    editable = subprocess.run([*pip, "-e", str(clone)], capture_output=True, text=True, env=env)
    assert editable.returncode == 0, editable.stdout[-2000:] + editable.stderr[-2000:]
    where = subprocess.run(
        [python, "-c", "import benchmark; print(benchmark.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip() == str(clone / "benchmark" / "__init__.py")
    # Grids and weights are found in the checkout from any working directory.
    planned = subprocess.run(
        [python, "-m", "benchmark", "run", "smoke", "--dry-run", "--results", "results"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "dry run: nothing was run" in planned.stdout
    assert not (elsewhere / "results").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    assert status.stdout == ""
