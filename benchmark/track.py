"""MLflow tracking: each grid is one experiment, each grid run a parent run, each cell a child run.

The store is ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` when set, else a local SQLite
store at ``mlruns/mlflow.db`` (artifacts beside it), which ``mlflow ui --backend-store-uri
sqlite:///mlruns/mlflow.db`` shows. The client is created per tracker (``MlflowClient``), so
nothing global is configured; MLflow's usage telemetry is switched off unless the user set
``MLFLOW_DISABLE_TELEMETRY`` or ``DO_NOT_TRACK`` themselves.

How a run talks to MLflow (the driver alone does; cells in worker processes or on Ray hand
their progress to it):

- ``start_grid``: a parent run for the grid run (its commit, versions, executor, threads).
- ``open_cell``: a child run (RUNNING) when the cell is dispatched, with its config as params.
- ``log_task``: the validation row of each task as it ends (step = task index; protocol 2).
- ``finish_cell``: after the record is written: the test accuracy matrix (sealed until the
  cell's end), final metrics, memory per task, tags (commit,
  versions, threads, device, record digest), the record and an accuracy-matrix figure as
  artifacts, then FINISHED or FAILED with the cell's real end time.
- ``reconcile``: records are the truth. At the start of every run (and by ``sync-mlflow``)
  each recorded cell of the results directory gets exactly one FINISHED or FAILED run that
  carries its record's digest: a missing or half-logged one is rebuilt from the record, a
  superseded or duplicate one deleted, and a RUNNING run of a cell no live run holds (its
  run was killed) deleted; a grid run whose driver died on this host is marked KILLED.

A first contact with a new SQLite store makes it under a temporary name and renames it into
place once MLflow's migrations are done, so an interrupted first run leaves no half-migrated
store; a store broken otherwise is refused with how to repair it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import CellConfig
from benchmark.crashpoints import crash_point
from benchmark.errors import UserError
from benchmark.provenance import package_versions
from benchmark.results import (
    FINISHED,
    cell_path,
    live_locks,
    process_alive,
    recorded_statuses,
    sweep_temp_files,
    temp_prefix,
    valid_record,
)

DEFAULT_STORE_DIR = Path("mlruns")
KIND_TAG = "benchmark.kind"  # "grid" (a parent run) or "cell"
RESULTS_TAG = "benchmark.results"  # the results directory a run's cells are recorded in
RECORD_TAG = "record_sha256"  # the digest of the record a finished run was logged from
MIGRATION_CRASH_STATEMENT = 800  # of about 1700 statements MLflow runs to make a new store
BATCH = 100  # MLflow's limit of params (and our chunk of metrics) per log_batch


def default_tracking_uri(store_dir: Path = DEFAULT_STORE_DIR) -> str:
    return f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config → MLflow params (``train.epochs`` = ``3``)."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, inner in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return flat
    return {prefix: str(value)}


def now_ms() -> int:
    return int(time.time() * 1000)


def record_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- Run names ---------------------------------------------------------------------------------------

LABEL_KEYS = frozenset(
    {"grid", "task", "method", "sample_selector", "token_selector", "retention", "token_fraction", "seed"}
)


def varying_keys(configs: Iterable[dict[str, Any]]) -> list[str]:
    """The flattened config keys whose values differ between cells of one task (beyond a cell's
    label): what tells a variant cell from its base, e.g. ``train.replay``."""
    values: dict[tuple[str, str], set[str]] = {}
    present: dict[tuple[str, str], int] = {}
    cells: dict[str, int] = {}
    for config in configs:
        task = str(config.get("task"))
        cells[task] = cells.get(task, 0) + 1
        for key, value in flatten("", config).items():
            values.setdefault((task, key), set()).add(value)
            present[(task, key)] = present.get((task, key), 0) + 1
    return sorted(
        {
            key
            for (task, key), seen in values.items()
            if key.split(".")[0] not in LABEL_KEYS and (len(seen) > 1 or present[(task, key)] < cells[task])
        }
    )


def cell_run_name(config: dict[str, Any], varying: Sequence[str], digest: str) -> str:
    """``split-shapes random+rollout r=0.1 t=0.5 seed=0 train.replay=mask #3fa2c1d0``: the label,
    the keys in which the grid's cells differ, and the start of the hash (unique in any case)."""
    flat = flatten("", config)
    extra = " ".join(f"{key}={flat[key]}" for key in varying if key in flat)
    label = CellConfig.from_dict(config).label
    return f"{label}{' ' + extra if extra else ''} #{digest[:8]}"


