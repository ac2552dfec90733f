"""Which cells of a grid a run computes: ``--only`` picks cells, each cell gets a state.

A cell's state comes from its record in the results directory and the fingerprint of the
code that would compute it now (``benchmark.provenance.CodeFingerprints``):

- ``to run``: no record (or a corrupt one);
- ``done``: finished, by the code as it is now;
- ``stale``: recorded (finished or failed) by code that has changed since;
- ``unknown``: finished before records held a fingerprint: kept as done (``reproduce`` checks it);
- ``failed``: failed, by the code as it is now (rerun with ``--retry-failed``);
- ``running elsewhere``: no record and the cell's lock exists (another run holds it, or a run
  that died left it: ``run`` takes a dead run's lock over when it claims the cell).

``run`` computes the cells to run or locked, the stale ones (unless ``--keep-stale``) and, with
``--retry-failed``, the failed ones; ``--dry-run`` prints this plan and runs nothing.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import registry
from benchmark.config import CellConfig
from benchmark.errors import UserError
from benchmark.learner import TaskCache
from benchmark.provenance import CodeFingerprints, changed_code
from benchmark.results import FAILED, FINISHED, cell_path, lock_path

TO_RUN = "to run"
DONE = "done"
STALE = "stale"
UNKNOWN = "unknown"
FAILED_STATE = "failed"
RUNNING_ELSEWHERE = "running elsewhere"
STATES = (DONE, UNKNOWN, STALE, FAILED_STATE, RUNNING_ELSEWHERE, TO_RUN)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- --only KEY=VALUE


def cell_fields(cell: CellConfig) -> dict[str, Any]:
    """The cell's settings by dotted key: ``method``, ``seed``, ``train.replay``, ``task_params.x``."""
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}", inner)
        else:
            flat[prefix] = value

    for key, value in cell.to_dict().items():
        add(key, value)
    return flat


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string: a method name, a replay mode


def _matches(value: Any, wanted: Any) -> bool:
    if value is None:
        return str(wanted).lower() in ("none", "null", "-")
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted or str(value).lower() == str(wanted).lower()
    if isinstance(value, int | float) and isinstance(wanted, int | float):
        return math.isclose(value, wanted, rel_tol=1e-12, abs_tol=0.0)
    return str(value) == str(wanted)


