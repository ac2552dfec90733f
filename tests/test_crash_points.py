"""Kill a run at each named crash point, rerun it, and check that nothing is lost, doubled or left.

The invariants after the rerun (README, "Running at scale"): every cell recorded exactly once,
every record valid and filed under its own hash; MLflow holds exactly one FINISHED run per cell,
carrying its record's digest, and no RUNNING run; no lock, no temporary file, no process left.

The killed run is a child process running the CLI's ``main`` with ``BENCHMARK_CRASH_AT`` set
(``benchmark.crashpoints``): it SIGKILLs itself at the point, as an OOM kill or ``kill -9``
would. Children fork from a fork server that has imported the suite once (not from this test
process, whose threads and open stores a fork would copy mid-flight), so none pays an
interpreter start and the torch import.
"""

from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.crashpoints import CRASH_AT, CRASH_CELL, CRASH_POINTS, CRASH_SIGNAL
from benchmark.grid import load_grid
from benchmark.results import record_problem
from tests.conftest import REPO_ROOT, tiny_grid

TINY = tiny_grid("tiny")
KILLED = -signal.SIGKILL  # a multiprocessing child's exit code when SIGKILL ended it
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(["benchmark.cli", "benchmark.runner", "benchmark.track", "mlflow.tracking"])


def _run_main(argv: Sequence[str], env: dict[str, str]) -> None:
    # A fork inherits the test process's signal handlers, which an earlier test may have changed (a
    # library run in-process can install its own for SIGINT); a fresh `python -m benchmark` starts
    # with Python's default, so the child does too, or a SIGINT crash point could go unnoticed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.update(env)
    os._exit(main(list(argv)))


def run_forked(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 300) -> int | None:
    """``python -m benchmark ARGV`` in a fresh fork with ``env`` added; its exit code."""
    child = FORKS.Process(target=_run_main, args=(argv, env or {}))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"the run did not end within {timeout} s")
    return child.exitcode


class Workspace:
    """A grid file, its results directory and an MLflow store, all under one temporary folder."""

    def __init__(self, root: Path, grid_text: str = TINY) -> None:
        self.root = root
        self.grid = root / "tiny.toml"
        self.grid.write_text(grid_text)
        self.results = root / "results"
        self.store = root / "mlruns"
        self.db = self.store / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"
        self.hashes = {cell.config_hash for cell in load_grid(self.grid).cells}

    @property
    def cells(self) -> Path:
        return self.results / "tiny" / "cells"

    def argv(self, *extra: str) -> list[str]:
        return [
            "run", str(self.grid), "--results", str(self.results), "--tracking-uri", self.uri,
            "--no-progress", "--no-report", "--threads", "1", *extra,
        ]  # fmt: skip

    def check_invariants(self) -> None:
        """What must hold after any kill and a clean rerun."""
        from mlflow.tracking import MlflowClient

        records = {p.stem: json.loads(p.read_bytes()) for p in self.cells.glob("*.json")}
        assert set(records) == self.hashes, "every cell recorded exactly once"
        for digest, record in records.items():
            assert record_problem(record, digest) is None, digest
            assert record["status"] == "finished", record.get("error")
        leftovers = [
            p for folder in (self.cells, self.cells.parent, self.store) for p in folder.iterdir()
            if p.suffix in (".lock", ".takeover", ".tmp") or ".tmp" in p.name
        ]  # fmt: skip
        assert leftovers == [], "no lock and no temporary file is left"
        client = MlflowClient(tracking_uri=self.uri)
        experiment = client.get_experiment_by_name("tiny")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        cell_runs: dict[str, list] = {}
        for run in runs:
            if run.data.tags.get("benchmark.kind") == "cell":
                cell_runs.setdefault(run.data.tags["config_hash"], []).append(run)
        assert set(cell_runs) == self.hashes
        for digest, found in cell_runs.items():
            assert len(found) == 1, f"{digest}: {len(found)} runs"
            expected = hashlib.sha256((self.cells / f"{digest}.json").read_bytes()).hexdigest()
            assert found[0].info.status == "FINISHED"
            assert found[0].data.tags["record_sha256"] == expected
        assert multiprocessing.active_children() == [], "no process is left"


