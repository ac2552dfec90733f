"""Statistics over seeds: mean and Student-t 95% confidence half-width, paired comparisons (paired
t-test, TOST, Holm) and their verdicts, seeded bootstrap intervals, and the formatting of numbers."""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired

from benchmark.config import DEFAULT_EQUIVALENCE_MARGIN

CONFIDENCE = 0.95
MISSING = "–"
BYTE_UNITS = ("kB", "MB", "GB", "TB")


def present(values: Iterable[float | None]) -> list[float]:
    """The values that were measured (``None`` left out), as floats."""
    return [float(value) for value in values if value is not None]


def mean_or_nan(values: Iterable[float | None]) -> float:
    """Mean of the measured values; NaN when there is none."""
    measured = present(values)
    return float(np.mean(measured)) if measured else math.nan


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (95% by default).

    half_width = t.ppf((1 + confidence) / 2, n - 1) * std(ddof=1) / sqrt(n).
    With one value the interval is undefined: the half-width is NaN (rendered "±–"),
    never 0, so a single seed never looks certain. With no value both are NaN.
    """
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    standard_error = float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, float(stats.t.ppf((1.0 + confidence) / 2.0, data.size - 1)) * standard_error


def format_mean_ci(
    mean: float, half_width: float, digits: int = 3, plus_minus: str = "±", missing: str = MISSING
) -> str:
    """``"0.812 ± 0.031"``; ``"0.812 ±–"`` without an interval; ``missing`` without a mean."""
    if math.isnan(mean):
        return missing
    if math.isnan(half_width):
        return f"{mean:.{digits}f} {plus_minus}{missing}"
    return f"{mean:.{digits}f} {plus_minus} {half_width:.{digits}f}"


def format_number(value: float, digits: int = 3, missing: str = MISSING) -> str:
    return missing if math.isnan(value) else f"{value:.{digits}f}"


def format_bytes(count: float, missing: str = MISSING) -> str:
    """Decimal units, three significant digits: ``"153 kB"``, ``"3.07 MB"``."""
    if math.isnan(count):
        return missing
    if abs(count) < 1000:
        return f"{count:.0f} B"
    rounded = float(f"{count:.3g}")  # 999 999 B is "1 MB", not "1e+03 kB"
    exponent = min(int(math.log10(abs(rounded)) // 3), len(BYTE_UNITS))
    return f"{rounded / 1000**exponent:.3g} {BYTE_UNITS[exponent - 1]}"


# --- paired comparisons (issue 19) -------------------------------------------------------------------

ALPHA = 0.05
BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
VERDICTS = (BETTER, WORSE, EQUIVALENT, INCONCLUSIVE)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedTest:
    """``a − b`` over the seeds both ran: mean difference with its Student-t 95% CI, the two-sided
    paired t-test's p-value, and the paired TOST's p-value for ``|a − b| < margin`` (NaN below 2 seeds)."""

    seeds: int
    difference: float
    low: float
    high: float
    p_difference: float
    p_equivalence: float
    margin: float


def paired_test(
    a: Sequence[float], b: Sequence[float], margin: float = DEFAULT_EQUIVALENCE_MARGIN
) -> PairedTest:
    """The paired t-test (``scipy.stats.ttest_rel``) and TOST (``statsmodels`` ``ttost_paired``) of
    ``a`` against ``b``, the i-th values being the same seed.

    Differences that do not vary (identical values, or a constant offset) leave the t statistic
    undefined or infinite; then the p-values are exact: 0 where the hypothesis is surely false, 1
    where it holds (so identical per-seed values are never "different", and are "equivalent").
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    if x.size < 2:
        difference = float(np.mean(x - y)) if x.size else math.nan
        return PairedTest(int(x.size), difference, math.nan, math.nan, math.nan, math.nan, margin)
    differences = x - y
    difference = float(differences.mean())
    # Exactly equal differences: the t statistic is 0/0 or ±inf, so the p-values are exact instead.
    if np.ptp(differences) == 0.0:
        return PairedTest(
            int(x.size),
            difference,
            difference,
            difference,
            0.0 if difference != 0.0 else 1.0,
            0.0 if abs(difference) < margin else 1.0,
            margin,
        )
    with warnings.catch_warnings():  # nearly equal differences: scipy warns of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(x, y)
        interval = result.confidence_interval(CONFIDENCE)
        equivalence, _, _ = ttost_paired(x, y, -margin, margin)
    return PairedTest(
        int(x.size),
        difference,
        float(interval.low),
        float(interval.high),
        float(result.pvalue),
        float(equivalence),
        margin,
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values over the family of the non-NaN ones; NaN stays NaN.

    Holm (1979), "A simple sequentially rejective multiple test procedure": the i-th smallest of m
    p-values times (m − i + 1), made monotone and capped at 1. The same numbers as statsmodels'
    ``multipletests(method="holm")`` (``tests/test_report_stats.py``), without its ``gc.collect()``
    on every call, which took about a second a table inside a large process.
    """
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, math.nan)
    present = np.flatnonzero(~np.isnan(values))
    if len(present):
        order = present[np.argsort(values[present], kind="stable")]
        scaled = values[order] * np.arange(len(order), 0, -1)
        adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def verdicts(tests: Sequence[PairedTest], alpha: float = ALPHA) -> list[tuple[str, float, float]]:
    """For a family of comparisons (one table): (verdict, Holm p of the difference, Holm p of the TOST).

    ``equivalent`` where the Holm-adjusted TOST rejects a difference of ± margin or more; else
    ``better``/``worse`` (the sign of a − b) where the Holm-adjusted paired t-test rejects no
    difference; else ``inconclusive`` (also below 2 seeds).
    """
    p_difference = holm([test.p_difference for test in tests])
    p_equivalence = holm([test.p_equivalence for test in tests])
    results = []
    for test, different, equivalent in zip(tests, p_difference, p_equivalence, strict=True):
        if equivalent < alpha:
            verdict = EQUIVALENT
        elif different < alpha:
            verdict = BETTER if test.difference > 0 else WORSE
        else:
            verdict = INCONCLUSIVE
        results.append((verdict, float(different), float(equivalent)))
    return results


def seeded_rng(key: str) -> np.random.Generator:
    """A generator seeded by ``BOOTSTRAP_SEED`` and ``key`` (so one interval does not depend on the
    order others were computed in)."""
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(key.encode())])


def bootstrap_over_seeds(
    statistic: Callable[[np.ndarray], np.ndarray],
    seeds: int,
    key: str,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval (``scipy.stats.bootstrap``) of a vector statistic of the seeds.

    ``statistic(positions)`` gets seed positions (int array [..., n]: each resample draws ``seeds``
    positions with replacement, the same draw for every quantity, so paired quantities stay paired)
    and returns float array [k, ...]. Returns (low [k], high [k]).
    """
    with warnings.catch_warnings():  # a statistic that does not vary in every resample is no problem here
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.arange(seeds),),
            lambda sample, axis=-1: statistic(np.asarray(sample, dtype=int)),
            vectorized=True,
            method="percentile",
            confidence_level=confidence,
            n_resamples=resamples,
            rng=seeded_rng(key),
        )
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