# --- The accuracy-matrix figure -------------------------------------------------------------------------


def accuracy_figure(matrix: list[list[float]], title: str, path: Path) -> Path:
    """A small heat map of the accuracy matrix (row: after training task i; column: task j)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = len(matrix)
    figure = Figure(figsize=(1.2 + 0.6 * size, 1.0 + 0.6 * size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, vmin=0.0, vmax=max(1.0, max(max(row) for row in matrix)), cmap="viridis")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white")
    ticks = list(range(size))
    axes.set_xticks(ticks, [str(t + 1) for t in ticks])
    axes.set_yticks(ticks, [str(t + 1) for t in ticks])
    axes.set_xlabel("evaluated on task")
    axes.set_ylabel("after training task")
    axes.set_title(title, fontsize=7)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path)
    return path


# --- Metrics of a record -------------------------------------------------------------------------------


def row_metrics(name: str, index: int, row: Sequence[float], timestamp: int) -> list[Any]:
    """One row of a matrix (after training task ``index``) at step ``index``: ``{name}_task_j`` for
    each task j and ``{name}_seen_tasks``, the mean over the tasks trained so far."""
    from mlflow.entities import Metric

    seen = row[: index + 1]
    metrics = [Metric(f"{name}_seen_tasks", float(sum(seen) / len(seen)), timestamp, index)]
    metrics.extend(Metric(f"{name}_task_{j + 1}", float(v), timestamp, index) for j, v in enumerate(row))
    return metrics


def record_metrics(record: dict[str, Any], timestamp: int, validation_rows_logged: int) -> list[Any]:
    """Every metric of a record: its test rows (``accuracy_*``, opened only at the cell's end) and
    the validation rows not already logged as their tasks ended (``validation_*``)."""
    from mlflow.entities import Metric

    metrics = []
    for index, row in enumerate(record.get("accuracy_matrix") or []):
        metrics.extend(row_metrics("accuracy", index, row, timestamp))
    for index, row in enumerate(record.get("validation_matrix") or []):
        if index >= validation_rows_logged:
            metrics.extend(row_metrics("validation", index, row, timestamp))
    finals: dict[str, Any] = {
        key: record.get(key)
        for key in (
            "final_average_accuracy",
            "average_forgetting",
            "backward_transfer",
            "diagonal_mean",
            "validation_final_accuracy",
            "bytes_used",
            "bytes_allowed",
            "selection_seconds",
            "training_seconds",
            "wall_seconds",
        )
    }
    for key, value in (record.get("attribution") or {}).items():
        finals[f"attribution_{key}"] = value
    for mode, per_fraction in (record.get("partial_input_accuracy") or {}).items():
        for fraction, partial in per_fraction.items():  # the final row's mean, as final_average_accuracy
            finals[f"partial_{mode}_t{fraction}"] = sum(partial[-1]) / len(partial[-1])
    for key, value in ((record.get("extra_metrics") or {}).get("average") or {}).items():
        finals[f"final_{key}"] = value  # e.g. final_METEOR: mean over tasks with the final model
    per_task = {
        "samples_stored": record.get("samples_per_task") or [],
        "tokens_stored": record.get("tokens_per_task") or [],
        "token_fraction_used": record.get("token_fraction_per_task") or [],
        "classes_covered": record.get("classes_covered_per_task") or [],
    }
    for name, values in per_task.items():
        metrics.extend(Metric(name, float(v), timestamp, i) for i, v in enumerate(values) if v is not None)
    for index, row in enumerate(record.get("shortcut") or []):  # shortcut_old_whole, … at step i
        metrics.extend(
            Metric(f"shortcut_{key}", float(v), timestamp, index) for key, v in row.items() if v is not None
        )
    metrics.extend(
        Metric(k, float(v), timestamp, 0)
        for k, v in finals.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    )
    return metrics


def record_tags(record: dict[str, Any], digest: str) -> dict[str, str]:
    """Tags a finished run carries: its status, error, provenance and the digest of its record."""
    provenance = record.get("provenance") or {}
    tags = {"status": str(record["status"]), RECORD_TAG: digest}
    if record.get("error"):
        tags["error"] = str(record["error"])[:5000]
    for key in ("commit", "threads", "device"):
        if provenance.get(key) is not None:
            tags[key] = str(provenance[key])
    for name, version in (provenance.get("versions") or {}).items():
        tags[f"version.{name}"] = str(version)
    return tags


# --- Opening the store ------------------------------------------------------------------------------------


def no_telemetry() -> None:
    """No MLflow usage telemetry, unless the user decided (before MLflow is imported)."""
    if "MLFLOW_DISABLE_TELEMETRY" not in os.environ and "DO_NOT_TRACK" not in os.environ:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def quiet_loggers() -> None:
    """No INFO lines from MLflow and alembic (MLflow sets its loggers up on import)."""
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """For the first contact with the store: no retries and a short timeout, so an unreachable
    server is an error in seconds rather than after MLflow's minutes of backoff. Logging later
    keeps MLflow's (or the user's) retry settings."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