@pytest.fixture(scope="module")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite store, copied by each test (MLflow takes seconds to make one)."""
    from benchmark.track import MlflowTracker

    folder = tmp_path_factory.mktemp("store")
    MlflowTracker("tiny", f"sqlite:///{folder / 'mlflow.db'}")
    return folder / "mlflow.db"


def workspace_with_store(tmp_path: Path, store: Path) -> Workspace:
    space = Workspace(tmp_path)
    space.store.mkdir()
    shutil.copy(store, space.db)
    return space


# Each case: the crash points of successive killed runs (a point may need an earlier kill to be
# reached: reconciling rebuilds a run that a kill after the record write left half-logged).
CASES: list[tuple[str, ...]] = [
    ("after_claim",),
    ("after_run_opened",),
    ("after_task",),
    ("after_selection",),
    ("during_record_write",),
    ("after_record_write",),
    ("inside_mlflow_logging",),
    ("before_lock_release",),
    ("after_record_write", "during_reconcile"),
]


def test_every_crash_point_is_placed_once_and_killed_at_here() -> None:
    placed: list[str] = []
    for path in (REPO_ROOT / "benchmark").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "crash_point":
                placed.append(node.args[0].value)  # type: ignore[attr-defined]
    assert sorted(placed) == sorted(CRASH_POINTS)
    killed = {point for case in CASES for point in case} | {"store_migration"}
    assert killed == set(CRASH_POINTS)


@pytest.mark.parametrize("points", CASES, ids=["+".join(case) for case in CASES])
def test_a_kill_at_any_point_then_a_rerun_loses_and_leaves_nothing(
    tmp_path: Path, migrated_store: Path, points: tuple[str, ...]
) -> None:
    space = workspace_with_store(tmp_path, migrated_store)
    cell = sorted(space.hashes)[0] if points[0] != "after_selection" else ""
    for point in points:
        env = {CRASH_AT: point, CRASH_CELL: cell}
        assert run_forked(space.argv(), env) == KILLED, f"the run did not die at {point}"
    assert main(space.argv()) == 0
    space.check_invariants()


@pytest.mark.slow  # a new store's migration, or worker processes to start
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_first_run_stopped_midway_through_the_store_migration_leaves_no_broken_store(
    tmp_path: Path, how: str
) -> None:
    space = Workspace(tmp_path)
    code = run_forked(space.argv(), {CRASH_AT: "store_migration", CRASH_SIGNAL: how})
    assert code == (KILLED if how == "SIGKILL" else 130)
    assert not space.db.exists(), "a half-migrated store must never take the store's name"
    assert main(space.argv()) == 0
    space.check_invariants()


@pytest.mark.slow  # a new store's migration, or worker processes to start
def test_a_store_broken_by_an_older_version_is_refused_with_how_to_repair_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an interrupted first contact used to leave (MLflow's migrations run in place)."""
    space = Workspace(tmp_path)
    space.store.mkdir()
    broken = FORKS.Process(target=_half_migrate, args=(space.uri,))
    broken.start()
    broken.join(120)
    assert broken.exitcode == 9 and space.db.exists()
    capsys.readouterr()
    assert main(space.argv()) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"mv {space.db} {space.db}.broken" in lines[0] and "sync-mlflow" in lines[0]
    space.db.rename(space.db.with_suffix(".db.broken"))  # the repair the message gives
    assert main(space.argv()) == 0
    space.check_invariants()


def _half_migrate(uri: str) -> None:
    import sqlalchemy
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    statements = 0

    def count(*args: object, **kwargs: object) -> None:
        nonlocal statements
        statements += 1
        if statements == 800:
            os._exit(9)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    SqlAlchemyStore(uri, "/nonexistent")


def record_of(space: Workspace, method: str) -> tuple[str, dict]:
    digest = next(c.config_hash for c in load_grid(space.grid).cells if c.method == method)
    return digest, json.loads((space.cells / f"{digest}.json").read_bytes())


@pytest.mark.slow  # a new store's migration, or worker processes to start
def test_a_cell_that_kills_its_worker_fails_alone_and_a_retry_runs_it(
    tmp_path: Path, migrated_store: Path
) -> None:
    """--jobs 2: the worker dies under one cell (as an OOM kill would); that cell is recorded as
    failed with how its worker ended, the other cell finishes, and the grid ends (issue 23: the
    pool broke, both cells were lost and every rerun repeated it)."""
    space = workspace_with_store(tmp_path, migrated_store)
    victim = next(c.config_hash for c in load_grid(space.grid).cells if c.method == "random+random")
    env = {CRASH_AT: "after_selection", CRASH_CELL: victim}
    assert run_forked(space.argv("--jobs", "2"), env) == 1  # ran to the end, one cell failed
    _, record = record_of(space, "random+random")
    assert record["status"] == "failed" and "WorkerDied" in record["error"] and "SIGKILL" in record["error"]
    assert record_of(space, "none")[1]["status"] == "finished"
    assert main(space.argv("--jobs", "2", "--retry-failed")) == 0
    space.check_invariants()  # one FINISHED run per cell: the failed attempt's run is gone


def test_a_cell_that_kills_its_own_process_twice_is_given_up_as_failed(
    tmp_path: Path, migrated_store: Path
) -> None:
    """--jobs 1 computes cells in the driver, which such a cell kills; the lock counts the deaths,
    and after two the cell is recorded as failed instead of killing every rerun."""
    space = workspace_with_store(tmp_path, migrated_store)
    for _ in range(2):
        assert run_forked(space.argv(), {CRASH_AT: "after_selection"}) == KILLED
    assert main(space.argv()) == 1
    digest, record = record_of(space, "random+random")
    assert record["status"] == "failed" and record["error"].startswith("ProcessDied: 2 runs died")
    assert not (space.cells / f"{digest}.lock").exists()
    assert main(space.argv("--retry-failed")) == 0
    space.check_invariants()
