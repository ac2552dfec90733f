"""Reports on protocol-2 records (issue 18): validation, class coverage, shortcut diagnostics, and no
published cell chosen by test accuracy."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.config import CellConfig
from benchmark.results import write_json_atomic
from reports.latex import leaderboard_latex
from reports.leaderboard import COVERAGE_NOTE, leaderboard_frame, leaderboard_markdown
from reports.make import make_report
from reports.records import cell_frame
from reports.regime_table import EXPLORATORY, TEST, VALIDATION, regime_markdown, regime_table
from reports.shortcut import SHORTCUT_FIELDS, shortcut_frame, shortcut_markdown, write_shortcut_report
from reports.site import render_site
from reports.stats import holm
from tests.test_regimes_report import record

SEEDS = (0, 1, 2)
NOISE = (0.0, 0.013, -0.008)


def shortcut(old_whole: float, old_partial: float) -> list[dict[str, Any]]:
    """Diagnostics after two tasks: the first has no old task (None), the last is the one reported."""
    first = dict.fromkeys(SHORTCUT_FIELDS)
    first.update(new_whole=0.9, new_partial=0.8)
    last = {
        "old_whole": old_whole,
        "old_partial": old_partial,
        "new_whole": 1.0,
        "new_partial": 0.3,
        "newest_share_whole": 0.6,
        "newest_share_partial": 0.1,
    }
    return [first, last]


def protocol_2(method: str, seed: int, test: float, validation: float, **extra: Any) -> dict[str, Any]:
    """A protocol-2 cell at 5% retention (t = 1/4 for a core tokenset) with its validation score."""
    fraction = 0.25 if "+" in method else 1.0
    item = record(method, 0.05, seed, test, token_fraction=fraction, **extra)
    item["validation_final_accuracy"] = validation + NOISE[seed]
    item["config"]["protocol"] = 2
    return item


# --- records -------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10), st.integers(0, 10)), min_size=1, max_size=6))
def test_coverage_is_the_smallest_share_of_a_tasks_classes_kept(tasks: list[tuple[int, int]]) -> None:
    classes = [n for n, _ in tasks]
    covered = [min(k, n) for n, k in tasks]
    item = record("random", 0.05, 0, 0.6, classes_per_task=classes, classes_covered_per_task=covered)
    expected = min(k / n for n, k in zip(classes, covered, strict=True))
    assert cell_frame([item])["coverage"].item() == pytest.approx(expected)


def test_protocol_1_records_leave_the_new_columns_empty() -> None:
    item = record("random", 0.05, 0, 0.6)
    del item["validation_final_accuracy"]
    cells = cell_frame([item])
    assert math.isnan(cells["validation_final_accuracy"].item()) and math.isnan(cells["coverage"].item())
    assert cells["shortcut_final"].item() is None


def test_the_final_shortcut_row_and_the_validation_score_are_read() -> None:
    cells = cell_frame([protocol_2("random", 1, 0.6, 0.7, shortcut=shortcut(0.4, 0.8))])
    assert cells["shortcut_final"].item() == shortcut(0.4, 0.8)[-1]
    assert cells["validation_final_accuracy"].item() == pytest.approx(0.7 + NOISE[1])


# --- the coverage mark ------------------------------------------------------------------------------------


def coverage_records(missed_seed: int | None) -> list[dict[str, Any]]:
    """random and herding at 5%, three seeds; ``missed_seed``: the one seed in which random's memory
    kept a sample of only one of a task's two classes."""
    records = []
    for seed in SEEDS:
        for method in ("random", "herding"):
            covered = [1, 2] if method == "random" and seed == missed_seed else [2, 2]
            records.append(
                protocol_2(method, seed, 0.6, 0.6, classes_per_task=[2, 2], classes_covered_per_task=covered)
            )
    return records


def accuracy_cells(markdown: str) -> dict[str, str]:
    """Method → its final-accuracy cell, from the leaderboard's Markdown rows."""
    rows = [line.split("|") for line in markdown.splitlines() if line.startswith("| split-shapes")]
    return {row[2].strip(): row[7].strip() for row in rows}


def test_a_row_whose_memory_missed_a_class_in_one_seed_is_marked() -> None:
    board = leaderboard_frame(cell_frame(coverage_records(missed_seed=2)))
    markdown = leaderboard_markdown(board, "caption")
    cells = accuracy_cells(markdown)
    assert cells["random"].endswith("‡") and not cells["herding"].endswith("‡")
    assert f"‡ {COVERAGE_NOTE}" in markdown
    assert "ddagger" in leaderboard_latex(board, "caption")
    site = render_site(board, cell_frame(coverage_records(2)), "caption", [], Path("."))
    assert site.count('class="coverage"') == 1 and html.escape(COVERAGE_NOTE) in site


@pytest.mark.parametrize("missed_seed", [None, "protocol 1"])
def test_full_coverage_and_protocol_1_have_no_mark(missed_seed: str | None) -> None:
    records = coverage_records(missed_seed=None)
    if missed_seed == "protocol 1":
        for item in records:
            del item["classes_per_task"], item["classes_covered_per_task"]
    markdown = leaderboard_markdown(leaderboard_frame(cell_frame(records)), "caption")
    assert "‡" not in markdown and COVERAGE_NOTE not in markdown


