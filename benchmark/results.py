"""Cell result records: one JSON file per cell, named by its config hash, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

FINISHED = "finished"
FAILED = "failed"


@dataclass(frozen=True)
class CellResult:
    """What one cell measured. ``accuracy_matrix[i][j]``: accuracy on task j after training task i."""

    config: dict[str, Any]
    config_hash: str
    status: str
    error: str | None = None
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    diagonal_mean: float | None = None
    final_average_accuracy: float | None = None
    average_forgetting: float | None = None
    backward_transfer: float | None = None
    bytes_used: int = 0
    bytes_allowed: int = 0
    bytes_used_per_task: list[int] = field(default_factory=list)
    bytes_allowed_per_task: list[int] = field(default_factory=list)
    samples_per_task: list[int] = field(default_factory=list)
    tokens_per_sample: int | None = None
    attribution: dict[str, float] | None = None
    selection_seconds: float = 0.0
    training_seconds: float = 0.0
    wall_seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cell_path(results_dir: Path, config_hash: str) -> Path:
    return results_dir / "cells" / f"{config_hash}.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=1, sort_keys=True, allow_nan=False)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def save_result(results_dir: Path, result: CellResult) -> Path:
    path = cell_path(results_dir, result.config_hash)
    write_json_atomic(path, result.to_dict())
    return path


def read_result(path: Path) -> dict[str, Any]:
    """One cell record; a corrupt file is a one-line UserError naming it."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"corrupt cell result {path}: {error}") from None
    if not isinstance(record, dict) or "status" not in record or "config" not in record:
        raise UserError(f"corrupt cell result {path}: not a cell record")
    return record


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every cell record under ``results_dir`` (searched recursively for ``cells/*.json``)."""
    if not results_dir.exists():
        raise UserError(f"results directory {results_dir} does not exist: run a grid first")
    return [read_result(path) for path in sorted(results_dir.rglob("cells/*.json"))]


def recorded_statuses(results_dir: Path) -> dict[str, str]:
    """Config hash → status of every readable cell record (a corrupt file counts as absent)."""
    statuses: dict[str, str] = {}
    for path in (results_dir / "cells").glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("status") in (FINISHED, FAILED):
            statuses[path.stem] = record["status"]
    return statuses
