"""A cell that raises is recorded as failed with its error; the grid goes on; --retry-failed reruns it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.cli import main

GRID = """
name = "failing"
tasks = ["split-shapes"]
methods = ["none", "random"]
retention = [0.1]
seeds = [0]
[train]
epochs = 1
device = "{device}"
[task_params.split-shapes]
train_per_class = 8
test_per_class = 4
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA to make cells fail")
def test_failed_cells_are_recorded_and_retried_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "failing.toml"
    grid.write_text(GRID.format(device="cuda"))
    args = [
        "run",
        str(grid),
        "--results",
        str(tmp_path / "results"),
        "--no-progress",
        "--no-report",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'ml.db'}",
    ]
    assert main(args) == 1
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "failing" / "cells").glob("*.json")]
    assert len(records) == 2
    assert all(r["status"] == "failed" and "CUDA is not available" in r["error"] for r in records)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}")

    def cell_runs() -> list:
        runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
        return [run for run in runs if run.data.tags["benchmark.kind"] == "cell"]

    assert sorted(run.info.status for run in cell_runs()) == ["FAILED", "FAILED"]
    capsys.readouterr()
    # A plain rerun leaves failed cells alone, says how to retry them, and still exits 1.
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2 already done, 0 run" in out and "--retry-failed" in out
    # --retry-failed reruns exactly those; still failing, still recorded once each.
    assert main([*args, "--retry-failed"]) == 1
    assert len(list((tmp_path / "results" / "failing" / "cells").glob("*.json"))) == 2
    assert sorted(run.info.status for run in cell_runs()) == ["FAILED", "FAILED"]  # the retry's, alone
