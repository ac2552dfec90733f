"""The seed paper's metric (issue 19): how large a coreset a core tokenset performs like.

For a core tokenset at a retention, take the coreset of its own sample selector (the same method at
t = 1: whole samples) in the same regime at every retention the grid ran, its *memory–accuracy
curve*: final accuracy against memory bytes (the bytes a retention allows, the budget; a coreset
stores whole samples, so it may use a little less). The size that matches the tokenset's accuracy is
read off that curve by linear interpolation of accuracy in log bytes (the first crossing, walking up
from the smallest memory), and ``k`` = those bytes ÷ the tokenset's bytes, so a tokenset exactly as
accurate as the coreset of its own budget has k = 1. The seed paper (Core
Tokensets, arXiv 2410.05800) reports k = 2–10 for a 1% core tokenset. k < 1: the tokenset performs
like a smaller coreset (it is worse than the coreset of its own bytes).

Outside the curve's accuracy range k is not measured, only bounded: "below" (the smallest coreset
ran is already as accurate: k ≤ its bytes ÷ the tokenset's) or "above" (the largest is less
accurate: k ≥ …); k is then that bound. The 95% interval is a percentile bootstrap over seeds (the
tokenset and the coreset curve resampled on the same seeds), with the same clipping.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.records import CORESET, TOKENSET, with_coreset_stand_ins
from reports.stats import bootstrap_over_seeds

INSIDE, BELOW, ABOVE = "inside", "below", "above"
PAPER_CLAIM = (2.0, 10.0)  # a 1% core tokenset performs like a coreset 2–10× larger (the seed paper)
COLUMNS = {
    "coreset_size_ratio": "float64",  # k at the seed means
    "coreset_size_low": "float64",  # 95% bootstrap interval of k
    "coreset_size_high": "float64",
    "coreset_size_position": "object",  # INSIDE, BELOW or ABOVE the curve; None without a curve
    "coreset_size_low_clipped": "bool",  # the interval's end is a bound of the curve's range
    "coreset_size_high_clipped": "bool",
    "coreset_size_reference": "object",  # the coreset whose curve was used (plain name)
}


def matching_bytes(
    curve_bytes: Sequence[float], curve_accuracy: Sequence[float], target: float
) -> tuple[float, str]:
    """Bytes at which the curve (points sorted by bytes) first reaches ``target``, interpolating accuracy
    linearly in log bytes; (smallest bytes, BELOW) when its first point already reaches it, (largest
    bytes, ABOVE) when no point does."""
    x = np.log(np.asarray(curve_bytes, dtype=float))
    y = np.asarray(curve_accuracy, dtype=float)
    if y[0] >= target:
        return float(np.exp(x[0])), BELOW if y[0] > target else INSIDE
    for i in range(len(y) - 1):
        if y[i] < target <= y[i + 1]:
            fraction = (target - y[i]) / (y[i + 1] - y[i])
            return float(np.exp(x[i] + fraction * (x[i + 1] - x[i]))), INSIDE
    return float(np.exp(x[-1])), ABOVE


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _without_retention(regime: tuple) -> tuple:
    return tuple((axis, value) for axis, value in regime if axis != "retention")


def coreset_curve(row_cells: pd.DataFrame, pool: pd.DataFrame) -> pd.DataFrame | None:
    """The coreset cells of a core-tokenset row's curve (same sample selector and parameters, same regime
    but for retention), at two or more retentions; None otherwise."""
    first = row_cells.iloc[0]
    if first["kind"] != TOKENSET:
        return None
    regime = _without_retention(first["regime"])
    curve = pool[
        (pool["kind"] == CORESET)
        & (pool["sample_selector"] == first["sample_selector"])
        & (pool["selector_params"].map(_params_key) == _params_key(first["selector_params"]))
        & pool["regime"].map(lambda other: _without_retention(other) == regime)
        & pool["bytes_allowed"].gt(0)
    ]
    if curve["retention"].nunique() < 2 or curve["selector_label"].nunique() != 1:
        return None
    return curve


def _ratio(
    tokenset: np.ndarray, curve: np.ndarray, curve_bytes: np.ndarray, tokenset_bytes: float
) -> tuple[np.ndarray, np.ndarray]:
    """k and its position for each column of seed means (tokenset [b], curve [points, b])."""
    ratios, positions = [], []
    for index in range(tokenset.shape[-1]):
        matched, position = matching_bytes(curve_bytes, curve[:, index], tokenset[index])
        ratios.append(matched / tokenset_bytes)
        positions.append(position)
    return np.asarray(ratios), np.asarray(positions)


def coreset_size(row_cells: pd.DataFrame, curve_cells: pd.DataFrame, key: str) -> dict:
    """``COLUMNS`` for one core-tokenset row and its coreset curve."""
    retentions = sorted(curve_cells["retention"].unique())
    seeds = sorted(
        set(row_cells["seed"]).intersection(
            *(set(curve_cells.loc[curve_cells["retention"] == r, "seed"]) for r in retentions)
        )
    )
    if not seeds:
        return {}
    tokenset_values = np.array(
        [row_cells.loc[row_cells["seed"] == seed, "final_average_accuracy"].mean() for seed in seeds]
    )
    points = [curve_cells[curve_cells["retention"] == r] for r in retentions]
    curve_values = np.array(
        [
            [point.loc[point["seed"] == seed, "final_average_accuracy"].mean() for seed in seeds]
            for point in points
        ]
    )
    curve_bytes = np.array([point["bytes_allowed"].mean() for point in points])
    tokenset_bytes = float(row_cells["bytes_allowed"].mean())
    ratio, position = _ratio(
        tokenset_values.mean(keepdims=True),
        curve_values.mean(axis=1, keepdims=True),
        curve_bytes,
        tokenset_bytes,
    )
    low = high = math.nan
    low_clipped = high_clipped = False
    if len(seeds) >= 2:

        def statistic(draws: np.ndarray) -> np.ndarray:
            ratios, _ = _ratio(
                tokenset_values[draws].mean(axis=-1).ravel(),
                curve_values[:, draws].mean(axis=-1).reshape(len(points), -1),
                curve_bytes,
                tokenset_bytes,
            )
            return ratios.reshape(1, *draws.shape[:-1])

        lows, highs = bootstrap_over_seeds(statistic, len(seeds), key)
        low, high = float(lows[0]), float(highs[0])
        bounds = (curve_bytes[0] / tokenset_bytes, curve_bytes[-1] / tokenset_bytes)
        low_clipped, high_clipped = bool(np.isclose(low, bounds[0])), bool(np.isclose(high, bounds[1]))
    return {
        "coreset_size_ratio": float(ratio[0]),
        "coreset_size_low": low,
        "coreset_size_high": high,
        "coreset_size_position": str(position[0]),
        "coreset_size_low_clipped": low_clipped,
        "coreset_size_high_clipped": high_clipped,
        "coreset_size_reference": str(curve_cells["method"].iat[0]),
    }


def coreset_size_frame(cells: pd.DataFrame, rows: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """``COLUMNS`` for each leaderboard row (its finished cells, in ``rows``): set for core tokensets
    whose coreset curve ran, NaN/None/False otherwise."""
    pool = with_coreset_stand_ins(cells)
    pool = pool[pool["final_average_accuracy"].notna()]
    defaults = {"float64": math.nan, "object": None, "bool": False}
    values = []
    for row_cells in rows:
        measured = row_cells[row_cells["final_average_accuracy"].notna()]
        curve = None if measured.empty else coreset_curve(measured, pool)
        key = ",".join(sorted(measured["config_hash"])) if not measured.empty else ""
        values.append(coreset_size(measured, curve, key) if curve is not None else {})
    return pd.DataFrame(
        {
            column: pd.Series([value.get(column, defaults[dtype]) for value in values], dtype=dtype)
            for column, dtype in COLUMNS.items()
        }
    )
