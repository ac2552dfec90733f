"""The regime table: in each regime, the best core tokenset against the best coreset at equal bytes.

A *regime* is everything a cell's config fixes except the memory method, its token fraction and
the seed: the task and its parameters (``modes_per_class``, ``object_scale``, ``boundary_overlap``,
…), the retention (the byte budget) and every ``[train]`` setting (``train.replay``,
``train.pretrain_token_dropout``, ``train.input_dropout``, …). Regime axes are named by the task
parameter itself, ``retention``, ``train.<setting>`` and, for any other table of the config,
``<table>.<key>``. Per regime the table compares the coreset (``token_selector`` None; bounds left
out) and the core tokenset (any token fraction, ``"auto"`` included) with the best mean final
accuracy over seeds, paired by seed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from reports.records import (
    BOUND,
    CORESET,
    TOKENSET,
    finished_cells,
    fraction_order,
    is_auto,
)
from reports.stats import format_mean_ci, mean_ci

Row = dict[str, Any]  # one output row, column → value

TOKEN_FRACTION = "token_fraction"
RESULT_COLUMNS = (
    "coreset",
    "coreset_mean",
    "coreset_ci",
    "tokenset",
    "tokenset_token_fraction",
    "tokenset_mean",
    "tokenset_ci",
    "seeds",
    "difference_mean",
    "difference_ci",
    "ci_low",
    "ci_high",
    "excludes_zero",
    "winner",
    "bytes_allowed",
    "equal_bytes",
)
# A coreset stores whole samples and has no input dropout: the replay mode never changes what it
# feeds the model, so one coreset record stands for every replay mode a grid sweeps (regimes.toml
# does not rerun coresets under replay = "mask").
CORESET_INDEPENDENT = "train.replay"
NEITHER = "neither (CI spans 0)"


@dataclass(frozen=True)
class Cell:
    """One finished coreset or core-tokenset cell, as the regime map sees it."""

    regime: tuple[tuple[str, Any], ...]  # (axis, value) in axis order; values hashable
    kind: str  # CORESET or TOKENSET
    method: str  # label: the method, plus its selector parameters where they vary
    token_fraction: float | str  # a float, or AUTO; 1.0 for coresets
    seed: int
    accuracy: float
    bytes_allowed: float  # NaN when not recorded
    token_fraction_per_task: tuple[float | None, ...] = ()  # the t used per task, where recorded
    partial_input_accuracy: dict[str, dict[str, list[list[float]]]] | None = None  # ranking → t → matrix


def regime_cells(cells: pd.DataFrame) -> list[Cell]:
    """Finished coreset and core-tokenset cells (of ``records.cell_frame``) with a final accuracy
    (bounds and failures left out)."""
    finished = finished_cells(cells)
    stored = finished[finished["final_average_accuracy"].notna() & (finished["kind"] != BOUND)]
    result = [
        Cell(
            regime=row["regime"],
            kind=row["kind"],
            method=row["selector_label"],
            token_fraction=row["token_fraction"] if row["kind"] == TOKENSET else 1.0,
            seed=int(row["seed"]),
            accuracy=float(row["final_average_accuracy"]),
            bytes_allowed=float(row["bytes_allowed"]),
            token_fraction_per_task=tuple(row["token_fraction_per_task"]),
            partial_input_accuracy=row["partial_input_accuracy"],
        )
        for _, row in stored.iterrows()
    ]
    return _coresets_in_every_replay_mode(result)


def _coresets_in_every_replay_mode(cells: list[Cell]) -> list[Cell]:
    """Each coreset cell also stands in the regimes that differ from its own only by the replay mode
    (where no coreset ran in that mode)."""
    modes = {dict(c.regime).get(CORESET_INDEPENDENT) for c in cells} - {None}
    ran = {(c.regime, c.method, c.seed) for c in cells if c.kind == CORESET}
    extra = []
    for cell in cells:
        regime = dict(cell.regime)
        if cell.kind != CORESET or CORESET_INDEPENDENT not in regime:
            continue
        for mode in sorted(modes - {regime[CORESET_INDEPENDENT]}):
            moved = tuple((axis, mode if axis == CORESET_INDEPENDENT else v) for axis, v in cell.regime)
            if (moved, cell.method, cell.seed) not in ran:
                extra.append(replace(cell, regime=moved))
    return cells + extra


def _by_seed(cells: Sequence[Cell]) -> dict[int, list[Cell]]:
    seeds: dict[int, list[Cell]] = {}
    for cell in cells:
        seeds.setdefault(cell.seed, []).append(cell)
    return seeds


def best_candidate(cells: Sequence[Cell]) -> list[Cell]:
    """The cells of the method (and token fraction) with the best mean accuracy over its seeds.

    Ties go to the first in (method, token fraction) order, so the choice is deterministic.
    """
    groups: dict[tuple[str, float | str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.method, cell.token_fraction), []).append(cell)
    order = sorted(groups, key=lambda key: (key[0], fraction_order(key[1])))
    best = max(order, key=lambda key: float(np.mean([cell.accuracy for cell in groups[key]])))
    return groups[best]


def _seed_means(cells: Sequence[Cell]) -> dict[int, float]:
    return {seed: float(np.mean([c.accuracy for c in group])) for seed, group in _by_seed(cells).items()}


def compare(coresets: Sequence[Cell], tokensets: Sequence[Cell]) -> Row:
    """The result columns of one regime: best of each kind, their seed-paired difference and its CI."""
    coreset, tokenset = best_candidate(coresets), best_candidate(tokensets)
    coreset_seeds, tokenset_seeds = _seed_means(coreset), _seed_means(tokenset)
    paired = sorted(set(coreset_seeds) & set(tokenset_seeds))
    differences = [tokenset_seeds[seed] - coreset_seeds[seed] for seed in paired]
    mean, half = mean_ci(differences)
    excludes = not math.isnan(half) and abs(mean) > half
    allowed = {c.bytes_allowed for c in [*coreset, *tokenset] if c.seed in paired}
    known = {value for value in allowed if not math.isnan(value)}
    coreset_mean, coreset_ci = mean_ci(coreset_seeds.values())
    tokenset_mean, tokenset_ci = mean_ci(tokenset_seeds.values())
    return {
        "coreset": coreset[0].method,
        "coreset_mean": coreset_mean,
        "coreset_ci": coreset_ci,
        "tokenset": tokenset[0].method,
        "tokenset_token_fraction": tokenset[0].token_fraction,
        "tokenset_mean": tokenset_mean,
        "tokenset_ci": tokenset_ci,
        "seeds": len(paired),
        "difference_mean": mean,
        "difference_ci": half,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "excludes_zero": excludes,
        "winner": (TOKENSET if mean > 0 else CORESET) if excludes else NEITHER,
        "bytes_allowed": min(known) if len(known) == 1 else math.nan,
        "equal_bytes": len(known) <= 1,
    }


def regime_table(cells: pd.DataFrame, per_token_fraction: bool = False) -> pd.DataFrame:
    """One row per regime holding both a coreset and a core tokenset (with ``per_token_fraction``:
    per regime × token fraction, the best coreset against the best core tokenset at that fraction,
    ``token_fraction`` then being an axis column before the results).

    Columns: the regime axes (see the module docstring), then ``RESULT_COLUMNS``:
    ``coreset``/``tokenset`` (method labels), ``*_mean``/``*_ci`` (mean and Student-t 95%
    half-width over seeds), ``tokenset_token_fraction`` (the best tokenset's t, a float or "auto"),
    ``seeds`` (seeds present in both), ``difference_*`` (tokenset − coreset, paired by seed; CI NaN
    for one seed), ``excludes_zero``, ``winner``, ``bytes_allowed`` and ``equal_bytes`` (whether
    the compared cells were allowed the same bytes: true by construction, checked here).
    """
    members_of = regime_cells(cells)
    regimes: dict[tuple, list[Cell]] = {}
    for cell in members_of:
        regimes.setdefault(cell.regime, []).append(cell)
    rows = []
    for regime, members in regimes.items():
        coresets = [c for c in members if c.kind == CORESET]
        tokensets = [c for c in members if c.kind == TOKENSET]
        if not coresets or not tokensets:
            continue
        if per_token_fraction:
            for fraction in sorted({c.token_fraction for c in tokensets}, key=fraction_order):
                at = [c for c in tokensets if c.token_fraction == fraction]
                rows.append({**dict(regime), TOKEN_FRACTION: fraction, **compare(coresets, at)})
        else:
            rows.append({**dict(regime), **compare(coresets, tokensets)})
    axes = list(dict.fromkeys(key for cell in members_of for key, _ in cell.regime))
    columns = [*axes, *([TOKEN_FRACTION] if per_token_fraction else []), *RESULT_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    return sort_table(frame)


def axis_columns(table: pd.DataFrame) -> list[str]:
    """The regime-axis columns of a regime table (``token_fraction`` included in a per-t table)."""
    return [column for column in table.columns if column not in RESULT_COLUMNS]


def value_order(value: Any) -> tuple:
    """Sort key mixing numbers, strings, None and "auto": None first, numbers, "auto", other text."""
    if _missing(value):
        return (0, 0.0, "")
    if isinstance(value, bool):
        return (3, 0.0, str(value))
    if isinstance(value, numbers.Real):  # numpy scalars too
        return (1, float(value), "")
    return (2 if is_auto(value) else 3, 0.0, str(value))


def sort_table(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table.reset_index(drop=True)
    keys = [tuple(value_order(row[axis]) for axis in axis_columns(table)) for _, row in table.iterrows()]
    order = sorted(range(len(table)), key=lambda index: keys[index])
    return table.iloc[order].reset_index(drop=True)


def varying_axes(table: pd.DataFrame) -> list[str]:
    """Axes other than the task that take more than one value among the rows of some task."""
    varying = []
    for axis in axis_columns(table):
        if axis == "task":
            continue
        counts = table.groupby("task")[axis].agg(lambda values: len({display_value(v) for v in values}))
        if (counts > 1).any():
            varying.append(axis)
    return varying


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def display_value(value: Any) -> str:
    """``0.35``, ``drop``, ``auto``; ``default`` for None (a setting left to its per-kind default)."""
    if _missing(value):
        return "default"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- Markdown -----------------------------------------------------------------------------------------


def _difference(row: pd.Series) -> str:
    text = format_mean_ci(row["difference_mean"], row["difference_ci"], digits=3)
    text = text if text.startswith("-") else f"+{text}"
    return f"**{text}**" if row["excludes_zero"] else text


def _rows(table: pd.DataFrame, axes: Sequence[str], with_best_fraction: bool) -> list[list[str]]:
    rows = []
    for _, row in table.iterrows():
        cells = [display_value(row[axis]).replace("|", "\\|") for axis in axes]
        fraction = f" t={display_value(row['tokenset_token_fraction'])}" if with_best_fraction else ""
        coreset = f"{row['coreset']} {format_mean_ci(row['coreset_mean'], row['coreset_ci'])}"
        tokenset = f"{row['tokenset']}{fraction} {format_mean_ci(row['tokenset_mean'], row['tokenset_ci'])}"
        winner = row["winner"] + ("" if row["equal_bytes"] else " ⚠ unequal bytes")
        rows.append([*cells, coreset, tokenset, str(row["seeds"]), _difference(row), winner])
    return rows


def _values_text(values: Iterable[Any]) -> str:
    """``0.35``; ``0.35/0.5`` where tasks differ; ``default`` where no record sets it."""
    return "/".join(sorted({display_value(v) for v in values if not _missing(v)})) or "default"


def regime_markdown(table: pd.DataFrame, caption: str = "", per_fraction: pd.DataFrame | None = None) -> str:
    """The regime table as Markdown (tabulate, pipe format); ``per_fraction`` adds a section per t."""
    axes = ["task", *varying_axes(table)] if table["task"].nunique() > 1 else varying_axes(table)
    axes = axes or ["retention"]
    fixed = [axis for axis in axis_columns(table) if axis not in axes and axis != "task"]
    headers = [*axes, "Best coreset", "Best core tokenset", "Seeds", "Δ tokenset − coreset", "Winner"]
    sections = [
        "# Regime map: core tokenset against coreset at equal bytes",
        caption,
        tabulate(_rows(table, axes, True), headers=headers, tablefmt="pipe", disable_numparse=True),
        "Per regime (every setting but the method, its token fraction and the seed), the coreset and the "
        "core tokenset (any token fraction t, auto included) with the best mean final accuracy over seeds, "
        "mean ± Student-t 95% CI; Δ = core tokenset − coreset paired by seed. **Bold**: the CI of Δ "
        "excludes 0. Both sides are the best of several candidates on the same seeds, so each is biased "
        "upward, the side with more candidates more; read narrow margins with care. Equal bytes: both "
        "sides were allowed the same bytes (checked from each record's bytes_allowed).",
    ]
    if fixed:
        settings = ", ".join(f"{axis}={_values_text(table[axis])}" for axis in fixed)
        sections.append(f"Settings the same in every regime of a task: {settings}.")
    if per_fraction is not None and not per_fraction.empty and per_fraction[TOKEN_FRACTION].nunique() > 1:
        fraction_axes = [*axes, TOKEN_FRACTION]
        fraction_headers = [*fraction_axes, *headers[len(axes) :]]
        sections += [
            "## By token fraction",
            tabulate(
                _rows(per_fraction, fraction_axes, False),
                headers=fraction_headers,
                tablefmt="pipe",
                disable_numparse=True,
            ),
            "The same comparison at each token fraction t: the best core tokenset at that t against the "
            "regime's best coreset.",
        ]
    return "\n\n".join(section for section in sections if section) + "\n"
