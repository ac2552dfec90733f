"""Statistics over seeds: mean and Student-t 95% confidence half-width, and their formatting."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats

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
