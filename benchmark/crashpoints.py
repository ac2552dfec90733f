"""Named crash points: places on a cell's path where a test can kill the process.

A test sets ``BENCHMARK_CRASH_AT=<point>`` in a run's environment and the process
kills itself with SIGKILL (as an OOM kill, a segfault or ``kill -9`` would) the
first time it reaches that point; ``BENCHMARK_CRASH_CELL=<hash prefix>`` limits
it to one cell, ``BENCHMARK_CRASH_SIGNAL=SIGINT`` (or any signal name) sends that
signal instead, e.g. a Ctrl-C. Unset, a crash point is one dictionary lookup.
``tests/test_crash_points.py`` kills a run at each point, reruns it and checks
that nothing is lost, duplicated or left behind.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "BENCHMARK_CRASH_AT"
CRASH_CELL = "BENCHMARK_CRASH_CELL"
CRASH_SIGNAL = "BENCHMARK_CRASH_SIGNAL"

# Every point, in the order a cell reaches them (where: the driver, or wherever the cell runs).
CRASH_POINTS: dict[str, str] = {
    "store_migration": "driver: midway through MLflow's migration of a new SQLite store",
    "after_claim": "driver: the cell's lock is taken, no MLflow run is open yet",
    "after_run_opened": "driver: the cell's MLflow run is open (RUNNING), the cell has not started",
    "after_task": "cell: a task is trained and evaluated, its metrics handed to the hook",
    "after_selection": "cell: a task's memory is selected and stored",
    "during_record_write": "driver: the record's temporary file is written, not yet renamed",
    "after_record_write": "driver: the record is in place, its MLflow run still RUNNING",
    "inside_mlflow_logging": "driver: the run's params and metrics are logged, artifacts and status not",
    "before_lock_release": "driver: the MLflow run is ended, the cell's lock still held",
    "during_reconcile": "driver: a rerun is rebuilding an MLflow run from its record",
}


def crash_point(name: str, cell: str = "") -> None:
    """Kill this process here when ``BENCHMARK_CRASH_AT`` names ``name`` (and the cell matches)."""
    if os.environ.get(CRASH_AT) != name:
        return
    assert name in CRASH_POINTS, name
    if not cell.startswith(os.environ.get(CRASH_CELL, "")):
        return
    os.kill(os.getpid(), signal.Signals[os.environ.get(CRASH_SIGNAL, "SIGKILL")])
