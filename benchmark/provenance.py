"""Where a number came from: suite commit, package versions, device."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "timm", "numpy", "scikit-learn", "mlflow", "pandas")
# What decides a cell's numbers; an edited README or report does not make a record "+dirty".
CODE_PATHS = ("benchmark", "methods", "tasks", "grids", "weights", "pyproject.toml")
REPO_ROOT = Path(__file__).resolve().parent.parent


def suite_commit() -> str:
    """The checkout's commit hash, ``+dirty`` if a tracked file of ``CODE_PATHS`` differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def provenance(device: torch.device, commit: str) -> dict[str, Any]:
    return {"commit": commit, "versions": package_versions(), "device": device_name(device)}
