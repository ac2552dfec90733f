"""Reproduce a grid: run its cells afresh in a run directory of their own, beside the reference.

The committed records (``results/<grid>/cells/*.json``) are the reference; a reproduction
never writes there. Each reproduction gets ``runs/<grid>/<UTC time>/`` (under the working
directory) holding its records (``results/<grid>/cells``), its MLflow store (``mlruns/``),
its report (``report/``) and the comparison (``reproduction.md``, ``.csv``). ``--reuse``
resumes the newest run directory of the grid instead of starting a new one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config import CellConfig
from benchmark.errors import UserError
from benchmark.results import FINISHED

RUNS_ROOT = Path("runs")
STAMP_FORMAT = "%Y%m%d-%H%M%S"
SAMPLE_SEED = 0  # the draw of ``--cells N`` is the same on every machine


@dataclass(frozen=True)
class RunDir:
    """Where one reproduction writes everything."""

    root: Path

    @property
    def results_root(self) -> Path:
        return self.root / "results"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def report(self) -> Path:
        return self.root / "report"


def new_run_dir(runs_root: Path, grid: str, now: datetime | None = None) -> RunDir:
    """A run directory that does not exist yet: ``<runs_root>/<grid>/<YYYYmmdd-HHMMSS>[-k]``."""
    stamp = (now or datetime.now(UTC)).strftime(STAMP_FORMAT)
    base = runs_root / grid
    candidate, k = base / stamp, 1
    while candidate.exists():
        k += 1
        candidate = base / f"{stamp}-{k}"
    return RunDir(candidate)


def latest_run_dir(runs_root: Path, grid: str) -> RunDir | None:
    """The grid's newest run directory (names sort by time), or None."""
    folder = runs_root / grid
    found = sorted(path for path in folder.glob("*") if path.is_dir()) if folder.is_dir() else []
    return RunDir(found[-1]) if found else None


def load_reference(reference_dir: Path) -> dict[str, dict[str, Any]]:
    """Config hash → record of every readable record under ``reference_dir/cells``; {} when absent."""
    if reference_dir.exists() and not reference_dir.is_dir():
        raise UserError(f"reference {reference_dir} is not a directory")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((reference_dir / "cells").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("config"), dict) and "status" in record:
            found[path.stem] = record
    return found


def sample_cells(
    cells: Sequence[CellConfig], count: int, reference: Mapping[str, Mapping[str, Any]]
) -> list[CellConfig]:
    """``count`` cells drawn deterministically and spread over methods.

    Cells with a finished reference record are drawn first (a cell without one has nothing to be
    compared with). Methods take turns in a seeded order; each method gives its cells in a seeded
    order, so every method is drawn once before any is drawn twice.
    """
    if count < 1:
        raise UserError(f"--cells must be at least 1, got {count}")
    rng = np.random.default_rng(SAMPLE_SEED)
    with_reference = [c for c in cells if reference.get(c.config_hash, {}).get("status") == FINISHED]
    pool = with_reference or list(cells)
    by_method: dict[str, list[CellConfig]] = {}
    for cell in sorted(pool, key=lambda c: c.config_hash):
        by_method.setdefault(cell.method, []).append(cell)
    methods = sorted(by_method)
    queues = [[by_method[m][i] for i in rng.permutation(len(by_method[m]))] for m in methods]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    drawn: list[CellConfig] = []
    while len(drawn) < min(count, len(pool)):
        for queue in queues:
            if queue and len(drawn) < count:
                drawn.append(queue.pop(0))
    return drawn


def reference_threads(records: Iterable[Mapping[str, Any]]) -> int | None:
    """The torch thread count every given reference record was computed at, or None if they differ
    (thread counts change float results, so a bit-identical rerun needs the same one)."""
    counts = {(record.get("provenance") or {}).get("threads") for record in records}
    if len(counts) == 1:
        (count,) = counts
        if isinstance(count, int) and count >= 1:
            return count
    return None