def format_interval(mean: float, low: float, high: float, digits: int = 3, missing: str = MISSING) -> str:
    """A signed difference and its interval: ``"-0.036 [-0.071, -0.001]"``; no interval: ``"-0.036"``."""
    if math.isnan(mean):
        return missing
    if math.isnan(low) or math.isnan(high):
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def format_p(p_value: float, missing: str = MISSING) -> str:
    """``"p = 0.031"``, ``"p < 0.001"``."""
    if math.isnan(p_value):
        return missing
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


@dataclass(frozen=True)
class RatioSymbols:
    times: str = "×"
    at_most: str = "≤"
    at_least: str = "≥"
    missing: str = MISSING


def format_ratio(
    ratio: float,
    low: float,
    high: float,
    position: str | None,
    low_clipped: bool,
    high_clipped: bool,
    symbols: RatioSymbols = RatioSymbols(),
) -> str:
    """The coreset-size ratio k as ``"× 2.3 [1.8, 2.9]"``; a k beyond the coreset curve is a bound,
    ``"≥ × 10"`` / ``"≤ × 0.25"``, as is an interval end at the curve's end (``"[≤ 0.25, 0.61]"``)."""
    if math.isnan(ratio):
        return symbols.missing
    prefix = {"below": f"{symbols.at_most} ", "above": f"{symbols.at_least} "}.get(position or "", "")
    text = f"{prefix}{symbols.times} {_two_digits(ratio)}"
    if math.isnan(low) or math.isnan(high):
        return text
    low_text = f"{symbols.at_most} {_two_digits(low)}" if low_clipped else _two_digits(low)
    high_text = f"{symbols.at_least} {_two_digits(high)}" if high_clipped else _two_digits(high)
    return f"{text} [{low_text}, {high_text}]"


def format_row_ratio(row: Any, symbols: RatioSymbols = RatioSymbols()) -> str:
    """``format_ratio`` of a leaderboard row's ``coreset_size_*`` columns."""
    return format_ratio(
        row["coreset_size_ratio"],
        row["coreset_size_low"],
        row["coreset_size_high"],
        row["coreset_size_position"],
        row["coreset_size_low_clipped"],
        row["coreset_size_high_clipped"],
        symbols,
    )


def _two_digits(value: float) -> str:
    """Two significant digits, trailing zeros kept: ``2.0``, ``0.50``, ``12``."""
    return f"{value:#.2g}".rstrip(".")
