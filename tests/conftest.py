"""Shared fixtures: a tiny task stream and a briefly trained model, both seconds to make."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
REPO_ROOT = Path(__file__).resolve().parent.parent
GRIDS = REPO_ROOT / "grids"


def every_memory_method() -> list[str]:
    """Each sample selector that keeps a memory, then each token selector behind ``random``."""
    from benchmark import registry

    samples = [n for n in registry.names("sample_selector") if n not in ("none", "joint")]
    return [*samples, *(f"random+{t}" for t in registry.names("token_selector"))]


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def write_cifar_fixture(root: Path, classes: int = 20, per_class: int = 3) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(classes), per_class).tolist()
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with (folder / split).open("wb") as stream:
            pickle.dump({b"data": data, b"fine_labels": labels, b"filenames": [b"x"] * len(labels)}, stream)
    return folder


def clone_working_tree(destination: Path) -> None:
    """A ``git clone`` of this checkout with its uncommitted changes committed in the clone, so the
    test runs the code as it is on disk."""
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(destination)], check=True)
    diff = subprocess.run(
        ["git", "diff", "HEAD", "--binary"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=destination, input=diff, check=True)
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, untracked):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO_ROOT / name).read_bytes())
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", *identity, "add", "-A"], cwd=destination, check=True)
    subprocess.run(
        ["git", *identity, "commit", "-q", "--allow-empty", "-m", "working tree"], cwd=destination, check=True
    )


def finished_record(cell: Any) -> dict:
    """A minimal valid ``finished`` record of ``cell`` (``results.record_problem`` accepts it)."""
    return {
        "config": cell.to_dict(),
        "config_hash": cell.config_hash,
        "status": "finished",
        "accuracy_matrix": [[0.5, 0.5], [0.5, 0.5]],
        "final_average_accuracy": 0.5,
        "wall_seconds": 1.0,
    }


def tiny_grid(name: str, extra: str = "") -> str:
    """A two-cell split-shapes grid (``none`` and ``random+random``) that runs in seconds, ``extra``
    TOML appended (a ``[[variant]]``, say)."""
    return f"""
name = "{name}"
tasks = ["split-shapes"]
methods = ["none", "random+random"]
retention = [0.1]
seeds = [0]
token_fraction = [0.5]
[train]
epochs = 1
batch_size = 16
replay_batch_size = 16
[task_params.split-shapes]
train_per_class = 8
test_per_class = 4
{extra}"""
