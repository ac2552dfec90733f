"""Cell result records: one JSON file per cell, named by its config hash, written atomically."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import CellConfig
from benchmark.crashpoints import crash_point
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


def temp_prefix(name: str) -> str:
    """The start of a temporary file's name: the target's name and its writer (pid and host)."""
    return f".{name}~{os.getpid()}@{socket.gethostname()}~"


def write_bytes_atomic(path: Path, payload: bytes, durable: bool = False) -> None:
    """Write to a temporary file in the same folder, then rename: never a partial file.

    ``durable`` also fsyncs before the rename, so a record survives a machine crash. The
    temporary file's name holds its writer's pid and host, so that ``sweep_temp_files`` can
    remove one that a killed writer left (a SIGKILL skips the cleanup below).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; results are for everyone to read
        crash_point("during_record_write", path.stem)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def sweep_temp_files(directory: Path) -> int:
    """Remove the temporary files in ``directory`` whose writer is gone; how many were removed.

    A writer on this host is gone when its pid is; one on another host (a shared results
    directory) when the file is older than ``LOCK_EXPIRY_SECONDS``; a file named by an older
    version of the suite (no writer in its name) when it is older than a minute.
    """
    removed = 0
    host = socket.gethostname()
    found = [*directory.glob(".*.tmp"), *directory.glob(".*.tmp-*")] if directory.is_dir() else []
    for temp in found:  # ".tmp-journal": what SQLite keeps beside a temporary store
        parts = temp.name.rsplit(".tmp", 1)[0].rsplit("~", 2)
        pid_text, _, writer_host = parts[1].partition("@") if len(parts) == 3 else ("", "", "")
        try:
            age = time.time() - temp.stat().st_mtime
        except FileNotFoundError:
            continue
        if not pid_text.isdigit():
            gone = age > 60
        elif writer_host == host:
            gone = not process_alive(int(pid_text), None)
        else:
            gone = age > LOCK_EXPIRY_SECONDS
        if gone:
            temp.unlink(missing_ok=True)
            removed += 1
    return removed


