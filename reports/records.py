"""The one typed view of cell records that every report reads: a frame with one row per cell.

``cell_frame(records)`` is built once per report from the record dicts (``benchmark.results.CellResult``
fields and the cell's config, ``benchmark.config.CellConfig``). This module is the only place in
``reports/`` that reads a record by key; everything else reads the frame's declared columns
(``COLUMNS``, plus ``attribution.<name>`` and ``train.<setting>`` columns, see ``cell_frame``).

``token_fraction`` has one representation: a float in (0, 1], or ``benchmark.config.AUTO`` (the
string the engine uses) where t was picked per task; ``is_auto``, ``fraction_order``,
``numeric_fraction`` and ``fraction_text`` read it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd

from benchmark.config import (
    AUTO,
    LATER_CELL_FIELDS,
    LATER_SELECTOR_PARAMS,
    LATER_TASK_PARAMS,
    LATER_TRAIN_FIELDS,
    CellConfig,
    TrainConfig,
    without_older_values,
)
from benchmark.grid import STREAM_SEED_PARAMS
from benchmark.learner import input_dropout_for
from benchmark.results import FAILED, FINISHED, CellResult

Record = dict[str, Any]

BOUND = "bound"
CORESET = "coreset"
TOKENSET = "core tokenset"
KIND_ORDER = {BOUND: 0, CORESET: 1, TOKENSET: 2}
BOUND_METHODS = frozenset({"none", "joint"})
ACCURACY = "accuracy"
ATTRIBUTION_PREFIX = "attribution."
TRAIN_PREFIX = "train."
AUTO_SUFFIX = " [t=auto]"
SEED_DRAWN = "seed"  # a task parameter drawn from the cell's seed (data_seed, class_order_seed)
# [train] settings that change what is measured or where, not what is learned: not regime axes.
MEASUREMENT_ONLY = frozenset({"train.partial_inputs", "train.eval_batch_size", "train.device"})

# Declared columns and their dtypes; ``attribution.<name>`` (float64) and ``train.<setting>`` (object)
# columns follow, one per name found in the records.
COLUMNS: dict[str, str] = {
    "config_hash": "str",
    "status": "str",
    "error": "object",  # str, or None for a finished cell
    "grid": "str",
    "task": "str",
    "task_params": "object",  # dict, as recorded (the task's constructor parameters)
    # dict: the task parameters that define the setting, those drawn from the seed (stream seeds) as
    # SEED_DRAWN, so that the cells of one setting differ only in their seed
    "setting_params": "object",
    "method": "str",
    "sample_selector": "str",
    "token_selector": "object",  # str, or None for a coreset or a bound
    "selector_params": "object",  # dict
    "token_selector_params": "object",  # dict
    "retention": "float64",  # NaN for the bounds
    "token_fraction": "object",  # float in (0, 1], or AUTO
    "seed": "int64",
    "protocol": "int64",  # the evaluation protocol (README, "The protocol"); 1 for records before it
    "tune": "object",  # dict: [tune] train field → candidates ({}: none)
    "kind": "str",  # BOUND, CORESET or TOKENSET
    "task_label": "str",  # the task, plus the task parameters that vary among its finished cells
    "method_label": "str",  # the method, plus selector and [train] settings that vary; " [t=auto]"
    "selector_label": "str",  # the method, plus only the selector parameters that vary
    # tuple of (axis, value): every setting but the method, its t and the seed (task parameters added
    # later filled in at their older-behaviour value)
    "regime": "object",
    "metric": "str",  # what the accuracy matrix holds: accuracy, CIDEr, …
    "final_average_accuracy": "float64",
    "average_forgetting": "float64",
    "backward_transfer": "float64",
    "diagonal_mean": "float64",  # stored, or the mean of the matrix's diagonal; NaN without either
    "accuracy_matrix": "object",  # float ndarray [tasks, tasks]
    "bytes_used": "float64",
    "bytes_allowed": "float64",
    "token_fraction_per_task": "object",  # list of the t used per task (None where it varies)
    "partial_input_accuracy": "object",  # {ranking: {t: matrix}} or None
    # protocol 2: final average accuracy on the tasks' validation slices (of the [tune] candidate
    # chosen); NaN for records without a validation slice (protocol 1)
    "validation_final_accuracy": "float64",
    # min over the tasks that store memory of classes covered / classes of the task; NaN without counts
    "coverage": "float64",
    # the shortcut diagnostics after the last task (benchmark.diagnostics.shortcut_row), or None
    "shortcut_final": "object",
    "commit": "str",
    "device": "str",
    "versions": "object",  # dict: package → version
}
RESULT_FIELDS = frozenset(field.name for field in fields(CellResult))


# --- token fraction -------------------------------------------------------------------------------


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == AUTO


def numeric_fraction(value: Any) -> float:
    """t as a float; NaN for AUTO."""
    return math.nan if is_auto(value) else float(value)


def fraction_order(value: Any) -> tuple[int, float]:
    """Sort key of token fractions: numbers ascending, AUTO after them."""
    return (1, math.inf) if is_auto(value) else (0, float(value))


def fraction_text(value: Any, percent: str = "%") -> str:
    """``25%`` (or ``auto``)."""
    return AUTO if is_auto(value) else f"{float(value) * 100:g}{percent}"


def same_fraction(a: Any, b: Any) -> bool:
    if is_auto(a) or is_auto(b):
        return is_auto(a) and is_auto(b)
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


# --- records -> rows -------------------------------------------------------------------------------


def unique_records(records: Iterable[Record]) -> list[Record]:
    """One record per config hash (the same cell found in two grids' folders), a finished one first."""
    chosen: dict[str, Record] = {}
    for record in records:
        previous = chosen.get(record["config_hash"])
        if previous is None or (previous["status"] != FINISHED and record["status"] == FINISHED):
            chosen[record["config_hash"]] = record
    return list(chosen.values())


def _result(record: Record) -> CellResult:
    """The record as the engine's dataclass (fields a record lacks at their defaults)."""
    return CellResult(**{key: value for key, value in record.items() if key in RESULT_FIELDS})


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _diagonal_mean(result: CellResult, matrix: np.ndarray) -> float:
    if result.diagonal_mean is not None:
        return float(result.diagonal_mean)
    diagonal = [matrix[i, i] for i in range(min(matrix.shape))] if matrix.ndim == 2 else []
    return float(np.mean(diagonal)) if diagonal else math.nan


def _coverage(classes: Sequence[int] | None, covered: Sequence[int] | None) -> float:
    """The smallest share of a task's classes that its memory keeps a sample of; NaN without counts
    (protocol 1 records, the bounds, which store nothing)."""
    pairs = [(int(n), int(k)) for n, k in zip(classes or [], covered or [], strict=True) if int(n) > 0]
    return min(k / n for n, k in pairs) if pairs else math.nan


def _kind(config: Record) -> str:
    if config["method"] in BOUND_METHODS or config.get("retention") is None:
        return BOUND
    return CORESET if config.get("token_selector") is None else TOKENSET


def _hashable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _regime(row: Record) -> tuple:
    """The regime axes in a fixed order: task, retention, task parameters (those added later at their
    older value, those drawn from the seed as ``SEED_DRAWN``), ``protocol``, ``train.<setting>``,
    ``tune``."""
    task_params = {**LATER_TASK_PARAMS, **row["setting_params"]}
    axes: dict[str, Any] = {
        "task": row["task"],
        "retention": None if math.isnan(row["retention"]) else row["retention"],
    }
    axes.update({key: _hashable(task_params[key]) for key in sorted(task_params)})
    axes["protocol"] = row["protocol"]
    axes.update({key: _hashable(row[key]) for key in sorted(row) if key.startswith(TRAIN_PREFIX)})
    axes["tune"] = _hashable(row["tune"])
    return tuple((axis, value) for axis, value in axes.items() if axis not in MEASUREMENT_ONLY)


def _seed_drawn(rows: Sequence[Record]) -> set[tuple[str, int]]:
    """The (task, protocol) groups whose cells all drew their stream from their seed: every
    ``STREAM_SEED_PARAMS`` parameter a cell has equals its seed (``stream_seeds = true``)."""
    groups: dict[tuple[str, int], bool] = {}
    for row in rows:
        params = [row["task_params"][key] for key in STREAM_SEED_PARAMS if key in row["task_params"]]
        drawn = bool(params) and all(value == row["seed"] for value in params)
        key = (row["task"], row["protocol"])
        groups[key] = groups.get(key, True) and drawn
    return {key for key, drawn in groups.items() if drawn}


def _settings(rows: list[Record]) -> None:
    """``setting_params`` and ``regime`` of each row: a parameter drawn from the seed is part of the
    repetition, not of the setting, so cells of one setting differ only in their seed."""
    drawn = _seed_drawn(rows)
    for row in rows:
        params = dict(row["task_params"])
        if (row["task"], row["protocol"]) in drawn:
            params.update({key: SEED_DRAWN for key in STREAM_SEED_PARAMS if key in params})
        row["setting_params"] = params
        row["regime"] = _regime(row)


def _row(record: Record) -> Record:
    result = _result(record)
    config = result.config
    task_params = without_older_values(dict(config.get("task_params") or {}), LATER_TASK_PARAMS)
    train = {**LATER_TRAIN_FIELDS, **(config.get("train") or {})}
    retention = config.get("retention")
    matrix = np.asarray(result.accuracy_matrix or [], dtype=float)
    provenance = result.provenance or {}
    row: Record = {
        "config_hash": result.config_hash,
        "status": result.status,
        "error": None if result.error is None else str(result.error),
        "grid": str(config.get("grid") or ""),
        "task": config["task"],
        "task_params": task_params,
        "method": config["method"],
        "sample_selector": config.get("sample_selector") or config["method"].split("+")[0],
        "token_selector": config.get("token_selector"),
        "selector_params": without_older_values(
            dict(config.get("selector_params") or {}), LATER_SELECTOR_PARAMS
        ),
        "token_selector_params": dict(config.get("token_selector_params") or {}),
        "retention": _float(retention),
        "token_fraction": AUTO
        if is_auto(config.get("token_fraction"))
        else float(config.get("token_fraction", 1.0)),
        "seed": int(config.get("seed", 0)),
        "kind": _kind(config),
        "protocol": int(config.get("protocol", LATER_CELL_FIELDS["protocol"])),
        "tune": dict(config.get("tune") or {}),
        "metric": result.metric or ACCURACY,
        "final_average_accuracy": _float(result.final_average_accuracy),
        "average_forgetting": _float(result.average_forgetting),
        "backward_transfer": _float(result.backward_transfer),
        "diagonal_mean": _diagonal_mean(result, matrix),
        "accuracy_matrix": matrix,
        "bytes_used": _float(result.bytes_used),
        "bytes_allowed": _float(result.bytes_allowed),
        "token_fraction_per_task": list(result.token_fraction_per_task or []),
        "partial_input_accuracy": result.partial_input_accuracy,
        "validation_final_accuracy": _float(result.validation_final_accuracy),
        "coverage": _coverage(result.classes_per_task, result.classes_covered_per_task),
        "shortcut_final": dict(result.shortcut[-1]) if result.shortcut else None,
        "commit": str(provenance.get("commit") or ""),
        "device": str(provenance.get("device") or ""),
        "versions": dict(provenance.get("versions") or {}),
    }
    row.update({f"{ATTRIBUTION_PREFIX}{name}": _float(v) for name, v in (result.attribution or {}).items()})
    row.update({f"{TRAIN_PREFIX}{key}": value for key, value in train.items()})
    return row


# --- labels ------------------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def varying_keys(param_dicts: Iterable[Record]) -> list[str]:
    """Keys whose value (or presence) is not the same in every dict."""
    dicts = list(param_dicts)
    keys = sorted({key for params in dicts for key in params})
    unset = object()
    return [
        key
        for key in keys
        if len({_canonical(params[key]) if key in params else id(unset) for params in dicts}) > 1
    ]


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)


