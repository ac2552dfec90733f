"""MLflow as a run's live view (issue 20): opened with MlflowClient and checked from end to end.

A parent run per grid run; a child run per cell, opened as the cell starts and ended from its
record with its real duration; each task's validation row logged as the task ends (the test
matrix comes with the record: test data is sealed until the cell's end); tags for
commit, versions, threads, device and config hash; unique names that tell a variant from its
base; the record, an accuracy-matrix figure and the grid's report as artifacts; and
``sync-mlflow`` filling a store from records without ever adding a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmark.cli import main
from benchmark.grid import load_grid
from tests.conftest import tiny_grid

GRID = tiny_grid("tracked", '[[variant]]\nmethods = ["random+random"]\ntrain = { replay = "mask" }\n')


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_by_kind(uri: str) -> dict[str, list[Any]]:
    client = client_for(uri)
    experiment = client.get_experiment_by_name("tracked")
    found: dict[str, list[Any]] = {"grid": [], "cell": []}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        found[run.data.tags["benchmark.kind"]].append(run)
    return found


def records(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_bytes()) for p in (results / "tracked" / "cells").glob("*.json")}


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_a_grid_run_shows_in_mlflow_as_it_ran(tmp_path: Path, jobs: str) -> None:
    grid = tmp_path / "tracked.toml"
    grid.write_text(GRID)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    results, report = tmp_path / "results", tmp_path / "report"
    args = [
        "run", str(grid), "--results", str(results), "--tracking-uri", uri, "--report-dir", str(report),
        "--no-progress", "--threads", "1", "--jobs", jobs,
    ]  # fmt: skip
    assert main(args) == 0
    client = client_for(uri)
    found = runs_by_kind(uri)
    by_record = records(results)
    assert len(by_record) == len(load_grid(grid).cells) == 3

    (parent,) = found["grid"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["executor"] == "local" and parent.data.tags["jobs"] == jobs
    assert parent.data.tags["version.torch"] and parent.data.tags["commit"]
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    report_files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "tracked.toml" in parent_files and "report/leaderboard.md" in report_files

    children = found["cell"]
    assert sorted(r.data.tags["config_hash"] for r in children) == sorted(by_record)
    names = [r.info.run_name for r in children]
    assert len(set(names)) == len(names)
    assert sum("train.replay=mask" in name for name in names) == 1  # the variant, told from its base
    for run in children:
        digest = run.data.tags["config_hash"]
        record = by_record[digest]
        tags, provenance = run.data.tags, record["provenance"]
        assert run.info.status == "FINISHED" and tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["commit"] == provenance["commit"] and tags["device"] == provenance["device"]
        assert tags["version.torch"] == provenance["versions"]["torch"] and tags["threads"] == "1"
        path = results / "tracked" / "cells" / f"{digest}.json"
        assert tags["record_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert run.data.params["train.epochs"] == "1" and run.data.params["seed"] == "0"
        seconds = (run.info.end_time - run.info.start_time) / 1000
        assert abs(seconds - record["wall_seconds"]) < 1.0, (seconds, record["wall_seconds"])
        for name, matrix in (
            ("accuracy", record["accuracy_matrix"]),
            ("validation", record["validation_matrix"]),
        ):
            for j in range(len(matrix)):
                history = client.get_metric_history(run.info.run_id, f"{name}_task_{j + 1}")
                assert [(m.step, m.value) for m in history] == [(i, row[j]) for i, row in enumerate(matrix)]
        first_row = client.get_metric_history(run.info.run_id, "validation_seen_tasks")[0]
        assert first_row.timestamp < run.info.end_time  # logged as task 1 ended, not after the cell
        assert run.data.metrics["final_average_accuracy"] == pytest.approx(record["final_average_accuracy"])
        folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / digest)))
        assert (folder / "record" / f"{digest}.json").read_bytes() == path.read_bytes()
        assert (folder / "accuracy_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main([*args, "--no-report"]) == 0  # a rerun: nothing to do, no duplicate
    again = runs_by_kind(uri)
    assert len(again["grid"]) == 2 and {r.info.run_id for r in again["cell"]} == {
        r.info.run_id for r in children
    }


def test_sync_mlflow_fills_a_store_from_records_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "tracked.toml"
    grid.write_text(GRID)
    results = tmp_path / "results"
    first = f"sqlite:///{tmp_path / 'first.db'}"
    assert main(["run", str(grid), "--results", str(results), "--tracking-uri", first, "--no-report",
                 "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'clone' / 'mlflow.db'}"  # a clone's empty store
    capsys.readouterr()
    assert main(["sync-mlflow", "--results", str(results), "--tracking-uri", uri]) == 0
    assert "3 runs filled from records" in capsys.readouterr().out
    synced = runs_by_kind(uri)["cell"]
    by_record = records(results)
    assert sorted(r.data.tags["config_hash"] for r in synced) == sorted(by_record)
    for run in synced:
        record = by_record[run.data.tags["config_hash"]]
        assert run.info.status == "FINISHED" and run.data.tags["benchmark.source"] == "record"
        seconds = (run.info.end_time - run.info.start_time) / 1000
        assert abs(seconds - record["wall_seconds"]) < 1.0
        assert len(client_for(uri).get_metric_history(run.info.run_id, "accuracy_task_1")) == len(
            record["accuracy_matrix"]
        )
    assert main(["sync-mlflow", "--results", str(results), "--tracking-uri", uri]) == 0
    assert "0 runs filled from records, 0 stale runs removed" in capsys.readouterr().out
    assert {r.info.run_id for r in runs_by_kind(uri)["cell"]} == {r.info.run_id for r in synced}


def test_the_suite_turns_mlflow_telemetry_off_unless_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmark.track import MlflowTracker

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    MlflowTracker("t", f"sqlite:///{tmp_path / 'a.db'}")
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    MlflowTracker("t", f"sqlite:///{tmp_path / 'a.db'}")
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_a_tracking_failure_costs_no_cell_and_the_next_run_fills_mlflow_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmark.track import MlflowTracker

    grid = tmp_path / "tracked.toml"
    grid.write_text(GRID)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = tmp_path / "results"
    args = ["run", str(grid), "--results", str(results), "--tracking-uri", uri, "--no-report",
            "--no-progress", "--threads", "1"]  # fmt: skip

    def store_gone(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the tracking server went away")

    with monkeypatch.context() as patch:
        patch.setattr(MlflowTracker, "finish_cell", store_gone)
        assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("warning: MLflow logging failed") == 1 and "went away" in err
    assert len(records(results)) == 3  # every cell recorded all the same
    assert main(args) == 0
    cells = runs_by_kind(uri)["cell"]
    assert sorted(r.data.tags["config_hash"] for r in cells) == sorted(records(results))
    assert {r.info.status for r in cells} == {"FINISHED"}


def test_a_records_shortcut_diagnostics_coverage_and_validation_score_become_metrics() -> None:
    from benchmark.track import record_metrics

    shortcut = [
        {"old_whole": None, "new_whole": 0.9, "newest_share_whole": None},
        {"old_whole": 0.4, "new_whole": 0.8, "newest_share_whole": 0.25},
    ]
    record = {
        "accuracy_matrix": [[0.9, 0.0], [0.4, 0.8]],
        "validation_final_accuracy": 0.55,
        "classes_covered_per_task": [2, 1],
        "shortcut": shortcut,
    }
    metrics = {(m.key, m.step): m.value for m in record_metrics(record, 0, 0)}
    assert metrics[("validation_final_accuracy", 0)] == pytest.approx(0.55)
    assert metrics[("classes_covered", 0)] == 2 and metrics[("classes_covered", 1)] == 1
    assert metrics[("shortcut_new_whole", 0)] == pytest.approx(0.9)
    assert metrics[("shortcut_old_whole", 1)] == pytest.approx(0.4)
    assert metrics[("shortcut_newest_share_whole", 1)] == pytest.approx(0.25)
    assert ("shortcut_old_whole", 0) not in metrics  # undefined after the first task: not logged
