"""The regime table: in each regime, the best core tokenset against the best coreset at equal bytes.

A *regime* is everything a cell's config fixes except the memory method, its token fraction and
the seed: the task and its parameters (``modes_per_class``, ``object_scale``, ``boundary_overlap``,
…), the retention (the byte budget) and every ``[train]`` setting (``train.replay``,
``train.pretrain_token_dropout``, ``train.input_dropout``, …). Regime axes are named by the task
parameter itself, ``retention``, ``train.<setting>`` and, for any other table of the config,
``<table>.<key>``. Per regime the table compares the best coreset (``token_selector`` None; bounds
left out) and the best core tokenset (any token fraction, ``"auto"`` included), paired by seed.

Which is "best" is never decided on the test set where it need not be (issue 18): where every cell of
a regime has a validation score (protocol 2, ``validation_final_accuracy``), each side's method and t
are chosen by mean validation final accuracy and the two compared on test, with verdicts Holm-adjusted
over those rows (the *tuned Δ*, ``chosen_on`` = ``"validation"``). Protocol-1 records have no
validation slice: their rows are chosen on test and are *exploratory* (``chosen_on`` = ``"test"``,
verdict ``"exploratory"``, p-values Holm-adjusted within those rows but no verdict): the pre-declared
comparisons with verdicts are the leaderboard's (``reports.comparisons``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from reports.records import (
    BOUND,
    CORESET,
    TOKENSET,
    fraction_order,
    is_auto,
    with_coreset_stand_ins,
)
from reports.stats import (
    BETTER,
    DEFAULT_EQUIVALENCE_MARGIN,
    EQUIVALENT,
    WORSE,
    PairedTest,
    format_interval,
    format_mean_ci,
    format_p,
    mean_ci,
    paired_test,
    verdicts,
)

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
    "p_value",
    "p_holm",
    "p_equivalence",
    "p_equivalence_holm",
    "verdict",
    "bytes_allowed",
    "equal_bytes",
    "chosen_on",  # VALIDATION or TEST: what picked each side's best method and t
)
VALIDATION, TEST = "validation", "test"
EXPLORATORY = "exploratory"  # the verdict column of a row chosen on test: no verdict
# Regime axes in words, for tables and figures (others: the key without "train." and underscores).
AXIS_NAMES = {
    "task": "task",
    "retention": "retention",
    TOKEN_FRACTION: "token fraction t",
    "object_scale": "object size",
    "modes_per_class": "modes per class",
    "boundary_overlap": "boundary overlap",
    "train.replay": "replay of kept tokens",
    "train.input_dropout": "input dropout",
    "train.pretrain_token_dropout": "backbone token dropout",
}
AXIS_SHORT_NAMES = {  # for a table column's header
    **AXIS_NAMES,
    TOKEN_FRACTION: "$t$",
    "modes_per_class": "modes",
    "train.replay": "replay",
    "train.pretrain_token_dropout": "backbone dropout",
}


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
    validation: float = math.nan  # final average accuracy on the validation slices (protocol 2), or NaN
    token_fraction_per_task: tuple[float | None, ...] = ()  # the t used per task, where recorded
    partial_input_accuracy: dict[str, dict[str, list[list[float]]]] | None = None  # ranking → t → matrix


def regime_cells(cells: pd.DataFrame) -> list[Cell]:
    """Finished coreset and core-tokenset cells (of ``records.cell_frame``) with a final accuracy
    (bounds and failures left out), each coreset also in the regimes it stands in
    (``records.with_coreset_stand_ins``)."""
    finished = with_coreset_stand_ins(cells)
    stored = finished[finished["final_average_accuracy"].notna() & (finished["kind"] != BOUND)]
    return [
        Cell(
            regime=row["regime"],
            kind=row["kind"],
            method=row["selector_label"],
            token_fraction=row["token_fraction"] if row["kind"] == TOKENSET else 1.0,
            seed=int(row["seed"]),
            accuracy=float(row["final_average_accuracy"]),
            bytes_allowed=float(row["bytes_allowed"]),
            validation=float(row["validation_final_accuracy"]),
            token_fraction_per_task=tuple(row["token_fraction_per_task"]),
            partial_input_accuracy=row["partial_input_accuracy"],
        )
        for _, row in stored.iterrows()
    ]


def _by_seed(cells: Sequence[Cell]) -> dict[int, list[Cell]]:
    seeds: dict[int, list[Cell]] = {}
    for cell in cells:
        seeds.setdefault(cell.seed, []).append(cell)
    return seeds


def chosen_on(cells: Iterable[Cell]) -> str:
    """VALIDATION where every cell has a validation score, else TEST."""
    return VALIDATION if all(not math.isnan(cell.validation) for cell in cells) else TEST


def best_candidate(cells: Sequence[Cell], on: str = TEST) -> list[Cell]:
    """The cells of the method (and token fraction) with the best mean over its seeds of the validation
    final accuracy (``on`` = VALIDATION) or of the test final accuracy (``on`` = TEST).

    Ties go to the first in (method, token fraction) order, so the choice is deterministic.
    """
    groups: dict[tuple[str, float | str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.method, cell.token_fraction), []).append(cell)
    order = sorted(groups, key=lambda key: (key[0], fraction_order(key[1])))

    def score(cell: Cell) -> float:
        return cell.validation if on == VALIDATION else cell.accuracy

    best = max(order, key=lambda key: float(np.mean([score(cell) for cell in groups[key]])))
    return groups[best]


def _seed_means(cells: Sequence[Cell]) -> dict[int, float]:
    return {seed: float(np.mean([c.accuracy for c in group])) for seed, group in _by_seed(cells).items()}


def compare(coresets: Sequence[Cell], tokensets: Sequence[Cell], margin: float) -> tuple[Row, PairedTest]:
    """The result columns of one regime: best of each kind (on validation where every cell has a
    validation score, else on test: ``chosen_on``) and their seed-paired test on test accuracy
    (tokenset − coreset); the verdict columns are filled in over the whole table (``regime_table``)."""
    on = chosen_on([*coresets, *tokensets])
    coreset, tokenset = best_candidate(coresets, on), best_candidate(tokensets, on)
    coreset_seeds, tokenset_seeds = _seed_means(coreset), _seed_means(tokenset)
    paired = sorted(set(coreset_seeds) & set(tokenset_seeds))
    test = paired_test([tokenset_seeds[s] for s in paired], [coreset_seeds[s] for s in paired], margin)
    allowed = {c.bytes_allowed for c in [*coreset, *tokenset] if c.seed in paired}
    known = {value for value in allowed if not math.isnan(value)}
    coreset_mean, coreset_ci = mean_ci(coreset_seeds.values())
    tokenset_mean, tokenset_ci = mean_ci(tokenset_seeds.values())
    row = {
        "coreset": coreset[0].method,
        "coreset_mean": coreset_mean,
        "coreset_ci": coreset_ci,
        "tokenset": tokenset[0].method,
        "tokenset_token_fraction": tokenset[0].token_fraction,
        "tokenset_mean": tokenset_mean,
        "tokenset_ci": tokenset_ci,
        "seeds": len(paired),
        "difference_mean": test.difference,
        "difference_ci": (test.high - test.low) / 2,
        "ci_low": test.low,
        "ci_high": test.high,
        "p_value": test.p_difference,
        "p_equivalence": test.p_equivalence,
        "bytes_allowed": min(known) if len(known) == 1 else math.nan,
        "equal_bytes": len(known) <= 1,
        "chosen_on": on,
    }
    return row, test


def regime_table(
    cells: pd.DataFrame, per_token_fraction: bool = False, margin: float = DEFAULT_EQUIVALENCE_MARGIN
) -> pd.DataFrame:
    """One row per regime holding both a coreset and a core tokenset (with ``per_token_fraction``:
    per regime × token fraction, the best coreset against the best core tokenset at that fraction,
    ``token_fraction`` then being an axis column before the results).

    Columns: the regime axes (see the module docstring), then ``RESULT_COLUMNS``:
    ``coreset``/``tokenset`` (method labels), ``*_mean``/``*_ci`` (mean and Student-t 95%
    half-width over seeds), ``tokenset_token_fraction`` (the best tokenset's t, a float or "auto"),
    ``seeds`` (seeds present in both), ``difference_*``, ``ci_low``/``ci_high`` (tokenset − coreset,
    paired by seed, Student-t 95% CI; NaN for one seed), ``p_value`` (paired t-test),
    ``p_equivalence`` (paired TOST at ± ``margin``), their Holm adjustment over the table
    (``p_holm``, ``p_equivalence_holm``: one family of the rows chosen on validation, another of those
    chosen on test), ``verdict`` (the tokenset is better, worse, equivalent or inconclusive:
    ``stats.verdicts``; ``EXPLORATORY`` for a row chosen on test), ``bytes_allowed`` and ``equal_bytes``
    (whether the compared cells were allowed the same bytes: true by construction, checked here),
    ``chosen_on`` (VALIDATION or TEST, see the module docstring).
    """
    members_of = regime_cells(cells)
    regimes: dict[tuple, list[Cell]] = {}
    for cell in members_of:
        regimes.setdefault(cell.regime, []).append(cell)
    rows: list[Row] = []
    tests: list[PairedTest] = []
    for regime, members in regimes.items():
        coresets = [c for c in members if c.kind == CORESET]
        tokensets = [c for c in members if c.kind == TOKENSET]
        if not coresets or not tokensets:
            continue
        if per_token_fraction:
            for fraction in sorted({c.token_fraction for c in tokensets}, key=fraction_order):
                at = [c for c in tokensets if c.token_fraction == fraction]
                row, test = compare(coresets, at, margin)
                rows.append({**dict(regime), TOKEN_FRACTION: fraction, **row})
                tests.append(test)
        else:
            row, test = compare(coresets, tokensets, margin)
            rows.append({**dict(regime), **row})
            tests.append(test)
    for on in (VALIDATION, TEST):  # two families: a verdict only where the choice was made on validation
        family = [index for index, row in enumerate(rows) if row["chosen_on"] == on]
        judged = verdicts([tests[index] for index in family])
        for index, (verdict, p_holm, p_equivalence_holm) in zip(family, judged, strict=True):
            verdict = verdict if on == VALIDATION else EXPLORATORY
            rows[index].update(verdict=verdict, p_holm=p_holm, p_equivalence_holm=p_equivalence_holm)
    axes = list(dict.fromkeys(key for cell in members_of for key, _ in cell.regime))
    columns = [*axes, *([TOKEN_FRACTION] if per_token_fraction else []), *RESULT_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["equivalence_margin"] = margin
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


def axis_text(axis: str) -> str:
    """An axis in words: ``object size``, ``replay of kept tokens``."""
    return AXIS_NAMES.get(axis, axis.removeprefix("train.").replace("_", " "))


def axis_value_text(axis: str, value: Any) -> str:
    """A value of an axis as a reader writes it: retention in %, others as ``display_value``."""
    if axis == "retention" and not _missing(value) and not isinstance(value, str):
        return f"{float(value) * 100:g}%"
    return display_value(value)


def display_value(value: Any) -> str:
    """``0.35``, ``drop``, ``auto``; ``default`` for None (a setting left to its per-kind default)."""
    if _missing(value):
        return "default"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- Markdown -----------------------------------------------------------------------------------------


def _difference(row: pd.Series) -> str:
    text = format_interval(row["difference_mean"], row["ci_low"], row["ci_high"])
    return f"**{text}**" if row["verdict"] in (BETTER, WORSE) else text


def _verdict(row: pd.Series) -> str:
    verdict = row["verdict"]
    p_value = row["p_equivalence_holm"] if verdict == EQUIVALENT else row["p_holm"]
    text = verdict if math.isnan(p_value) else f"{verdict} ({format_p(p_value)})"
    return text + ("" if row["equal_bytes"] else " ⚠ unequal bytes")


def _rows(table: pd.DataFrame, axes: Sequence[str], with_best_fraction: bool) -> list[list[str]]:
    rows = []
    for _, row in table.iterrows():
        cells = [axis_value_text(axis, row[axis]).replace("|", "\\|") for axis in axes]
        fraction = f" t={display_value(row['tokenset_token_fraction'])}" if with_best_fraction else ""
        coreset = f"{row['coreset']} {format_mean_ci(row['coreset_mean'], row['coreset_ci'])}"
        tokenset = f"{row['tokenset']}{fraction} {format_mean_ci(row['tokenset_mean'], row['tokenset_ci'])}"
        rows.append([*cells, coreset, tokenset, str(row["seeds"]), _difference(row), _verdict(row)])
    return rows


def markdown_axes(table: pd.DataFrame) -> list[str]:
    """The axes a regime table shows: the task where tasks differ, then every axis that varies."""
    axes = ["task", *varying_axes(table)] if table["task"].nunique() > 1 else varying_axes(table)
    return axes or ["retention"]


def _values_text(values: Iterable[Any]) -> str:
    """``0.35``; ``0.35/0.5`` where tasks differ; ``default`` where no record sets it."""
    return "/".join(sorted({display_value(v) for v in values if not _missing(v)})) or "default"


def choice_notes(table: pd.DataFrame, margin: float) -> list[str]:
    """How the rows' sides were chosen and what the verdict column means: one paragraph per kind of
    row present (chosen on validation: the tuned Δ; chosen on test: exploratory)."""
    notes = []
    if (table["chosen_on"] == VALIDATION).any():
        notes.append(
            "Tuned Δ (rows chosen on validation): each side's method and token fraction t are those with "
            "the best mean final accuracy on the tasks' validation slices (held out of the training data, "
            "never the test set; each cell's own [tune] candidate was also chosen there); the two are then "
            "compared on test, mean ± Student-t 95% CI over seeds, Δ = core tokenset − coreset paired by "
            "seed with its Student-t 95% CI. Verdict on the core tokenset, p-values Holm-adjusted over "
            f"these rows: equivalent where a paired TOST shows |Δ| < {margin:g}, else better or worse "
            "(**bold**) where a paired t-test rejects Δ = 0, else inconclusive."
        )
    if (table["chosen_on"] == TEST).any():
        notes.append(
            "Exploratory (rows chosen on test): these records have no validation slice (protocol 1), so "
            "each side is the method and t with the best mean TEST accuracy over seeds, the side with more "
            "candidates favoured. Δ (paired by seed, Student-t 95% CI; p-values Holm-adjusted over these "
            "rows) describes where to look; it is not a verdict. The pre-declared comparisons with "
            "verdicts (each core tokenset against the coreset of its own sample selector at equal bytes) "
            "are the leaderboard's."
        )
    notes.append(
        "Equal bytes: both sides were allowed the same bytes (checked from each record's bytes_allowed)."
    )
    return notes


def _headers(axes: Sequence[str]) -> list[str]:
    return [
        *map(axis_text, axes),
        "Best coreset",
        "Best core tokenset",
        "Seeds",
        "Δ tokenset − coreset [95% CI]",
        "Verdict (tokenset)",
    ]


def regime_markdown(table: pd.DataFrame, caption: str = "", per_fraction: pd.DataFrame | None = None) -> str:
    """The regime table as Markdown (tabulate, pipe format); ``per_fraction`` adds a section per t."""
    axes = markdown_axes(table)
    fixed = [axis for axis in axis_columns(table) if axis not in axes and axis != "task"]
    margin = table.attrs.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN)
    headers = _headers(axes)
    exploratory = (table["chosen_on"] == TEST).all()
    sections = [
        "# Regime map: core tokenset against coreset at equal bytes"
        + (" (exploratory: chosen on test)" if exploratory else ""),
        caption,
        tabulate(_rows(table, axes, True), headers=headers, tablefmt="pipe", disable_numparse=True),
        "Per regime (every setting but the method, its token fraction and the seed), the best coreset and "
        "the best core tokenset (any token fraction t, auto included).",
        *choice_notes(table, margin),
    ]
    if fixed:
        settings = ", ".join(f"{axis}={_values_text(table[axis])}" for axis in fixed)
        sections.append(f"Settings the same in every regime of a task: {settings}.")
    if per_fraction is not None and not per_fraction.empty and per_fraction[TOKEN_FRACTION].nunique() > 1:
        fraction_axes = [*axes, TOKEN_FRACTION]
        fraction_headers = [*map(axis_text, fraction_axes), *headers[len(axes) :]]
        sections += [
            "## By token fraction",
            tabulate(
                _rows(per_fraction, fraction_axes, False),
                headers=fraction_headers,
                tablefmt="pipe",
                disable_numparse=True,
            ),
            "The same comparison at each token fraction t: the best core tokenset at that t against the "
            "regime's best coreset, chosen as above (Holm over this table).",
        ]
    return "\n\n".join(section for section in sections if section) + "\n"


def tuned_delta_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """The tuned Δ of a grid without regime axes: per task × retention (the rows of ``regime_table``
    chosen on validation), the best core tokenset against the best coreset."""
    axes = ["task", *(axis for axis in markdown_axes(table) if axis != "task")]
    margin = table.attrs.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN)
    sections = [
        "# Tuned Δ: best core tokenset against best coreset, chosen on validation",
        caption,
        tabulate(_rows(table, axes, True), headers=_headers(axes), tablefmt="pipe", disable_numparse=True),
        "Per task and retention, at equal bytes.",
        *choice_notes(table, margin),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"