def _label(name: str, params: Record, keys: Sequence[str]) -> str:
    if not keys:
        return name
    shown = ", ".join(f"{key}={_plain(params.get(key))}" for key in keys)
    return f"{name}[{shown}]"


def _selector_params(row: pd.Series) -> Record:
    params = dict(row["selector_params"])
    params.update({f"token.{key}": value for key, value in row["token_selector_params"].items()})
    return params


def _method_params(row: pd.Series, train_columns: Sequence[str]) -> Record:
    """Everything but the task that a leaderboard row holds fixed: selector parameters, ``[train]``
    settings, the protocol and the ``[tune]`` search."""
    return {
        **_selector_params(row),
        **{column: row[column] for column in train_columns},
        "protocol": row["protocol"],
        "tune": row["tune"],
    }


def _labels(frame: pd.DataFrame) -> pd.DataFrame:
    """``task_label``, ``method_label`` and ``selector_label``, from the parameters that vary among the
    finished cells (of the same task, of the same method); a failed cell keeps its plain names."""
    train_columns = [column for column in frame.columns if column.startswith(TRAIN_PREFIX)]
    finished = frame[frame["status"] == FINISHED]
    task_keys = {
        task: varying_keys(group["setting_params"]) for task, group in finished.groupby("task", sort=False)
    }
    method_keys, selector_keys = {}, {}
    for method, group in finished.groupby("method", sort=False):
        method_keys[method] = varying_keys(_method_params(row, train_columns) for _, row in group.iterrows())
        selector_keys[method] = varying_keys(_selector_params(row) for _, row in group.iterrows())
    task_labels, method_labels, selector_labels = [], [], []
    for _, row in frame.iterrows():
        plain = row["status"] != FINISHED
        task_labels.append(
            row["task"] if plain else _label(row["task"], row["setting_params"], task_keys[row["task"]])
        )
        if plain:
            method_labels.append(row["method"])
            selector_labels.append(row["method"])
            continue
        method = _label(row["method"], _method_params(row, train_columns), method_keys[row["method"]])
        method_labels.append(method + (AUTO_SUFFIX if is_auto(row["token_fraction"]) else ""))
        selector_labels.append(_label(row["method"], _selector_params(row), selector_keys[row["method"]]))
    return frame.assign(task_label=task_labels, method_label=method_labels, selector_label=selector_labels)


