"""A benchmark whose model does not learn each task measures nothing (docs/design.md: models must learn
before methods are compared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.cell import run_cell
from benchmark.grid import expand_grid
from benchmark.results import FINISHED


@pytest.mark.slow
def test_model_learns_each_task_forgets_without_memory_and_recovers_with_it() -> None:
    grid = expand_grid(
        {"tasks": ["split-shapes"], "methods": ["none", "random"], "retention": [0.05], "seeds": [0]},
        Path("learning.toml"),
    )
    results = {cell.method: run_cell(cell, "test") for cell in grid.cells}
    for method, result in results.items():
        assert result.status == FINISHED, result.error
        diagonal = np.diag(np.asarray(result.accuracy_matrix))
        assert diagonal.min() >= 0.9, f"{method} did not learn every task: {diagonal}"
    assert results["none"].final_average_accuracy <= 0.3
    assert results["random"].final_average_accuracy >= results["none"].final_average_accuracy + 0.2
