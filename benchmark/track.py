"""MLflow tracking: the grid is one experiment, each cell one run.

The store is ``MLFLOW_TRACKING_URI`` when set, else a local SQLite store at
``mlruns/mlflow.db`` (artifacts beside it), which ``mlflow ui
--backend-store-uri sqlite:///mlruns/mlflow.db`` shows. The client is
created per tracker (``MlflowClient``), so nothing global is configured.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.results import FINISHED, CellResult

DEFAULT_STORE_DIR = Path("mlruns")


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


@contextmanager
def _sqlite_setup_lock(tracking_uri: str) -> Iterator[None]:
    """Two runs opening a new SQLite store at once would both run MLflow's schema migrations
    (``duplicate column name``): the first to hold this file lock makes the store, the other waits."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    with open(db.parent / f".{db.name}.setup-lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MlflowTracker:
    """Logs each cell as a run: config as params, accuracies as metrics, the record as artifact."""

    def __init__(self, experiment: str, tracking_uri: str | None = None, store_dir: Path = DEFAULT_STORE_DIR):
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):  # MLflow sets its loggers up on import
            logging.getLogger(noisy).setLevel(logging.WARNING)

        self.tracking_uri = (
            tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store_dir)
        )
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            with _fail_fast_http(), _sqlite_setup_lock(self.tracking_uri):
                self.client = MlflowClient(tracking_uri=self.tracking_uri)
                self.experiment_id = self._experiment(experiment)
        except Exception as error:  # any failure to reach the store is the user's to fix
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"cannot use MLflow tracking URI {self.tracking_uri!r}: {message}") from None

    def _experiment(self, name: str) -> str:
        """The experiment's id, made if absent (two runs making it at once both get the one made)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            artifacts = (db.parent / "artifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except Exception:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_cell(self, result: CellResult, record_path: Path) -> str:
        from mlflow.entities import Metric, Param, RunTag

        config = result.config
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{config['task']}|{config['method']}|r={config['retention']}|t={config['token_fraction']}"
            f"|seed={config['seed']}",
            tags={"config_hash": result.config_hash, "status": result.status},
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, v[:6000]) for k, v in flatten("", config).items()]
        metrics = []
        matrix = result.accuracy_matrix
        for row_index, row in enumerate(matrix):
            seen = row[: row_index + 1]
            metrics.append(Metric("accuracy_seen_tasks", sum(seen) / len(seen), now, row_index))
            metrics.extend(
                Metric(f"accuracy_task_{j + 1}", value, now, row_index) for j, value in enumerate(row)
            )
        finals = {
            "final_average_accuracy": result.final_average_accuracy,
            "average_forgetting": result.average_forgetting,
            "backward_transfer": result.backward_transfer,
            "diagonal_mean": result.diagonal_mean,
            "bytes_used": result.bytes_used,
            "bytes_allowed": result.bytes_allowed,
            "selection_seconds": result.selection_seconds,
            "training_seconds": result.training_seconds,
            "wall_seconds": result.wall_seconds,
        }
        for key, value in (result.attribution or {}).items():
            finals[f"attribution_{key}"] = value
        for mode, per_fraction in (result.partial_input_accuracy or {}).items():
            for fraction, partial in per_fraction.items():  # the final row's mean, as final_average_accuracy
                finals[f"partial_{mode}_t{fraction}"] = sum(partial[-1]) / len(partial[-1])
        per_task = {
            "samples_stored": result.samples_per_task,
            "tokens_stored": result.tokens_per_task,
            "token_fraction_used": result.token_fraction_per_task,
        }
        for name, values in per_task.items():
            metrics.extend(Metric(name, float(v), now, i) for i, v in enumerate(values) if v is not None)
        for key, value in ((result.extra_metrics or {}).get("average") or {}).items():
            finals[f"final_{key}"] = value  # e.g. final_METEOR: mean over tasks with the final model
        metrics.extend(Metric(k, float(v), now, 0) for k, v in finals.items() if v is not None)
        tags = [RunTag("error", result.error[:5000])] if result.error else []
        for start in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limits
            self.client.log_batch(
                run_id,
                metrics=metrics[start : start + 100],
                params=params[start : start + 100],
                tags=tags if start == 0 else [],
            )
        self.client.log_artifact(run_id, str(record_path))
        self.client.set_terminated(run_id, "FINISHED" if result.status == FINISHED else "FAILED")
        return run_id
