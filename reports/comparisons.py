"""The comparisons the leaderboard makes, paired by seed, and ranks with bootstrap intervals (issue 19).

Every stored-memory row is compared with one reference at the same bytes, chosen before looking at
any result: a core tokenset with the coreset of its own sample selector (``gradmatch+gradlrp`` with
``gradmatch``: what its token selection adds or loses at equal bytes), a coreset with the ``random``
coreset. Both run in the same regime (``records``: every setting but the method, its t and the
seed) and are paired by seed; the p-values of the whole table are one family for Holm's correction
(``stats.verdicts``). Ranks within each task × retention come with percentile bootstrap intervals
over seeds (the same resampled seeds for every row, so rows stay paired).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from reports.records import CORESET, TOKENSET, with_coreset_stand_ins
from reports.stats import (
    DEFAULT_EQUIVALENCE_MARGIN,
    INCONCLUSIVE,
    PairedTest,
    bootstrap_over_seeds,
    paired_test,
    verdicts,
)

REFERENCE_CORESET = "random"
COMPARISON_COLUMNS = {
    "reference": "object",  # the reference method (plain name), or None where there is none
    "paired_seeds": "float64",
    "difference_mean": "float64",  # this row − reference, mean over paired seeds
    "difference_low": "float64",  # Student-t 95% CI of that mean
    "difference_high": "float64",
    "p_value": "float64",  # paired t-test, two-sided
    "p_holm": "float64",  # … Holm-adjusted over the table
    "p_equivalence": "float64",  # paired TOST at ± the equivalence margin
    "p_equivalence_holm": "float64",
    "verdict": "object",  # better / worse / equivalent / inconclusive; None without a reference
}
RANK_COLUMNS = {"rank_low": "float64", "rank_high": "float64"}


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def reference_cells(row_cells: pd.DataFrame, pool: pd.DataFrame) -> pd.DataFrame | None:
    """The cells of the reference of one leaderboard row (``row_cells``), from ``pool`` (finished cells
    with coreset stand-ins); None where the row has no reference or it did not run (or is ambiguous)."""
    first = row_cells.iloc[0]
    if first["kind"] == TOKENSET:
        wanted, params = first["sample_selector"], _params_key(first["selector_params"])
    elif first["kind"] == CORESET and first["sample_selector"] != REFERENCE_CORESET:
        wanted, params = REFERENCE_CORESET, None
    else:
        return None
    candidates = pool[
        (pool["kind"] == CORESET)
        & (pool["sample_selector"] == wanted)
        & pool["regime"].map(lambda regime: regime == first["regime"])
    ]
    if params is not None:
        candidates = candidates[candidates["selector_params"].map(_params_key) == params]
    if candidates.empty or candidates["selector_label"].nunique() != 1:
        return None
    return candidates


def _seed_values(cells: pd.DataFrame) -> dict[int, float]:
    return dict(zip(cells["seed"], cells["final_average_accuracy"], strict=True))


def comparison_frame(
    cells: pd.DataFrame, rows: Sequence[pd.DataFrame], margin: float = DEFAULT_EQUIVALENCE_MARGIN
) -> pd.DataFrame:
    """``COMPARISON_COLUMNS`` for each leaderboard row (its finished cells, in ``rows``), in order."""
    pool = with_coreset_stand_ins(cells)
    pool = pool[pool["final_average_accuracy"].notna()]
    found: list[tuple[int, str, PairedTest]] = []
    for position, row_cells in enumerate(rows):
        reference = reference_cells(row_cells, pool)
        if reference is None:
            continue
        own, other = (
            _seed_values(row_cells.dropna(subset=["final_average_accuracy"])),
            _seed_values(reference),
        )
        seeds = sorted(set(own) & set(other))
        test = paired_test([own[s] for s in seeds], [other[s] for s in seeds], margin)
        found.append((position, str(reference["method"].iat[0]), test))
    frame = pd.DataFrame(
        {column: pd.Series([None] * len(rows), dtype=dtype) for column, dtype in COMPARISON_COLUMNS.items()}
    )
    judged = verdicts([test for _, _, test in found])
    for (position, reference, test), (verdict, p_holm, p_equivalence_holm) in zip(found, judged, strict=True):
        frame.loc[position, list(COMPARISON_COLUMNS)] = [
            reference,
            test.seeds,
            test.difference,
            test.low,
            test.high,
            test.p_difference,
            p_holm,
            test.p_equivalence,
            p_equivalence_holm,
            verdict if test.seeds >= 2 else INCONCLUSIVE,
        ]
    return frame.astype(COMPARISON_COLUMNS)


# --- ranks with bootstrap intervals --------------------------------------------------------------------


def _seed_matrix(rows: Sequence[pd.DataFrame]) -> tuple[np.ndarray, list[int]]:
    """[rows, seeds] final accuracies over the union of seeds (NaN where a row lacks a seed)."""
    seeds = sorted({int(seed) for row in rows for seed in row["seed"]})
    column = {seed: index for index, seed in enumerate(seeds)}
    values = np.full((len(rows), len(seeds)), math.nan)
    for index, row in enumerate(rows):
        for seed, value in _seed_values(row).items():
            values[index, column[int(seed)]] = value
    return values, seeds


def _ranks(means: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Rank 1 = best within each group of rows (ties share the best rank); means [rows, ...]."""
    ranks = np.full(means.shape, math.nan)
    for members in groups:
        ranks[members] = stats.rankdata(-means[members], axis=0, method="min")
    return ranks


def rank_intervals(
    rows: Sequence[pd.DataFrame], groups: Sequence[np.ndarray], methods: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Percentile bootstrap 95% intervals, over seeds, of each row's rank within its group (``groups``:
    arrays of row positions, e.g. one per task × retention) and of each method's mean rank (``methods``:
    the row positions of each method). Returns (row low, row high, method low, method high); NaN for
    rows outside every group and for rows with fewer than 2 seeds, which keep their mean in every
    resample (so they move no one else's rank)."""
    nan_rows = np.full(len(rows), math.nan)
    nan_methods = np.full(len(methods), math.nan)
    if not rows or not groups:
        return nan_rows, nan_rows.copy(), nan_methods, nan_methods.copy()
    values, seeds = _seed_matrix(rows)
    counted = (~np.isnan(values)).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        overall = np.nanmean(values, axis=1)

    def statistic(positions: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # a resample without any of a row's seeds: the mean of nothing
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(values[:, positions], axis=-1)  # [rows, resamples]
        means = np.where(np.isnan(means) | (counted < 2)[:, None], overall[:, None], means)
        means = np.where(np.isnan(means), -np.inf, means)
        ranks = _ranks(means, groups)
        method_ranks = (
            np.stack([ranks[members].mean(axis=0) for members in methods]) if methods else ranks[:0]
        )
        return np.concatenate([ranks, method_ranks]).astype(float)

    if len(seeds) < 2:
        return nan_rows, nan_rows.copy(), nan_methods, nan_methods.copy()
    low, high = bootstrap_over_seeds(statistic, len(seeds), "ranks")
    row_low, row_high = low[: len(rows)], high[: len(rows)]
    row_low[counted < 2], row_high[counted < 2] = math.nan, math.nan
    return row_low, row_high, low[len(rows) :], high[len(rows) :]