def select_cells(cells: Sequence[CellConfig], only: Sequence[str]) -> list[CellConfig]:
    """The cells that match every ``--only KEY=VALUE`` (a key given twice matches either value).

    An unknown key, or a value that no cell has, is a one-line UserError naming what exists.
    """
    wanted: dict[str, list[Any]] = {}
    for item in only:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise UserError(f"--only {item!r} must look like KEY=VALUE, e.g. method=gradmatch")
        wanted.setdefault(key.strip(), []).append(_parse_value(text.strip()))
    fields = [cell_fields(cell) for cell in cells]
    known = sorted({key for flat in fields for key in flat})
    for key, values in wanted.items():
        if key not in known:
            raise UserError(registry.unknown_name_message("--only key", key, known))
        present = [flat[key] for flat in fields if key in flat]
        for value in values:
            if not any(_matches(have, value) for have in present):
                taken = sorted({str(have) for have in present})
                close = difflib.get_close_matches(str(value), taken, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(
                    f"--only {key}={value} matches no cell of the grid{hint}; {key} takes: {', '.join(taken)}"
                )
    picked = [
        cell
        for cell, flat in zip(cells, fields, strict=True)
        if all(key in flat and any(_matches(flat[key], v) for v in values) for key, values in wanted.items())
    ]
    if not picked:
        raise UserError(f"--only {' '.join(only)} select no cell of the grid together")
    return picked


# ---------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedCell:
    config: CellConfig
    state: str
    code: dict[str, Any]  # the fingerprint of the code that would compute it now
    changed: tuple[str, ...] = ()  # stale: the parts of the code that changed since its record


@dataclass(frozen=True)
class Plan:
    cells: tuple[PlannedCell, ...]

    def counts(self) -> Counter[str]:
        return Counter(cell.state for cell in self.cells)

    def states_to_run(self, retry_failed: bool, keep_stale: bool) -> frozenset[str]:
        states = {TO_RUN, RUNNING_ELSEWHERE}  # a lock is tested when the cell is claimed (a dead run's
        # lock is taken over then)
        if not keep_stale:
            states.add(STALE)
        if retry_failed:
            states.add(FAILED_STATE)
        return frozenset(states)

    def to_run(self, retry_failed: bool = False, keep_stale: bool = False) -> list[CellConfig]:
        states = self.states_to_run(retry_failed, keep_stale)
        return [cell.config for cell in self.cells if cell.state in states]

    def code_for(self, config_hash: str) -> dict[str, Any]:
        return next(cell.code for cell in self.cells if cell.config.config_hash == config_hash)


def read_record(results_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The cell's record, or None when it is absent or unreadable (then the cell runs again)."""
    try:
        record = json.loads(cell_path(results_dir, config_hash).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("status") not in (FINISHED, FAILED):
        return None
    return record


def record_state(record: dict[str, Any] | None, code: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The state a record gives its cell, and what changed when it is stale (no lock considered)."""
    if record is None:
        return TO_RUN, ()
    changed = changed_code((record.get("provenance") or {}).get("code"), code)
    if changed:
        return STALE, tuple(changed)
    if record["status"] == FAILED:
        return FAILED_STATE, ()
    return (UNKNOWN if changed is None else DONE), ()


def plan_grid(
    cells: Sequence[CellConfig], results_dir: Path, cache: TaskCache, fingerprints: CodeFingerprints
) -> Plan:
    """Each cell (once per hash) with its state; ``cache`` builds the task streams (for objectives)."""
    planned: dict[str, PlannedCell] = {}
    for cell in cells:
        digest = cell.config_hash
        if digest in planned:
            continue
        code = fingerprints.for_cell(cell, cache.get(cell.task, cell.task_params))
        state, changed = record_state(read_record(results_dir, digest), code)
        if state == TO_RUN and lock_path(results_dir, digest).exists():
            state = RUNNING_ELSEWHERE
        planned[digest] = PlannedCell(cell, state, code, changed)
    return Plan(tuple(planned.values()))


def still_to_run(plan: Plan, results_dir: Path, retry_failed: bool, keep_stale: bool, digest: str) -> bool:
    """Whether a cell is still to run now that its lock is held: another run may have recorded it
    with the current code since the plan was made."""
    state, _ = record_state(read_record(results_dir, digest), plan.code_for(digest))
    return state in plan.states_to_run(retry_failed, keep_stale)


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    """The plan as table rows (``--dry-run``): state, hash, cell, code fingerprint, what changed."""
    rows = []
    for cell in plan.cells:
        config = cell.config
        rows.append(
            {
                "state": cell.state,
                "hash": config.config_hash,
                "task": config.task,
                "method": config.method,
                "retention": "-" if config.retention is None else f"{config.retention:g}",
                "t": config.token_fraction,
                "seed": config.seed,
                "code": cell.code["fingerprint"],
                "changed": ", ".join(cell.changed),
            }
        )
    return rows


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    parts = [f"{counts[state]} {state}" for state in STATES if counts[state]]
    return f"{len(plan.cells)} cells: " + (", ".join(parts) if parts else "none")


def log_plan(plan: Plan, keep_stale: bool) -> None:
    """Say which cells are stale and why (each cell's state with ``-v``)."""
    for cell in plan.cells:
        changed = f" ({', '.join(cell.changed)} changed)" if cell.changed else ""
        logger.debug("%s: %s %s%s", cell.state, cell.config.config_hash, cell.config.label, changed)
    stale = Counter(", ".join(cell.changed) for cell in plan.cells if cell.state == STALE)
    for changed, count in sorted(stale.items()):
        action = "kept (--keep-stale)" if keep_stale else "rerun"
        logger.info("stale: %d cells whose code changed since their record (%s): %s", count, changed, action)
    unknown = plan.counts()[UNKNOWN]
    if unknown:
        logger.info(
            "%d cells were recorded before records held a code fingerprint: kept as done "
            "(`python -m benchmark reproduce` checks them)",
            unknown,
        )
