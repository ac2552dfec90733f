"""The road a user walks: smoke grid → cell records, MLflow runs, tables, figure; resume; determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.cell import run_cell
from benchmark.cli import main
from benchmark.grid import load_grid
from benchmark.results import FINISHED
from tests.conftest import GRIDS


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("smoke")
    paths = {"results": root / "results", "reports": root / "reports", "db": root / "mlruns" / "mlflow.db"}
    status = main(
        [
            "run",
            str(GRIDS / "smoke.toml"),
            "--results",
            str(paths["results"]),
            "--no-progress",
            "--tracking-uri",
            f"sqlite:///{paths['db']}",
            "--report-dir",
            str(paths["reports"]),
        ]
    )
    assert status == 0
    return paths


def test_every_cell_has_a_finished_record(smoke_run: dict[str, Path]) -> None:
    grid = load_grid(GRIDS / "smoke.toml")
    records = {
        p.stem: json.loads(p.read_text()) for p in (smoke_run["results"] / "smoke" / "cells").glob("*.json")
    }
    assert set(records) == {cell.config_hash for cell in grid.cells}
    for record in records.values():
        assert record["status"] == FINISHED, record["error"]
        matrix = record["accuracy_matrix"]
        assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
        assert record["bytes_used"] <= record["bytes_allowed"]
        assert record["provenance"]["versions"]["torch"]
        assert record["config"]["task"] == "split-shapes"
    stored = [r for r in records.values() if r["config"]["retention"] is not None]
    assert all(r["bytes_used"] > 0 for r in stored)
    tokenset = next(r for r in records.values() if r["config"]["token_selector"] == "random")
    coreset = next(r for r in records.values() if r["config"]["method"] == "random")
    # At equal bytes a core tokenset at t = 0.5 stores more samples than the coreset.
    assert tokenset["samples_per_task"][0] > coreset["samples_per_task"][0]
    assert tokenset["attribution"] is not None and 0.0 <= tokenset["attribution"]["precision"] <= 1.0


def test_every_registered_selector_ran_in_the_smoke_grid(smoke_run: dict[str, Path]) -> None:
    from benchmark import registry

    records = [json.loads(p.read_text()) for p in (smoke_run["results"] / "smoke" / "cells").glob("*.json")]
    sample_selectors = {r["config"]["sample_selector"] for r in records}
    token_selectors = {r["config"]["token_selector"] for r in records} - {None}
    assert sample_selectors == set(registry.names("sample_selector"))
    assert token_selectors == set(registry.names("token_selector"))
    oracle = next(r for r in records if r["config"]["token_selector"] == "oracle")
    # The ground-truth mask is an upper bound on attribution precision.
    assert oracle["attribution"]["pointing_game"] == 1.0


def test_mlflow_has_one_run_per_cell(smoke_run: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run['db']}")
    experiment = client.get_experiment_by_name("smoke")
    found = client.search_runs([experiment.experiment_id])
    runs = [r for r in found if r.data.tags["benchmark.kind"] == "cell"]
    assert len(runs) == len(load_grid(GRIDS / "smoke.toml").cells)
    assert [r.data.tags["benchmark.kind"] for r in found if r not in runs] == ["grid"]  # their parent
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "final_average_accuracy" in run.data.metrics
    assert run.data.params["task"] == "split-shapes"
    history = client.get_metric_history(run.info.run_id, "accuracy_seen_tasks")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "record")]
    assert any(path.endswith(".json") for path in artifacts)
    masked = [r for r in runs if r.data.params.get("train.replay") == "mask"]
    assert len(masked) == 1 and "partial_random_t0.25" in masked[0].data.metrics
    stored = client.get_metric_history(masked[0].info.run_id, "tokens_stored")
    assert sorted(m.step for m in stored) == [0, 1, 2, 3]


def test_report_files_exist(smoke_run: dict[str, Path]) -> None:
    reports = smoke_run["reports"]
    assert (reports / "leaderboard.md").read_text().count("|") > 10
    assert "\\toprule" in (reports / "leaderboard.tex").read_text()
    pngs = list(reports.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert list(reports.glob("*.pdf"))


def test_rerun_skips_every_cell(smoke_run: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cells = smoke_run["results"] / "smoke" / "cells"
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    status = main(
        [
            "run",
            str(GRIDS / "smoke.toml"),
            "--results",
            str(smoke_run["results"]),
            "--no-progress",
            "--tracking-uri",
            f"sqlite:///{smoke_run['db']}",
            "--no-report",
        ]
    )
    assert status == 0
    assert f"{len(before)} already done, 0 run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")} == before


def test_same_cell_twice_gives_identical_metrics() -> None:
    grid = load_grid(GRIDS / "smoke.toml")
    cell = next(c for c in grid.cells if c.token_selector == "random")
    first, second = run_cell(cell, "test"), run_cell(cell, "test")
    assert first.status == FINISHED, first.error
    assert first.accuracy_matrix == second.accuracy_matrix
    assert first.samples_per_task == second.samples_per_task
    assert first.attribution == second.attribution
    assert first.bytes_used == second.bytes_used