@contextmanager
def _sqlite_setup_lock(db: Path | None) -> Iterator[None]:
    """Two runs opening a new SQLite store at once: the first to hold this file lock makes the
    store, the other waits and then opens it."""
    if db is None:
        yield
        return
    with open(db.parent / f".{db.name}.setup-lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifacts_uri(db: Path) -> str:
    return (db.parent / "artifacts").resolve().as_uri()


def create_sqlite_store(db: Path) -> None:
    """Make a new SQLite store atomically: migrate it under a temporary name, then rename it.

    MLflow's migrations of a new store take seconds and are not transactional; a run killed
    midway used to leave a store that no later run could open. Here a kill leaves only the
    temporary file, which the next run sweeps away (``sweep_temp_files``) and starts over.
    """
    import sqlalchemy
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    sweep_temp_files(db.parent)
    handle, name = tempfile.mkstemp(prefix=temp_prefix(db.name), suffix=".tmp", dir=db.parent)
    os.close(handle)  # an empty file is an empty SQLite database
    temp = Path(name)
    statements = 0

    def count(*args: object, **kwargs: object) -> None:
        nonlocal statements
        statements += 1
        if statements == MIGRATION_CRASH_STATEMENT:
            crash_point("store_migration")

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    try:
        store = SqlAlchemyStore(f"sqlite:///{temp}", artifacts_uri(db))
        store.engine.dispose()
        os.chmod(temp, 0o644)  # mkstemp makes 0600; a store is for its users to read
        os.replace(temp, db)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", count)
        for leftover in (temp, temp.with_name(temp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def forget_engine(tracking_uri: str) -> None:
    """Drop MLflow's cached engine of a store that failed to open: MLflow keeps one per URI for
    the life of the process, so a store repaired under the same name would still be read through
    the broken file's connection."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(tracking_uri, None)
    if engine is not None:
        engine.dispose()


def broken_store_message(db: Path, error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"the MLflow store {db} cannot be opened ({first}). If a run was stopped while it was being "
        f"created, move it aside (`mv {db} {db}.broken`) and rerun; `python -m benchmark sync-mlflow "
        f"--results DIR --tracking-uri sqlite:///{db}` then refills it from the cell records"
    )


# --- The tracker -------------------------------------------------------------------------------------------


@dataclass
class ReconcileSummary:
    created: int = 0  # runs rebuilt from records (missing or half-logged)
    deleted: int = 0  # duplicate, superseded or orphaned RUNNING runs
    killed_grids: int = 0  # grid runs whose driver died, marked KILLED


@dataclass
class CellRun:
    """A child run the tracker opened: its cell, and how many validation rows it has logged so far."""

    run_id: str
    config: CellConfig
    validation_rows_logged: int = 0  # of the (chosen) run's validation matrix


@dataclass
class MlflowTracker:
    """Logs grid runs and cells to one MLflow experiment; see the module docstring."""

    experiment: str
    tracking_uri: str | None = None
    store_dir: Path = DEFAULT_STORE_DIR
    client: Any = field(init=False)
    experiment_id: str = field(init=False)
    warned: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        no_telemetry()
        from mlflow.tracking import MlflowClient

        quiet_loggers()

        self.tracking_uri = (
            self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(self.store_dir)
        )
        db = sqlite_path(self.tracking_uri)
        try:
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            with _fail_fast_http(), _sqlite_setup_lock(db):
                if db is not None and not db.exists():
                    create_sqlite_store(db)
                self.client = MlflowClient(tracking_uri=self.tracking_uri)
                self.experiment_id = self._experiment(self.experiment)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # any failure to reach the store is the user's to fix
            if db is not None:
                forget_engine(self.tracking_uri)
            if db is not None and db.exists():
                raise UserError(broken_store_message(db, error)) from None
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"cannot use MLflow tracking URI {self.tracking_uri!r}: {message}") from None

    def _experiment(self, name: str) -> str:
        """The experiment's id, made if absent (two runs making it at once both get the one made)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        db = sqlite_path(str(self.tracking_uri))
        try:
            return self.client.create_experiment(name, artifact_location=db and artifacts_uri(db))
        except Exception:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    @contextmanager
    def best_effort(self) -> Iterator[None]:
        """During a run, a tracking error costs MLflow's view, never a cell: warn once and go on
        (the records are kept; the next run, or ``sync-mlflow``, brings MLflow in line)."""
        try:
            yield
        except Exception as error:
            if not self.warned:
                self.warned = True
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                print(
                    f"warning: MLflow logging failed ({type(error).__name__}: {first}); the records are "
                    "kept and the next run (or `python -m benchmark sync-mlflow`) fills MLflow in",
                    file=sys.stderr,
                )

    # --- the grid run ------------------------------------------------------------------------------------

    def start_grid(self, results_dir: Path, tags: dict[str, str], grid_file: Path | None = None) -> str:
        """Open the parent run of this grid run; its driver (pid, host) is tagged for ``reconcile``."""
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder = {"holder.pid": str(os.getpid()), "holder.host": socket.gethostname()}
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.experiment} run {started} pid {os.getpid()}",
            tags={
                KIND_TAG: "grid",
                RESULTS_TAG: str(results_dir.resolve()),
                "host": platform.node(),
                **holder,
                **{f"version.{k}": v for k, v in package_versions().items()},
                **tags,
            },
        )
        if grid_file is not None and grid_file.is_file():
            self.client.log_artifact(run.info.run_id, str(grid_file))
        return run.info.run_id

    def end_grid(self, run_id: str, status: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = now_ms()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
        self.client.set_terminated(run_id, status, stamp)

    def log_files(self, run_id: str, paths: Iterable[Path], folder: str = "report") -> None:
        """Attach files (the grid's report) to a run."""
        for path in paths:
            if path.is_file():
                self.client.log_artifact(run_id, str(path), folder)

    # --- one cell ------------------------------------------------------------------------------------------

    def open_cell(
        self,
        config: CellConfig,
        results_dir: Path,
        parent: str | None,
        run_name: str,
        tags: dict[str, str],
        start_time: int | None = None,
    ) -> CellRun:
        """A child run for a cell that is starting: RUNNING, its config as params. Its start is
        taken before anything is written, so its duration is the cell's (the record's wall time)."""
        from mlflow.entities import Param

        start_time = start_time or now_ms()
        run = self.client.create_run(
            self.experiment_id,
            start_time=start_time,
            run_name=run_name,
            tags={
                KIND_TAG: "cell",
                RESULTS_TAG: str(results_dir.resolve()),
                "config_hash": config.config_hash,
                **({"mlflow.parentRunId": parent} if parent else {}),
                **tags,
            },
        )
        params = [Param(k, v[:6000]) for k, v in flatten("", config.to_dict()).items()]
        for first in range(0, len(params), BATCH):
            self.client.log_batch(run.info.run_id, params=params[first : first + BATCH])
        return CellRun(run.info.run_id, config)

    def log_task(self, run: CellRun, candidate: int, index: int, row: Sequence[float]) -> None:
        """The validation row after training task ``index``, as the task ends: ``validation_*``, or
        ``candidate_N_validation_*`` for each candidate of a ``[tune]`` search."""
        tuned = len(run.config.candidates()) > 1
        name = f"candidate_{candidate + 1}_validation" if tuned else "validation"
        self.client.log_batch(run.run_id, metrics=row_metrics(name, index, row, now_ms()))
        if not tuned:
            run.validation_rows_logged = max(run.validation_rows_logged, index + 1)

    def finish_cell(self, run: CellRun, record_path: Path, end_time: int) -> None:
        """Everything the written record holds, then FINISHED or FAILED at the cell's end time."""
        record = json.loads(record_path.read_bytes())
        stamp = now_ms()
        metrics = record_metrics(record, stamp, run.validation_rows_logged)
        tags = record_tags(record, record_digest(record_path))
        from mlflow.entities import RunTag

        tag_list = [RunTag(k, v) for k, v in tags.items()]
        for start in range(0, max(len(metrics), len(tag_list), 1), BATCH):
            self.client.log_batch(
                run.run_id, metrics=metrics[start : start + BATCH], tags=tag_list[start : start + BATCH]
            )
        crash_point("inside_mlflow_logging", record_path.stem)
        self.client.log_artifact(run.run_id, str(record_path), "record")
        if record.get("accuracy_matrix"):
            with tempfile.TemporaryDirectory() as folder:
                title = CellConfig.from_dict(record["config"]).label
                figure = accuracy_figure(
                    record["accuracy_matrix"], title, Path(folder) / "accuracy_matrix.png"
                )
                self.client.log_artifact(run.run_id, str(figure))
        self.client.set_terminated(
            run.run_id, "FINISHED" if record["status"] == FINISHED else "FAILED", end_time
        )

    def abandon_cell(self, run: CellRun) -> None:
        """A cell that ends without a record (its run was interrupted): its MLflow run goes; a rerun
        of the cell opens another."""
        self.client.delete_run(run.run_id)

    # --- records are the truth ---------------------------------------------------------------------------

    def runs(self) -> list[Any]:
        """Every active run of the experiment."""
        found: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return found

    def reconcile(self, results_dir: Path, varying: Sequence[str] = ()) -> ReconcileSummary:
        """Bring the runs of ``results_dir``'s cells in line with its records (module docstring)."""
        summary = ReconcileSummary()
        where = str(results_dir.resolve())
        listed = self.runs()
        # After the runs are listed: a run opens only once its cell's lock is taken, so a cell
        # whose run is listed RUNNING by a live run is seen held here.
        statuses = recorded_statuses(results_dir)
        held = live_locks(results_dir)
        by_cell: dict[str, list[Any]] = {}
        for run in listed:
            tags = run.data.tags
            if tags.get(KIND_TAG) == "grid" and tags.get(RESULTS_TAG) == where:
                summary.killed_grids += self._end_dead_grid_run(run)
            elif tags.get(KIND_TAG) == "cell" and tags.get(RESULTS_TAG) == where and "config_hash" in tags:
                by_cell.setdefault(tags["config_hash"], []).append(run)
        if not varying:
            varying = varying_keys(
                record["config"]
                for digest in statuses
                if (record := valid_record(results_dir, digest)) is not None
            )
        for digest in sorted(set(statuses) | set(by_cell)):
            if digest in held:
                continue  # a live run is computing it: its runs are that run's business
            runs = sorted(by_cell.get(digest, []), key=lambda r: r.info.start_time or 0)
            if digest not in statuses:
                for run in runs:  # no record: a RUNNING run is what a killed attempt left
                    if run.info.status == "RUNNING":
                        self.client.delete_run(run.info.run_id)
                        summary.deleted += 1
                continue
            path = cell_path(results_dir, digest)
            expected = record_digest(path)
            status = "FINISHED" if statuses[digest] == FINISHED else "FAILED"
            good = [r for r in runs if r.info.status == status and r.data.tags.get(RECORD_TAG) == expected]
            if good:
                keep = good[-1].info.run_id
            else:
                keep = self._rebuild(path, results_dir, varying, runs)
                summary.created += 1
            for run in runs:
                if run.info.run_id != keep:
                    self.client.delete_run(run.info.run_id)
                    summary.deleted += 1
        return summary

    def _rebuild(self, path: Path, results_dir: Path, varying: Sequence[str], earlier: list[Any]) -> str:
        """A complete run from a record. It starts when the attempt that wrote the record started
        (a run left RUNNING before the record was written), else ``wall_seconds`` before the
        record was written, and ends when the record was written."""
        record = json.loads(path.read_bytes())
        config = CellConfig.from_dict(record["config"])
        written = int(path.stat().st_mtime * 1000)
        attempts = [r.info.start_time for r in earlier if r.info.status == "RUNNING" and r.info.start_time]
        attempts = [start for start in attempts if start <= written]
        start_time = (
            attempts[-1] if attempts else written - int(1000 * float(record.get("wall_seconds") or 0.0))
        )
        run = self.open_cell(
            config,
            results_dir,
            None,
            cell_run_name(record["config"], varying, config.config_hash),
            {"benchmark.source": "record"},
            start_time,
        )
        crash_point("during_reconcile", config.config_hash)
        self.finish_cell(run, path, max(written, start_time))
        return run.run_id

    def _end_dead_grid_run(self, run: Any) -> int:
        """Mark KILLED a RUNNING grid run whose driver is gone from this host (1 if so)."""
        tags = run.data.tags
        if run.info.status != "RUNNING" or tags.get("holder.host") != socket.gethostname():
            return 0
        pid = tags.get("holder.pid", "")
        if pid.isdigit() and int(pid) > 0 and (int(pid) == os.getpid() or process_alive(int(pid))):
            return 0
        self.client.set_terminated(run.info.run_id, "KILLED")
        return 1


def sync_results(results_root: Path, tracking_uri: str | None) -> dict[str, ReconcileSummary]:
    """``sync-mlflow``: every grid's results under ``results_root`` (folders with ``cells/``) into
    the experiment of its name; idempotent (a second sync changes nothing)."""
    if not results_root.is_dir():
        raise UserError(f"results directory {results_root} does not exist or is not a directory")
    grids = sorted({p.parent for p in results_root.rglob("cells") if p.is_dir()})
    if (results_root / "cells").is_dir():
        grids = [results_root]
    if not grids:
        raise UserError(f"no cell records under {results_root} (looked for */cells/*.json)")
    return {str(g): MlflowTracker(g.resolve().name, tracking_uri).reconcile(g) for g in grids}


@dataclass
class GridRun:
    """One grid run's MLflow side, as the driver sees it: the parent run, the child run of each
    cell in flight, and records-are-the-truth reconciliation before and after. Every call is best
    effort (``MlflowTracker.best_effort``): tracking never costs a cell."""

    tracker: MlflowTracker
    results_dir: Path
    varying: Sequence[str]
    tags: dict[str, str]  # commit, executor, threads: on the parent and on each child run
    parent: str | None = None
    open_runs: dict[str, CellRun] = field(default_factory=dict)
    end_times: dict[str, int] = field(default_factory=dict)  # when each cell's computation ended
    reconciled: ReconcileSummary = field(default_factory=ReconcileSummary)

    def start(self, grid_file: Path | None) -> None:
        with self.tracker.best_effort():
            self.reconciled = self.tracker.reconcile(self.results_dir, self.varying)
        with self.tracker.best_effort():
            self.parent = self.tracker.start_grid(self.results_dir, self.tags, grid_file)

    def open(self, config: CellConfig) -> None:
        """The cell starts: its child run opens (RUNNING)."""
        with self.tracker.best_effort():
            name = cell_run_name(config.to_dict(), self.varying, config.config_hash)
            run = self.tracker.open_cell(config, self.results_dir, self.parent, name, self.tags)
            self.open_runs[config.config_hash] = run

    def task_ended(self, digest: str, candidate: int, index: int, row: list[float]) -> None:
        with self.tracker.best_effort():
            self.tracker.log_task(self.open_runs[digest], candidate, index, row)

    def ended(self, digest: str, at: int) -> None:
        """The cell's computation ended at ``at`` (ms since the epoch, where it ran): its run's end."""
        self.end_times[digest] = at

    def finish(self, config: CellConfig, record_path: Path) -> None:
        """The cell's record is written: its run gets all of it and ends (one is opened if none is)."""
        digest = config.config_hash
        end_time = self.end_times.pop(digest, None) or now_ms()
        if digest not in self.open_runs:
            self.open(config)
        with self.tracker.best_effort():
            run = self.open_runs.pop(digest)
            self.tracker.finish_cell(run, record_path, end_time)

    def close(self, status: str, metrics: dict[str, float]) -> None:
        """The grid run ends: runs of cells left without a record go, the parent run ends; after a
        whole run, MLflow is brought in line with the records again (superseded runs go)."""
        for digest in list(self.open_runs):
            with self.tracker.best_effort():
                self.tracker.abandon_cell(self.open_runs.pop(digest))
        if status == "FINISHED":
            with self.tracker.best_effort():
                after = self.tracker.reconcile(self.results_dir, self.varying)
                self.reconciled.created += after.created
                self.reconciled.deleted += after.deleted
        if self.parent is not None:
            with self.tracker.best_effort():
                self.tracker.end_grid(self.parent, status, metrics)
