"""Cell result records: one JSON file per cell, named by its config hash, written atomically."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
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
    tokens_per_sample: int | None = None  # None where it varies (tokengreedy, token_fraction = "auto")
    tokens_per_task: list[int] = field(default_factory=list)  # patch tokens stored per finished task
    token_fraction_per_task: list[float | None] = field(default_factory=list)  # t used (None: varies)
    # token_fraction = "auto": per task, held-out nearest-neighbour accuracy@t and margin@t per candidate t
    auto_token_fraction_scores: list[dict[str, float] | None] | None = None
    partial_input_accuracy: dict[str, dict[str, list[list[float]]]] | None = None  # mode → t → matrix
    attribution: dict[str, float] | None = None
    selection_seconds: float = 0.0
    training_seconds: float = 0.0
    wall_seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    # The objective's end-of-cell metric set (captioning: BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE per
    # task), None where it has none; left out of the record then, so classification records keep their keys.
    extra_metrics: dict[str, Any] | None = None
    metric: str = "accuracy"  # what the accuracy matrix holds (the objective's metric: accuracy, CIDEr)
    # Protocol 2 (README, "The protocol"); left out of the record where None, like extra_metrics.
    validation_matrix: list[list[float]] | None = None  # [i][j]: metric on task j's validation slice
    validation_final_accuracy: float | None = None  # mean of its last row: what [tune] chooses by
    tuning: dict[str, Any] | None = None  # [tune]: searched values, every candidate's validation, chosen
    shortcut: list[dict[str, Any]] | None = None  # per task i: benchmark.diagnostics.shortcut_row
    class_order: list[list[int]] | None = None  # the classes of each task, in stream order
    classes_per_task: list[int] | None = None  # per stored task: classes of its training data
    classes_covered_per_task: list[int] | None = None  # per stored task: classes with a stored sample

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for name in OPTIONAL_FIELDS:
            if record[name] is None:
                del record[name]
        return record


OPTIONAL_FIELDS: tuple[str, ...] = (
    "extra_metrics",
    "validation_matrix",
    "validation_final_accuracy",
    "tuning",
    "shortcut",
    "class_order",
    "classes_per_task",
    "classes_covered_per_task",
)


def cell_path(results_dir: Path, config_hash: str) -> Path:
    return results_dir / "cells" / f"{config_hash}.json"


def write_bytes_atomic(path: Path, payload: bytes, durable: bool = False) -> None:
    """Write to a temporary file in the same folder, then rename: never a partial file.

    ``durable`` also fsyncs before the rename, so a record survives a machine crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode(), durable=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


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
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} is not a directory")
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


# --- Claims: which run is computing a cell ---------------------------------------------------------
#
# Before a run computes a cell it creates ``cells/<hash>.lock`` with O_CREAT | O_EXCL (atomic on a
# local or NFSv3+ file system) holding its pid, host, process start time and the time. The driver
# removes the lock after the cell's record is written. A second run that finds a lock skips the cell
# ("running elsewhere") unless the lock is stale: its process is gone from this host (a SIGKILL, a
# crash), which a rerun detects and takes over. A lock from another host is never taken over here;
# delete it by hand if that machine is gone (the error names it).


def lock_path(results_dir: Path, config_hash: str) -> Path:
    return results_dir / "cells" / f"{config_hash}.lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _process_start(pid) in (None, start)


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "time": time.time(),
    }


def _create_exclusive(path: Path, payload: dict[str, Any]) -> bool:
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream)
        stream.flush()
        os.fsync(stream.fileno())
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    """The lock's holder; None when the lock is gone. A lock half written by a killed run reads as {}."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _is_stale(holder: dict[str, Any], path: Path) -> bool:
    if not holder:  # empty or unreadable: the creator died between create and write
        return time.time() - path.stat().st_mtime > 10
    if holder.get("host") != socket.gethostname():
        return False
    return not _pid_alive(int(holder.get("pid", -1)), holder.get("process_start"))


def claim_cell(results_dir: Path, config_hash: str) -> bool:
    """Take the cell's lock: True when this process may compute it, False when a live run holds it."""
    path = lock_path(results_dir, config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        if _create_exclusive(path, _holder()):
            return True
        holder = _read_holder(path)
        if holder is None:
            continue  # released between our create and read: try again
        try:
            stale = _is_stale(holder, path)
        except FileNotFoundError:
            continue
        if not stale:
            return False
        # Take a stale lock over under a second, short-lived lock, so that two runs recovering
        # the same cell at once cannot both win (or remove the lock the winner just made).
        takeover = path.with_suffix(".takeover")
        if not _create_exclusive(takeover, _holder()):
            other = _read_holder(takeover)
            if other is not None and other and _is_stale(other, takeover):
                takeover.unlink(missing_ok=True)
            return False
        try:
            if _read_holder(path) == holder:
                path.unlink(missing_ok=True)
                return _create_exclusive(path, _holder())
        finally:
            takeover.unlink(missing_ok=True)
    return False


def release_cell(results_dir: Path, config_hash: str) -> None:
    """Remove this process's lock of the cell (another run's lock is left alone)."""
    path = lock_path(results_dir, config_hash)
    holder = _read_holder(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def record_status(results_dir: Path, config_hash: str) -> str | None:
    """The status of the cell's readable record, or None (absent or corrupt)."""
    try:
        record = json.loads(cell_path(results_dir, config_hash).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    status = record.get("status") if isinstance(record, dict) else None
    return status if status in (FINISHED, FAILED) else None


def check_results_dir(results_dir: Path) -> None:
    """Make ``results_dir/cells`` and prove it writable, before any cell runs; a UserError if not."""
    cells = results_dir / "cells"
    try:
        cells.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=cells)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"results directory {results_dir} is not a writable directory: {reason}") from None
