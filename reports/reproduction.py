"""Reproduction table: each rerun cell against its reference record, and a one-line verdict.

A cell is

- ``bit-identical`` when every number both records hold is equal (times and provenance aside);
- ``within seed CI`` when its final average accuracy lies inside the reference's Student-t 95%
  confidence interval over the seeds of the same cell config (the config minus its seed);
  with one reference seed there is no interval, so only bit-identical counts;
- ``different`` otherwise; ``failed`` when the rerun failed; ``no reference`` when the reference
  has no finished record of the cell (it is listed, not judged).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchmark.config import CellConfig, canonical_json
from benchmark.grid import STREAM_SEED_PARAMS
from benchmark.results import FINISHED, write_text_atomic
from reports.stats import MISSING, mean_ci

IDENTICAL = "bit-identical"
WITHIN_CI = "within seed CI"
DIFFERENT = "different"
FAILED = "failed"
NO_REFERENCE = "no reference"
OUTCOMES = (IDENTICAL, WITHIN_CI, DIFFERENT, FAILED, NO_REFERENCE)
# What a rerun may change without the numbers changing: how long it took and where it ran.
VOLATILE_KEYS = frozenset({"wall_seconds", "selection_seconds", "training_seconds", "provenance"})
COLUMNS = [
    "outcome",
    "task",
    "method",
    "retention",
    "t",
    "seed",
    "hash",
    "reference",
    "reproduced",
    "difference",
    "seed_ci_low",
    "seed_ci_high",
    "max_matrix_difference",
]

Record = Mapping[str, Any]


def seed_group(config: Mapping[str, Any]) -> str:
    """A key shared by the cells whose configs differ only in their seed (and in the task parameters
    the seed draws with ``stream_seeds = true``: data and class order)."""
    seed = config.get("seed")
    params = {
        key: value
        for key, value in (config.get("task_params") or {}).items()
        if not (key in STREAM_SEED_PARAMS and value == seed)
    }
    unseeded = {**config, "task_params": params}
    try:
        return replace(CellConfig.from_dict(unseeded), seed=0).config_hash
    except (TypeError, ValueError):  # a record of a config the code no longer knows
        return canonical_json({k: v for k, v in unseeded.items() if k not in ("seed", "grid")})


def identical(reference: Record, reproduced: Record) -> bool:
    """Every number both records hold is equal, times and provenance aside (the configs are the
    same cell when the hashes are: a record made before an option existed does not list it)."""
    if reference["config_hash"] != reproduced["config_hash"]:
        return False
    keys = (set(reference) & set(reproduced)) - VOLATILE_KEYS - {"config"}
    return all(reference[key] == reproduced[key] for key in keys)


def _seed_intervals(reference: Iterable[Record]) -> dict[str, tuple[float, float]]:
    groups: dict[str, list[float]] = {}
    for record in reference:
        if record["status"] == FINISHED and record.get("final_average_accuracy") is not None:
            groups.setdefault(seed_group(record["config"]), []).append(record["final_average_accuracy"])
    return {key: mean_ci(values) for key, values in groups.items()}


def _max_matrix_difference(reference: Record, reproduced: Record) -> float:
    left, right = reference.get("accuracy_matrix") or [], reproduced.get("accuracy_matrix") or []
    if len(left) != len(right) or any(len(a) != len(b) for a, b in zip(left, right, strict=True)):
        return math.nan
    rows = zip(left, right, strict=True)
    return max((abs(a - b) for a_row, b_row in rows for a, b in zip(a_row, b_row, strict=True)), default=0.0)


def compare(reference: Mapping[str, Record], reproduced: Iterable[Record]) -> pd.DataFrame:
    """One row per reproduced record: its outcome against ``reference`` (config hash → record)."""
    intervals = _seed_intervals(reference.values())
    rows = []
    for record in reproduced:
        config = record["config"]
        base = reference.get(record["config_hash"])
        mean, half = intervals.get(seed_group(config), (math.nan, math.nan))
        low, high = mean - half, mean + half
        final = record.get("final_average_accuracy")
        before = None if base is None else base.get("final_average_accuracy")
        if record["status"] != FINISHED:
            outcome = FAILED
        elif base is None or base["status"] != FINISHED:
            outcome = NO_REFERENCE
        elif identical(base, record):
            outcome = IDENTICAL
        elif final is not None and low <= final <= high:  # False when the interval is NaN
            outcome = WITHIN_CI
        else:
            outcome = DIFFERENT
        rows.append(
            {
                "outcome": outcome,
                "task": config["task"],
                "method": config["method"],
                "retention": config.get("retention"),
                "t": config.get("token_fraction"),
                "seed": config["seed"],
                "hash": record["config_hash"],
                "reference": math.nan if before is None else before,
                "reproduced": math.nan if final is None else final,
                "difference": math.nan if before is None or final is None else final - before,
                "seed_ci_low": low,
                "seed_ci_high": high,
                "max_matrix_difference": math.nan if base is None else _max_matrix_difference(base, record),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {outcome: i for i, outcome in enumerate(OUTCOMES)}
    frame["_order"] = frame["outcome"].map(order)
    frame = frame.sort_values(["_order", "task", "method", "retention", "t", "seed"], na_position="first")
    return frame.drop(columns="_order").reset_index(drop=True)


def verdict(frame: pd.DataFrame) -> tuple[bool, str]:
    """(reproduced?, one line). Reproduced: no cell failed or differs beyond the seed CI."""
    counts = frame["outcome"].value_counts()
    judged = int(sum(counts.get(o, 0) for o in (IDENTICAL, WITHIN_CI, DIFFERENT, FAILED)))
    unjudged = int(counts.get(NO_REFERENCE, 0))
    tail = f"; {unjudged} cells have no reference record" if unjudged else ""
    if judged == 0:
        return True, f"nothing to compare: no reference record for any of the {len(frame)} cells run"
    identical_count, within = int(counts.get(IDENTICAL, 0)), int(counts.get(WITHIN_CI, 0))
    different, failed = int(counts.get(DIFFERENT, 0)), int(counts.get(FAILED, 0))
    if different or failed:
        return False, (
            f"NOT REPRODUCED: {different} of {judged} cells differ beyond the reference's seed CI"
            + (f", {failed} failed" if failed else "")
            + f" ({identical_count} bit-identical, {within} within the seed CI){tail}"
        )
    if identical_count == judged:
        return True, f"REPRODUCED: all {judged} cells bit-identical to the reference{tail}"
    return True, (
        f"REPRODUCED within seed noise: {identical_count} of {judged} cells bit-identical, "
        f"{within} within the reference's seed CI{tail}"
    )


NUMBER_COLUMNS = (
    "reference",
    "reproduced",
    "difference",
    "seed_ci_low",
    "seed_ci_high",
    "max_matrix_difference",
)


def _shown(value: Any, spec: str) -> str:
    return MISSING if value is None or pd.isna(value) else format(value, spec)


def table(frame: pd.DataFrame) -> str:
    """The comparison as a Markdown table (numbers to 4 places, none as –)."""
    shown = frame.astype(object)
    shown["retention"] = shown["retention"].map(lambda value: _shown(value, "g"))
    for column in NUMBER_COLUMNS:
        shown[column] = shown[column].map(lambda value: _shown(value, ".4f"))
    return tabulate(shown.to_dict("records"), headers="keys", tablefmt="github", disable_numparse=True)


def write_reproduction(frame: pd.DataFrame, line: str, out_dir: Path) -> list[Path]:
    """``reproduction.md`` (table and verdict) and ``reproduction.csv`` in ``out_dir``."""
    markdown, csv = out_dir / "reproduction.md", out_dir / "reproduction.csv"
    write_text_atomic(markdown, f"# Reproduction\n\n{table(frame)}\n\n{line}\n")
    write_text_atomic(csv, frame.to_csv(index=False))
    return [markdown, csv]
