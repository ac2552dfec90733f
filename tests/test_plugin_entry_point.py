"""A selector added through the entry-point group ``core_tokenset_bench.plugins`` (a throwaway
dist-info on PYTHONPATH, nothing installed) is listed, runs in a grid, and reaches the report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_cli import run_cli

PLUGIN_MODULE = '''
"""A throwaway sample selector registered from outside the suite."""
from typing import ClassVar

import numpy as np

from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from methods.base import SelectorBase


@registry.register("sample_selector", "throwaway")
class Throwaway(SelectorBase):
    """Throwaway plugin selector: the first k samples of the pool."""

    needs_grads: ClassVar[bool] = False

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        return Selection.of(np.arange(min(budget, len(pool)), dtype=np.int64))
'''

GRID = """
name = "plugin-check"
tasks = ["split-shapes"]
methods = ["throwaway"]
retention = [0.1]
seeds = [0]

[train]
epochs = 1
batch_size = 16
replay_batch_size = 16

[task_params.split-shapes]
train_per_class = 20
test_per_class = 10
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    dist_info = plugins / "throwaway_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (plugins / "throwaway_plugin.py").write_text(PLUGIN_MODULE)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[core_tokenset_bench.plugins]\nthrowaway = throwaway_plugin\n"
    )
    return plugins


def run_benchmark(*args: str, plugins: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, path_before=plugins)


@pytest.mark.slow  # three CLI subprocesses and a one-cell grid: about 40 s on 2 CPUs
def test_entry_point_selector_is_listed_run_and_reported(plugin_path: Path, tmp_path: Path) -> None:
    listed = run_benchmark("list", plugins=plugin_path, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "throwaway" in line)
    assert "Throwaway plugin selector" in line

    grid = tmp_path / "plugin-check.toml"
    grid.write_text(GRID)
    ran = run_benchmark(
        "run",
        str(grid),
        "--results",
        str(tmp_path / "results"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlruns.db'}",
        "--no-report",
        "--no-progress",
        plugins=plugin_path,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]

    out = tmp_path / "report"
    reported = run_benchmark(
        "report",
        "--results",
        str(tmp_path / "results" / "plugin-check"),
        "--out",
        str(out),
        plugins=plugin_path,
        cwd=tmp_path,
    )
    assert reported.returncode == 0, reported.stderr[-3000:]
    rows = [line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("|")]
    assert any("| throwaway " in row and "| coreset " in row for row in rows)
    assert "Grid plugin-check; 1 seeds (0)" in (out / "leaderboard.md").read_text()
    page = (out / "index.html").read_text()
    assert "Throwaway plugin selector: the first k samples of the pool." in page
    assert (out / "attribution_gallery.png").exists()  # split-shapes has masks
