"""Grids that survive: Ray gives the local results, a SIGKILL anywhere resumes, two runs share a grid."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.grid import load_grid
from benchmark.results import claim_cell, lock_path, release_cell
from tests.conftest import GRIDS, REPO_ROOT

SMOKE = GRIDS / "smoke.toml"
COMPARED = ("status", "accuracy_matrix", "bytes_used", "bytes_allowed", "samples_per_task", "attribution")


def smoke_hashes() -> set[str]:
    return {cell.config_hash for cell in load_grid(SMOKE).cells}


def records(results: Path) -> dict[str, dict]:
    """Every record of the smoke grid; each must parse (a corrupt one fails the test)."""
    return {p.stem: json.loads(p.read_text()) for p in (results / "smoke" / "cells").glob("*.json")}


def start_run(results: Path, db: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", "run", str(SMOKE), "--results", str(results),
         "--tracking-uri", f"sqlite:///{db}", "--no-progress", "--no-report", "--threads", "1", *extra],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def mlflow_runs_per_cell(db: Path) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("smoke")
    counts: dict[str, int] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        if run.data.tags.get("benchmark.kind") != "cell":
            continue  # a grid run (the parent of its cells' runs)
        digest = run.data.tags["config_hash"]
        counts[digest] = counts.get(digest, 0) + 1
    return counts


def test_ray_executor_matches_local_at_the_same_thread_count(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from benchmark.executors import ExecutorOptions
    from benchmark.pretrain import WEIGHTS_DIR
    from benchmark.runner import run_grid
    from benchmark.track import MlflowTracker

    grid = load_grid(SMOKE)
    tracker = MlflowTracker("smoke", f"sqlite:///{tmp_path / 'ml.db'}")
    options = ExecutorOptions(weights_dir=WEIGHTS_DIR, threads=1, cpus_per_cell=1)
    local = run_grid(grid, tmp_path / "local", tracker, show_progress=False, options=options)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        remote = run_grid(
            grid, tmp_path / "ray", tracker, show_progress=False, executor="ray", options=options
        )
        assert ray.is_initialized()  # a session the caller opened is left open
    finally:
        ray.shutdown()
    assert local.finished == remote.finished == len(smoke_hashes()) and not local.failed and not remote.failed
    by_local, by_ray = records(tmp_path / "local"), records(tmp_path / "ray")
    assert set(by_local) == set(by_ray) == smoke_hashes()
    for digest, record in by_local.items():
        assert {k: record[k] for k in COMPARED} == {k: by_ray[digest][k] for k in COMPARED}, digest
        assert record["provenance"]["threads"] == by_ray[digest]["provenance"]["threads"] == 1


def test_sigkill_mid_grid_then_rerun_finishes_without_recomputing(tmp_path: Path) -> None:
    results, db = tmp_path / "results", tmp_path / "ml.db"
    cells = results / "smoke" / "cells"
    run = start_run(results, db)
    deadline = time.monotonic() + 240
    while not (list(cells.glob("*.json")) and list(cells.glob("*.lock"))):  # a record, and a cell running
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        assert time.monotonic() < deadline, "no record appeared"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells.glob("*.json")}
    assert 0 < len(before) < len(smoke_hashes()), "the kill must land before the grid ends"
    # The killed run's lock on the cell it was running is left behind: the rerun must take it over.

    rerun = start_run(results, db)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"{len(before)} already done, {len(smoke_hashes()) - len(before)} run" in out
    after = records(results)  # every file parses
    assert set(after) == smoke_hashes()
    assert all(record["status"] == "finished" for record in after.values())
    for name, (mtime, content) in before.items():
        path = cells / name
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, content), f"{name} was recomputed"
    assert not list(cells.glob("*.lock"))
    assert sorted(p.suffix for p in cells.iterdir() if not p.name.startswith(".")) == [".json"] * len(after)


def test_two_runs_at_once_share_the_cells(tmp_path: Path) -> None:
    results, db = tmp_path / "results", tmp_path / "ml.db"
    first, second = start_run(results, db), start_run(results, db)
    outputs = [run.communicate(timeout=600) for run in (first, second)]
    for run, (_, err) in zip((first, second), outputs, strict=True):
        assert run.returncode == 0, err
    ran = [int(re.search(r"(\d+) run,", out).group(1)) for out, _ in outputs]
    assert sum(ran) == len(smoke_hashes()), outputs
    after = records(results)
    assert set(after) == smoke_hashes()
    assert all(record["status"] == "finished" for record in after.values())
    assert mlflow_runs_per_cell(db) == dict.fromkeys(smoke_hashes(), 1)  # each cell ran exactly once
    assert not list((results / "smoke" / "cells").glob("*.lock"))


def test_claims_skip_a_live_lock_and_take_over_a_dead_one(tmp_path: Path) -> None:
    assert claim_cell(tmp_path, "a")
    assert not claim_cell(tmp_path, "a")  # held by a live process (this one)
    release_cell(tmp_path, "a")
    assert not lock_path(tmp_path, "a").exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    lock_path(tmp_path, "b").write_text(json.dumps({"pid": dead.pid, "host": host, "time": 0}))
    assert claim_cell(tmp_path, "b")  # its holder is gone: taken over
    assert json.loads(lock_path(tmp_path, "b").read_text())["pid"] == os.getpid()

    lock_path(tmp_path, "c").write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "time": 0}))
    assert not claim_cell(tmp_path, "c")  # another host's lock is never taken over from here
    lock_path(tmp_path, "d").write_text(json.dumps({"pid": 1, "host": host, "time": 0}))
    assert not claim_cell(tmp_path, "d")  # pid 1 lives


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return "zombie" not in (Path("/proc") / str(pid) / "status").read_text().lower()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_run_leaves_no_worker_process(tmp_path: Path, how: signal.Signals) -> None:
    """SIGTERM: the driver stops its workers on the way out. SIGKILL: it cannot, and each worker
    ends itself once it sees its driver gone (issue 23: they used to live on, ~900 MB each)."""
    results, db = tmp_path / "results", tmp_path / "ml.db"
    cells = results / "smoke" / "cells"
    run = start_run(results, db, "--jobs", "2")
    deadline = time.monotonic() + 240
    # A cell is claimed and both workers run below the driver.
    while not list(cells.glob("*.lock")) or len(descendants(run.pid)) < 2:
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        assert time.monotonic() < deadline, "no cell started"
        time.sleep(0.05)
    workers = descendants(run.pid)
    run.send_signal(how)
    run.communicate(timeout=60)
    assert run.returncode == (128 + signal.SIGTERM if how == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "a worker outlived its run"