# --- the frame ---------------------------------------------------------------------------------------


def cell_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per cell (one per config hash, a finished record preferred), finished and failed.

    Columns: ``COLUMNS`` with their dtypes, then ``attribution.<name>`` (float64, NaN where not
    measured) and ``train.<setting>`` (object; a setting added after a record was written at the
    value that reproduces the older behaviour). Rows in a fixed order (task, method, retention,
    token fraction, seed, hash), so the frame does not depend on the order records were read in.
    """
    rows = [_row(record) for record in unique_records(records)]
    _settings(rows)
    extra = sorted({key for row in rows for key in row} - set(COLUMNS))
    attribution = [key for key in extra if key.startswith(ATTRIBUTION_PREFIX)]
    train = [key for key in extra if key.startswith(TRAIN_PREFIX)]
    columns = {**COLUMNS, **dict.fromkeys(attribution, "float64"), **dict.fromkeys(train, "object")}
    missing = {ATTRIBUTION_PREFIX: math.nan}
    frame = pd.DataFrame(
        {
            column: pd.Series(
                [row.get(column, missing.get(column[: len(ATTRIBUTION_PREFIX)])) for row in rows],
                dtype=dtype,
            )
            for column, dtype in columns.items()
        }
    )
    if frame.empty:
        return frame
    frame = _labels(frame)
    order = sorted(
        range(len(frame)),
        key=lambda i: (
            frame["task"].iat[i],
            frame["method"].iat[i],
            -1.0 if math.isnan(frame["retention"].iat[i]) else frame["retention"].iat[i],
            fraction_order(frame["token_fraction"].iat[i]),
            frame["seed"].iat[i],
            frame["config_hash"].iat[i],
        ),
    )
    return frame.iloc[order].reset_index(drop=True).astype(columns)


def finished_cells(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells["status"] == FINISHED]


def failed_cells(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells["status"] == FAILED]


def attribution_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.startswith(ATTRIBUTION_PREFIX)]


def train_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.startswith(TRAIN_PREFIX)]


def regime_dict(regime: tuple) -> dict[str, Any]:
    return dict(regime)


# --- coresets standing in for regimes they did not run in ------------------------------------------------

# A coreset stores whole samples and replays them whole. Trained without input dropout, the replay mode
# (how dropped tokens are fed) never changes what it feeds the model, and an input dropout that resolves
# to 0 is the same as 0 set by hand. So such a coreset cell also stands in the regimes that differ from
# its own only in these settings (regimes.toml does not rerun coresets under replay = "mask"; vqa.toml's
# variant sets input_dropout = 0 for core tokensets only). The engine decides what a setting resolves to
# (``benchmark.learner.input_dropout_for``: protocol 1 gives coresets 0, protocol 2 every method its
# default); a coreset whose input dropout is tuned stands in for nothing.
REPLAY_AXIS, DROPOUT_AXIS = "train.replay", "train.input_dropout"


def _coreset_input_dropout(protocol: int, setting: Any) -> float:
    """The input dropout a coreset trains with at this ``[train] input_dropout`` setting."""
    config = CellConfig(
        grid="",
        task="",
        task_params={},
        method="random",
        sample_selector="random",
        token_selector=None,
        selector_params={},
        token_selector_params={},
        retention=0.1,
        token_fraction=1.0,
        seed=0,
        train=TrainConfig(input_dropout=None if _missing(setting) else float(setting)),
        protocol=protocol,
    )
    return input_dropout_for(config)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _stand_in_values(row: pd.Series, present: dict[str, set[Any]]) -> list[list[tuple[str, Any]]]:
    """Per axis a coreset cell may stand in, the (axis, value) of the regimes it stands in."""
    axes = dict(row["regime"])
    if "input_dropout" in row["tune"] or DROPOUT_AXIS not in axes:
        return []
    if _coreset_input_dropout(row["protocol"], axes[DROPOUT_AXIS]) != 0.0:
        return []
    dropouts = [v for v in present[DROPOUT_AXIS] if _coreset_input_dropout(row["protocol"], v) == 0.0]
    choices = [[(DROPOUT_AXIS, value) for value in sorted(dropouts, key=str)]]
    if REPLAY_AXIS in axes:
        choices.append([(REPLAY_AXIS, value) for value in sorted(present[REPLAY_AXIS], key=str)])
    return choices


def with_coreset_stand_ins(cells: pd.DataFrame) -> pd.DataFrame:
    """The finished cells, plus a copy of each coreset cell trained without input dropout in every regime
    that differs from its own only in the replay mode or in an input-dropout setting that also resolves
    to 0, where that coreset (same ``selector_label``) did not run with that seed; the copies have
    ``stand_in`` True."""
    finished = finished_cells(cells).assign(stand_in=False)
    present: dict[str, set[Any]] = {REPLAY_AXIS: set(), DROPOUT_AXIS: set()}
    for regime in finished["regime"]:
        for axis, value in regime:
            if axis in present:
                present[axis].add(value)
    coresets = finished[finished["kind"] == CORESET]
    ran = set(zip(coresets["regime"], coresets["selector_label"], coresets["seed"], strict=True))
    copies = []
    for index, row in coresets.iterrows():
        for moves in itertools.product(*_stand_in_values(row, present)):
            moved = tuple((axis, dict(moves).get(axis, value)) for axis, value in row["regime"])
            if (moved, row["selector_label"], row["seed"]) in ran:
                continue
            ran.add((moved, row["selector_label"], row["seed"]))
            copies.append(finished.loc[index].copy())
            copies[-1]["regime"] = moved
            copies[-1]["stand_in"] = True
    if not copies:
        return finished
    return pd.concat([finished, pd.DataFrame(copies)], ignore_index=True).astype(finished.dtypes.to_dict())