# --- the shortcut table -----------------------------------------------------------------------------------


def test_shortcut_table_holds_the_mean_over_seeds_of_the_last_task() -> None:
    records = [
        protocol_2("random+rollout", seed, 0.6, 0.6, shortcut=shortcut(0.3 + 0.1 * seed, 0.9))
        for seed in SEEDS
    ]
    table = shortcut_frame(cell_frame(records))
    row = table.iloc[0]
    assert len(table) == 1 and row["seeds"] == 3 and row["t"] == 0.25
    assert row["old_whole"] == pytest.approx(0.4) and row["old_partial"] == pytest.approx(0.9)
    assert row["new_partial"] == pytest.approx(0.3) and row["newest_share_whole"] == pytest.approx(0.6)
    text = shortcut_markdown(table)
    assert "| split-shapes | random+rollout | 5%" in text and "0.400" in text
    assert 'sparse input has come to mean "an old class"' in text


def test_shortcut_report_is_written_only_with_diagnostics(tmp_path: Path) -> None:
    with_data = [protocol_2("random", seed, 0.6, 0.6, shortcut=shortcut(0.5, 0.5)) for seed in SEEDS]
    written = write_shortcut_report(cell_frame(with_data), tmp_path)
    assert sorted(path.name for path in written) == ["shortcut.csv", "shortcut.md"]
    without = [protocol_2("random", seed, 0.6, 0.6) for seed in SEEDS]
    assert write_shortcut_report(cell_frame(without), tmp_path) == []
    assert not (tmp_path / "shortcut.md").exists() and not (tmp_path / "shortcut.csv").exists()


# --- no published cell chosen on test ---------------------------------------------------------------------


def choice_records() -> list[dict[str, Any]]:
    """On validation herding and gradmatch+rollout are best; on test random and random+rollout are."""
    records = []
    for seed in SEEDS:
        records.append(protocol_2("random", seed, test=0.70, validation=0.50))
        records.append(protocol_2("herding", seed, test=0.60, validation=0.80))
        records.append(protocol_2("random+rollout", seed, test=0.75, validation=0.55))
        records.append(protocol_2("gradmatch+rollout", seed, test=0.65, validation=0.85))
    return records


def test_the_tuned_delta_picks_each_side_on_validation_and_compares_on_test() -> None:
    row = regime_table(cell_frame(choice_records())).iloc[0]
    assert row["chosen_on"] == VALIDATION
    assert row["coreset"] == "herding" and row["tokenset"] == "gradmatch+rollout"
    assert row["difference_mean"] == pytest.approx(0.05)  # on test: 0.65 − 0.60, not 0.75 − 0.70
    assert row["verdict"] == "better"  # the same seed noise on both sides: a tight paired CI


def test_records_without_validation_are_exploratory_not_a_verdict() -> None:
    records = choice_records()
    for item in records:
        item["validation_final_accuracy"] = None
    table = regime_table(cell_frame(records))
    row = table.iloc[0]
    assert row["chosen_on"] == TEST and row["verdict"] == EXPLORATORY
    assert row["coreset"] == "random" and row["tokenset"] == "random+rollout"
    text = regime_markdown(table)
    assert "exploratory: chosen on test" in text and "it is not a verdict" in text
    assert "**" not in text.split("\n\n")[1]  # no bold verdict in the table


def test_holm_families_are_the_validation_rows_and_the_test_rows_apart() -> None:
    tuned = choice_records()
    exploratory = []
    for item in choice_records():  # the same cells at another retention, without validation
        item["config_hash"] += "-p1"
        item["config"]["retention"] = 0.1
        item["validation_final_accuracy"] = None
        exploratory.append(item)
    table = regime_table(cell_frame(tuned + exploratory))
    for on in (VALIDATION, TEST):
        rows = table[table["chosen_on"] == on]
        assert len(rows) == 1
        assert rows["p_holm"].tolist() == pytest.approx(holm(rows["p_value"].tolist()).tolist())
    assert set(table.loc[table["chosen_on"] == TEST, "verdict"]) == {EXPLORATORY}


def test_make_report_writes_the_tuned_delta_and_shortcut_table(tmp_path: Path) -> None:
    for item in choice_records():
        item["shortcut"] = shortcut(0.4, 0.8)
        item["config_hash"] = CellConfig.from_dict(item["config"]).config_hash  # a record its cell's
        write_json_atomic(tmp_path / "results" / "cells" / f"{item['config_hash']}.json", item)
    outputs = make_report(tmp_path / "results", tmp_path / "out", gallery=False, site=False)
    names = {path.name for paths in outputs.values() for path in paths}
    assert {"tuned_delta.md", "tuned_delta.tex", "shortcut.md", "shortcut.csv"} <= names
    assert "regimes.md" not in names
    text = (tmp_path / "out" / "tuned_delta.md").read_text()
    assert "herding" in text and "gradmatch+rollout" in text