def write_json_atomic(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode(), durable=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def save_result(results_dir: Path, result: CellResult) -> Path:
    path = cell_path(results_dir, result.config_hash)
    write_json_atomic(path, result.to_dict())
    return path


def record_problem(record: Any, digest: str) -> str | None:
    """Why ``record`` is not a valid record of the cell named ``digest`` (its config hash), or None.

    A record counts only if it is a cell record, its config is a whole cell config that hashes
    to ``digest`` (another cell's record saved under this name does not count), and it holds
    what its status promises: a finished record its square accuracy matrix of finite numbers
    and its final average, a failed one its error.
    """
    if not isinstance(record, dict):
        return "not a cell record"
    status = record.get("status")
    if status not in (FINISHED, FAILED):
        return f"status {status!r} is neither {FINISHED!r} nor {FAILED!r}"
    if not isinstance(record.get("config"), dict):
        return "no config"
    try:
        actual = CellConfig.from_dict(record["config"]).config_hash
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        return f"not a whole cell config ({type(error).__name__}: {error})"
    if actual != digest or record.get("config_hash") != digest:
        return f"its config hashes to {actual}, but it is filed as {digest}"
    if status == FAILED:
        return None if isinstance(record.get("error"), str) and record["error"] else "failed without an error"
    matrix = record.get("accuracy_matrix")
    if (
        not isinstance(matrix, list)
        or not matrix
        or not all(isinstance(row, list) and len(row) == len(matrix) for row in matrix)
        or not all(_finite(value) for row in matrix for value in row)
    ):
        return "finished without a square accuracy matrix of numbers"
    if not _finite(record.get("final_average_accuracy")):
        return "finished without its final average accuracy"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _looks_like_hash(name: str) -> bool:
    return len(name) == 16 and all(c in "0123456789abcdef" for c in name)


def read_result(path: Path) -> dict[str, Any]:
    """One valid cell record; a corrupt or invalid file is a one-line UserError naming it.

    A file named by a config hash must hold that cell's record; another name (a copy given
    by path) must hold a record valid under its own ``config_hash``.
    """
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UserError(f"corrupt cell result {path}: {error}") from None
    digest = (
        path.stem
        if _looks_like_hash(path.stem) or not isinstance(record, dict)
        else record.get("config_hash")
    )
    problem = record_problem(record, str(digest))
    if problem is not None:
        raise UserError(f"corrupt cell result {path}: {problem}")
    return record


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every cell record under ``results_dir`` (searched recursively for ``cells/*.json``)."""
    if not results_dir.exists():
        raise UserError(f"results directory {results_dir} does not exist: run a grid first")
    if not results_dir.is_dir():
        raise UserError(f"results directory {results_dir} is not a directory")
    return [read_result(path) for path in sorted(results_dir.rglob("cells/*.json"))]


def valid_record(results_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The cell's record if it is valid (``record_problem``), else None: absent, corrupt or invalid."""
    try:
        record = json.loads(cell_path(results_dir, config_hash).read_bytes())
    except (OSError, ValueError):
        return None
    return record if record_problem(record, config_hash) is None else None


def recorded_statuses(results_dir: Path) -> dict[str, str]:
    """Config hash → status of every valid cell record (a corrupt or invalid one counts as absent)."""
    statuses: dict[str, str] = {}
    for path in (results_dir / "cells").glob("*.json"):
        record = valid_record(results_dir, path.stem)
        if record is not None:
            statuses[path.stem] = record["status"]
    return statuses


# --- Claims: which run is computing a cell ---------------------------------------------------------
#
# Before a run computes a cell it creates ``cells/<hash>.lock`` with O_CREAT | O_EXCL (atomic on a
# local or NFSv3+ file system) holding its pid, host, process start time and the time; while it
# holds the lock its driver touches it every ``LOCK_HEARTBEAT_SECONDS`` (a heartbeat). The driver
# removes the lock after the cell's record is written and its MLflow run ended. A second run that
# finds a lock skips the cell ("running elsewhere") unless the lock is stale, which it then takes
# over: on this host when its process is gone (a SIGKILL, a crash, an OOM kill); from another host
# (or one a restarted container calls by another name) when its heartbeat is older than
# ``LOCK_EXPIRY_SECONDS``; unreadable (garbage, no pid) when older than a few seconds.
#
# A run that computes cells in its own process (``--jobs 1``) dies with a cell that kills its
# process; the lock then counts that death, and a cell whose lock counts ``MAX_PROCESS_DEATHS`` is
# recorded as failed instead of run again (worker processes, ``--jobs N``, report such a death
# directly).

LOCK_HEARTBEAT_SECONDS = 30.0
LOCK_EXPIRY_SECONDS = 600.0
UNREADABLE_LOCK_GRACE_SECONDS = 10.0
MAX_PROCESS_DEATHS = 2


def lock_path(results_dir: Path, config_hash: str) -> Path:
    return results_dir / "cells" / f"{config_hash}.lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` of this host lives (and, given ``start``, is the one started then)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _process_start(pid) in (None, start)


def _holder(in_process: bool = False, deaths: int = 0) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "time": time.time(),
        "in_process": in_process,
        "deaths": deaths,
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
    """The lock's holder; None when the lock is gone. A lock that is not a holder's JSON (half
    written by a killed run, garbage, another tool's) reads as {}; so does one without a pid."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(data)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return {}
    if not isinstance(holder, dict):
        return {}
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(host, str) or not host:
        return {}
    return holder


def _age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def _is_stale(holder: dict[str, Any], path: Path) -> bool:
    """Whether the lock's holder is gone (see the comment above); FileNotFoundError if the lock is."""
    if not holder:
        return _age(path) > UNREADABLE_LOCK_GRACE_SECONDS
    if holder["host"] != socket.gethostname():
        return _age(path) > LOCK_EXPIRY_SECONDS
    start = holder.get("process_start")
    return not process_alive(holder["pid"], start if isinstance(start, str) else None)


def describe_lock(path: Path, holder: dict[str, Any] | None) -> str:
    """``cells/<hash>.lock (pid 12 on host h, heartbeat 4 s ago)``: what a user needs to judge it."""
    try:
        age = f"heartbeat {_age(path):.0f} s ago"
    except OSError:
        age = "gone"
    who = f"pid {holder['pid']} on host {holder['host']}" if holder else "unreadable"
    return f"{path} ({who}, {age})"


@dataclass(frozen=True)
class Claim:
    """The outcome of ``try_claim``: taken, or the live lock that keeps this run off the cell."""

    taken: bool
    path: Path
    holder: dict[str, Any] | None = None  # the live holder when not taken
    deaths: int = 0  # processes that died computing the cell in-process (counted by its lock)

    def describe(self) -> str:
        return describe_lock(self.path, self.holder)


def try_claim(results_dir: Path, config_hash: str, in_process: bool = False) -> Claim:
    """Take the cell's lock, or say who holds it. ``in_process``: this process computes the cell
    itself (so its death is the cell's, and a takeover of its lock counts it)."""
    path = lock_path(results_dir, config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder: dict[str, Any] | None = None
    for _ in range(5):
        if _create_exclusive(path, _holder(in_process)):
            return Claim(True, path)
        holder = _read_holder(path)
        if holder is None:
            continue  # released between our create and read: try again
        try:
            stale = _is_stale(holder, path)
        except FileNotFoundError:
            continue
        if not stale:
            return Claim(False, path, holder)
        deaths = int(holder.get("deaths", 0) or 0) + (1 if holder.get("in_process") else 0)
        # Take a stale lock over under a second, short-lived lock, so that two runs recovering
        # the same cell at once cannot both win (or remove the lock the winner just made).
        takeover = path.with_suffix(".takeover")
        if not _create_exclusive(takeover, _holder()):
            other = _read_holder(takeover)
            with contextlib.suppress(FileNotFoundError):
                if other is not None and _is_stale(other, takeover):
                    takeover.unlink(missing_ok=True)
            return Claim(False, path, other or holder)
        try:
            if _read_holder(path) == holder:
                path.unlink(missing_ok=True)
                if _create_exclusive(path, _holder(in_process, deaths)):
                    return Claim(True, path, deaths=deaths)
        finally:
            takeover.unlink(missing_ok=True)
    return Claim(False, path, holder)


def claim_cell(results_dir: Path, config_hash: str) -> bool:
    """Take the cell's lock: True when this process may compute it, False when a live run holds it."""
    return try_claim(results_dir, config_hash).taken


def touch_lock(results_dir: Path, config_hash: str) -> None:
    """The heartbeat: refresh the lock's time, so that other hosts see its holder is alive."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(lock_path(results_dir, config_hash))


def release_cell(results_dir: Path, config_hash: str) -> None:
    """Remove this process's lock of the cell (another run's lock is left alone)."""
    path = lock_path(results_dir, config_hash)
    holder = _read_holder(path)
    if holder and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
        path.unlink(missing_ok=True)


def live_locks(results_dir: Path) -> set[str]:
    """The cells whose lock a live run holds (a stale lock does not count)."""
    held = set()
    for path in (results_dir / "cells").glob("*.lock"):
        holder = _read_holder(path)
        try:
            if holder is not None and not _is_stale(holder, path):
                held.add(path.stem)
        except FileNotFoundError:
            continue
    return held


def sweep_stale_locks(results_dir: Path) -> list[str]:
    """Remove stale locks of recorded cells and stale takeover locks: the record is the truth, a
    lock left beside it by a killed run means nothing. The stale lock of a cell without a record
    stays until a run claims the cell (it counts the deaths). Returns the hashes swept."""
    swept = []
    for path in sorted((results_dir / "cells").glob("*.lock")) + sorted(
        (results_dir / "cells").glob("*.takeover")
    ):
        holder = _read_holder(path)
        try:
            if holder is None or not _is_stale(holder, path):
                continue
        except FileNotFoundError:
            continue
        if path.suffix == ".takeover" or valid_record(results_dir, path.stem) is not None:
            path.unlink(missing_ok=True)
            swept.append(path.stem)
    return swept


def record_status(results_dir: Path, config_hash: str) -> str | None:
    """The status of the cell's valid record, or None (absent, corrupt or invalid)."""
    record = valid_record(results_dir, config_hash)
    return None if record is None else record["status"]


def check_results_dir(results_dir: Path) -> None:
    """Make ``results_dir/cells`` and prove it writable, before any cell runs; a UserError if not
    (also when something other than a file sits where a cell record belongs)."""
    cells = results_dir / "cells"
    try:
        cells.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=temp_prefix("probe"), suffix=".tmp", dir=cells)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"results directory {results_dir} is not a writable directory: {reason}") from None
    for path in sorted(cells.glob("*.json")):
        if not path.is_file():
            raise UserError(f"{path} is where a cell record belongs but is not a file: remove it and rerun")
