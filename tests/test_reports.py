"""reports/: leaderboard frame, tables, figures and the report command, on synthetic cell records."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import seaborn as sns
from scipy import stats

from benchmark.config import CellConfig, TrainConfig
from benchmark.errors import UserError
from benchmark.results import FAILED, FINISHED, CellResult, load_results, write_json_atomic
from reports.figures import accuracy_matrix_figure, draw_memory_accuracy, mean_accuracy_matrix, method_palette
from reports.latex import escape_latex, leaderboard_latex
from reports.leaderboard import failed_frame, leaderboard_frame, leaderboard_markdown
from reports.make import make_report
from reports.records import cell_frame
from reports.stats import format_bytes, format_mean_ci, mean_ci

TASKS = ("split_shapes", "split_digits")
RETENTIONS = (0.01, 0.05, 0.2)
SEEDS = (0, 1, 2)
STORED_METHODS = ("random", "reservoir", "random+random")
BOUNDS = ("none", "joint")
TASK_INPUT_BYTES = 3 * 1000 * 3 * 32 * 32  # three tasks of 1000 uint8 32×32 RGB images
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOW_DIAGONAL = ("split_digits", "reservoir", 0.05, 1)  # task, method, retention, seed
FAILED_CELL = ("split_shapes", "random", 0.05, 3)
SEED_NOISE = {0: -0.012, 1: 0.004, 2: 0.011, 3: -0.003}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"


def old_task_accuracy(task: str, method: str, retention: float | None, seed: int) -> float:
    """Accuracy kept on earlier tasks. Shapes: the core tokenset wins at 1% and 5%, reservoir at 20%.
    Digits: reservoir wins everywhere."""
    if method == "none":
        return 0.02 + SEED_NOISE[seed] / 4
    if method == "joint":
        return 0.93 + SEED_NOISE[seed] / 4
    level = 0.2 + 2.0 * retention + SEED_NOISE[seed]
    if method == "reservoir":
        return level + 0.02
    if method == "random+random":
        return level + (0.08 if task == "split_shapes" and retention <= 0.05 else -0.05)
    return level


def accuracy_matrix(diagonal: float, old: float) -> list[list[float]]:
    return [[diagonal, 0.0, 0.0], [(diagonal + old) / 2, diagonal, 0.0], [old, old, diagonal]]


def matrix_metrics(matrix: list[list[float]]) -> dict[str, float]:
    a = np.asarray(matrix)
    last = len(a) - 1
    return {
        "diagonal_mean": float(np.mean(np.diag(a))),
        "final_average_accuracy": float(a[last].mean()),
        "average_forgetting": float(np.mean([a[:last, j].max() - a[last, j] for j in range(last)])),
        "backward_transfer": float(np.mean([a[last, j] - a[j, j] for j in range(last)])),
    }


def cell_config(task: str, method: str, retention: float | None, seed: int) -> CellConfig:
    sample_selector, _, token_selector = method.partition("+")
    return CellConfig(
        grid="smoke",
        task=task,
        task_params={"modes": 2} if task == "split_shapes" else {},
        method=method,
        sample_selector=sample_selector,
        token_selector=token_selector or None,
        selector_params={},
        token_selector_params={},
        retention=retention,
        token_fraction=0.25 if token_selector else 1.0,
        seed=seed,
        train=TrainConfig(epochs=3),
    )


def finished_cell(task: str, method: str, retention: float | None, seed: int) -> dict[str, Any]:
    config = cell_config(task, method, retention, seed)
    low = (task, method, retention, seed) == LOW_DIAGONAL
    matrix = accuracy_matrix(0.7 if low else 0.97, old_task_accuracy(task, method, retention, seed))
    allowed = 0 if retention is None else math.floor(retention * TASK_INPUT_BYTES)
    attribution = None
    if task == "split_shapes" and "+" in method:
        attribution = {"precision": 0.6 + 0.01 * seed, "recall": 0.4, "pointing_game": 0.8}
    return CellResult(
        config=config.to_dict(),
        config_hash=config.config_hash,
        status=FINISHED,
        accuracy_matrix=matrix,
        **matrix_metrics(matrix),
        bytes_used=int(allowed * (0.92 if "+" in method else 0.97)),
        bytes_allowed=allowed,
        attribution=attribution,
        selection_seconds=0.5,
        training_seconds=10.0,
        wall_seconds=11.0,
        provenance={"commit": COMMIT, "device": "cpu", "versions": {"python": "3.11"}},
    ).to_dict()


def failed_cell(task: str, method: str, retention: float, seed: int) -> dict[str, Any]:
    config = cell_config(task, method, retention, seed)
    return CellResult(
        config=config.to_dict(),
        config_hash=config.config_hash,
        status=FAILED,
        error="CellError: budget of 0 samples\nsecond line",
        provenance={"commit": COMMIT},
    ).to_dict()


def synthetic_records() -> list[dict[str, Any]]:
    records = [
        finished_cell(task, method, retention, seed)
        for task in TASKS
        for method in STORED_METHODS
        for retention in RETENTIONS
        for seed in SEEDS
    ]
    records += [
        finished_cell(task, bound, None, seed) for task in TASKS for bound in BOUNDS for seed in SEEDS
    ]
    return [*records, failed_cell(*FAILED_CELL)]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    grid_dir = tmp_path / "results" / "smoke"
    for record in synthetic_records():
        write_json_atomic(grid_dir / "cells" / f"{record['config_hash']}.json", record)
    return grid_dir


@pytest.fixture
def records(results_dir: Path) -> list[dict[str, Any]]:
    return load_results(results_dir)


def expected_finals(task: str, method: str, retention: float | None) -> list[float]:
    return [finished_cell(task, method, retention, seed)["final_average_accuracy"] for seed in SEEDS]


def best_method(task: str, retention: float) -> str:
    return max(STORED_METHODS, key=lambda method: np.mean(expected_finals(task, method, retention)))


def markdown_rows(markdown: str) -> list[list[str]]:
    """Cells of the leaderboard table's body rows."""
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


def latex_pivot(latex: str, task: str) -> dict[str, list[str]]:
    """The rows of ``task``'s method × retention pivot: method label → its cells, one per retention."""
    table = next(part for part in latex.split(r"\begin{table*}") if f"on {escape_latex(task)}," in part)
    body = table.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    rows = [line.removesuffix(r" \\").split(" & ") for line in body.splitlines() if " & " in line]
    return {cells[0].replace(r"\allowbreak{}", ""): cells[1:] for cells in rows}


def retention_text(retention: float | None) -> str:
    return "–" if retention is None else f"{retention * 100:g}%"


# --- stats --------------------------------------------------------------------------------------


def test_mean_ci_is_student_t_95_by_hand() -> None:
    values = [0.81, 0.78, 0.86, 0.79]
    mean, half_width = mean_ci(values)
    by_hand = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    assert mean == pytest.approx(np.mean(values), abs=1e-12)
    assert half_width == pytest.approx(by_hand, rel=1e-12)
    assert half_width > 1.96 * np.std(values, ddof=1) / math.sqrt(len(values))  # wider than a normal CI


def test_mean_ci_of_one_value_has_no_interval() -> None:
    mean, half_width = mean_ci([0.5])
    assert mean == 0.5 and math.isnan(half_width)
    assert all(math.isnan(value) for value in mean_ci([]))


def test_format_mean_ci() -> None:
    assert format_mean_ci(0.8123, 0.0312) == "0.812 ± 0.031"
    assert format_mean_ci(0.8123, math.nan) == "0.812 ±–"
    assert format_mean_ci(math.nan, math.nan) == "–"
    assert [format_bytes(n) for n in (0, 999, 153_000, 999_999, 3_070_000)] == [
        "0 B",
        "999 B",
        "153 kB",
        "1 MB",
        "3.07 MB",
    ]


# --- frame --------------------------------------------------------------------------------------


def test_frame_has_one_row_per_task_method_retention(records: list[dict[str, Any]]) -> None:
    frame = leaderboard_frame(cell_frame(records))
    keys = [
        (task, method, None if math.isnan(retention) else retention)
        for task, method, retention in zip(frame["task"], frame["method"], frame["retention"], strict=True)
    ]
    expected = {
        (task, method, retention) for task in TASKS for method in STORED_METHODS for retention in RETENTIONS
    }
    expected |= {(task, bound, None) for task in TASKS for bound in BOUNDS}
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert (frame["seeds"] == 3).all()  # the failed fourth seed is left out
    kinds = dict(zip(frame["method"], frame["kind"], strict=True))
    assert kinds == {"none": "bound", "joint": "bound", "random": "coreset", "reservoir": "coreset"} | {
        "random+random": "core tokenset"
    }


def test_frame_ci_is_student_t_over_seeds(records: list[dict[str, Any]]) -> None:
    frame = leaderboard_frame(cell_frame(records))
    row = frame[
        (frame["task"] == "split_shapes") & (frame["method"] == "random") & (frame["retention"] == 0.05)
    ]
    finals = expected_finals("split_shapes", "random", 0.05)
    half_width = stats.t.ppf(0.975, 2) * np.std(finals, ddof=1) / math.sqrt(3)
    assert row["final_accuracy_mean"].item() == pytest.approx(np.mean(finals), abs=1e-12)
    assert row["final_accuracy_ci"].item() == pytest.approx(half_width, rel=1e-9)
    assert row["forgetting_mean"].item() == pytest.approx(
        np.mean([finished_cell("split_shapes", "random", 0.05, s)["average_forgetting"] for s in SEEDS])
    )
    assert COMMIT in row["commits"].item() and row["grid"].item() == "smoke"
    assert len(row["config_hashes"].item().split(",")) == 3


def test_learned_is_false_only_where_a_seed_did_not_learn(records: list[dict[str, Any]]) -> None:
    frame = leaderboard_frame(cell_frame(records))
    not_learned = frame[~frame["learned"]]
    task, method, retention, _ = LOW_DIAGONAL
    assert list(zip(not_learned["task"], not_learned["method"], not_learned["retention"], strict=True)) == [
        (task, method, retention)
    ]
    assert not_learned["diagonal_mean"].item() == pytest.approx((0.7 + 0.97 + 0.97) / 3)


def test_attribution_columns_only_for_tokensets_with_masks(records: list[dict[str, Any]]) -> None:
    frame = leaderboard_frame(cell_frame(records))
    precision = frame.set_index(["task", "method", "retention"])["attribution_precision_mean"]
    assert precision[("split_shapes", "random+random", 0.2)] == pytest.approx(0.61)
    assert precision.drop(index="random+random", level="method").isna().all()
    assert precision.loc["split_digits"].isna().all()


def test_cells_differing_in_task_params_are_not_pooled() -> None:
    records = [finished_cell("split_shapes", "random", 0.05, seed) for seed in SEEDS]
    other = cell_config("split_shapes", "random", 0.05, 0)
    other = CellConfig(**{**other.__dict__, "task_params": {"modes": 8}})
    records.append({**records[0], "config": other.to_dict(), "config_hash": other.config_hash})
    frame = leaderboard_frame(cell_frame(records))
    assert sorted(frame["task"]) == ["split_shapes[modes=2]", "split_shapes[modes=8]"]
    assert sorted(frame["seeds"]) == [1, 3]


def test_a_cell_found_in_two_grid_folders_counts_once(results_dir: Path) -> None:
    single = leaderboard_frame(cell_frame(load_results(results_dir)))
    for record in synthetic_records():  # the same cells, met again under a second grid's folder
        write_json_atomic(results_dir.parent / "copy" / "cells" / f"{record['config_hash']}.json", record)
    retried = finished_cell(*FAILED_CELL)  # the failed cell, finished in a folder read before it
    write_json_atomic(results_dir.parent / "a_retry" / "cells" / f"{retried['config_hash']}.json", retried)
    records = load_results(results_dir.parent)
    frame = leaderboard_frame(cell_frame(records))
    assert failed_frame(cell_frame(records)).empty
    task, method, retention, _ = FAILED_CELL
    retried_row = (frame["task"] == task) & (frame["method"] == method) & (frame["retention"] == retention)
    assert frame.loc[retried_row, "seeds"].item() == 4
    assert (frame.loc[~retried_row, "seeds"] == 3).all() and len(frame) == len(single)


# --- tables -------------------------------------------------------------------------------------


def test_markdown_bolds_the_best_final_accuracy_per_task_and_retention(records: list[dict[str, Any]]) -> None:
    markdown = leaderboard_markdown(leaderboard_frame(cell_frame(records)), "caption")
    bolded = {}
    for task, method, _, retention, *_, final in (row[:7] for row in markdown_rows(markdown)):
        if final.startswith("**"):
            assert (task, retention) not in bolded, f"two bold cells for {task} {retention}"
            bolded[(task, retention)] = method
    expected = {(task, retention_text(r)): best_method(task, r) for task in TASKS for r in RETENTIONS}
    assert bolded == expected
    assert (
        expected[("split_shapes", "1%")] == "random+random"
        and expected[("split_digits", "1%")] == "reservoir"
    )


def test_markdown_dagger_marks_exactly_the_group_that_did_not_learn(records: list[dict[str, Any]]) -> None:
    markdown = leaderboard_markdown(leaderboard_frame(cell_frame(records)), "caption")
    marked = [(row[0], row[1], row[3]) for row in markdown_rows(markdown) if "†" in " ".join(row)]
    task, method, retention, _ = LOW_DIAGONAL
    assert marked == [(task, method, retention_text(retention))]
    assert (
        "† some seed's diagonal mean (accuracy on each task right after training it) is below 0.9" in markdown
    )


def test_markdown_shows_mean_and_interval_in_one_cell(records: list[dict[str, Any]]) -> None:
    frame = leaderboard_frame(cell_frame(records))
    markdown = leaderboard_markdown(frame, "Grid smoke; 3 seeds")
    row = next(r for r in markdown_rows(markdown) if r[:2] == ["split_digits", "random"] and r[3] == "20%")
    mean, half_width = mean_ci(expected_finals("split_digits", "random", 0.2))
    assert row[6] == f"{mean:.3f} ± {half_width:.3f}"
    assert "Grid smoke; 3 seeds" in markdown


def test_latex_pivot_is_booktabs_escaped_with_bold_best_and_dagger(records: list[dict[str, Any]]) -> None:
    latex = leaderboard_latex(leaderboard_frame(cell_frame(records)), "Grid my_grid")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabularx}{\textwidth}"):
        assert rule in latex
    assert r"split\_shapes" in latex and "% Grid my_grid" in latex and r"{20\%}" in latex
    text = "\n".join(line for line in latex.splitlines() if not line.startswith("%"))
    assert re.search(r"(?<!\\)_", text.replace(r"\_", "")) is None
    assert re.search(r"(?<!\\)%", text) is None  # every % escaped outside the comment lines
    for task in TASKS:
        pivot = latex_pivot(latex, task)
        assert set(pivot) >= {"none", "joint", "random", "reservoir", "random+random ($t = 25\\%$)"}
        stored = {label: cells for label, cells in pivot.items() if len(cells) == len(RETENTIONS)}
        for column, retention in enumerate(RETENTIONS):
            bold = [label for label, cells in stored.items() if r"\textbf{" in cells[column]]
            assert [label.split(" ")[0] for label in bold] == [best_method(task, retention)]
        assert pivot["none"][0].startswith(r"\multicolumn{3}{c}")  # a bound spans the retentions
    daggers = {
        (task, label, column)
        for task in TASKS
        for label, cells in latex_pivot(latex, task).items()
        for column, cell in enumerate(cells)
        if r"$^\dagger$" in cell
    }
    assert daggers == {("split_digits", "reservoir", RETENTIONS.index(0.05))}


def test_escape_latex() -> None:
    assert escape_latex("a_b & 10% {x} #1 $") == r"a\_b \& 10\% \{x\} \#1 \$"
    assert escape_latex("× 2 ≤ 3 ± 1") == r"$\times$ 2 $\leq$ 3 $\pm$ 1"
    assert escape_latex("gradmatch+gradlrp") == "gradmatch+gradlrp"


# --- figures ------------------------------------------------------------------------------------


def test_make_report_writes_tables_csv_figures_and_failed(results_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    outputs = make_report(results_dir, out_dir)
    assert {path.name for path in outputs["tables"]} == {
        "leaderboard.md",
        "leaderboard.tex",
        "coreset_size.tex",
    }
    for task in TASKS:
        png = out_dir / f"memory_accuracy_{task}.png"
        pdf = out_dir / f"memory_accuracy_{task}.pdf"
        assert png in outputs["figures"] and pdf in outputs["figures"]
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 10_000
        assert pdf.read_bytes().startswith(PDF_MAGIC) and pdf.stat().st_size > 5_000
    csv_lines = outputs["csv"][0].read_text().splitlines()
    assert len(csv_lines) == 1 + len(TASKS) * (len(BOUNDS) + len(STORED_METHODS) * len(RETENTIONS))
    failed = outputs["failed"][0].read_text()
    assert "CellError: budget of 0 samples second line" in failed and "| random" in failed
    assert not list(out_dir.glob(".*.tmp"))


def test_make_report_removes_a_stale_failed_list(results_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    make_report(results_dir, out_dir)
    assert (out_dir / "failed.md").exists()
    failed_hash = failed_cell(*FAILED_CELL)["config_hash"]
    (results_dir / "cells" / f"{failed_hash}.json").unlink()
    assert make_report(results_dir, out_dir)["failed"] == []
    assert not (out_dir / "failed.md").exists()


def test_line_colour_of_a_method_is_the_same_in_every_figure(records: list[dict[str, Any]]) -> None:
    # split_digits lacks "random", the first name: a palette made per figure would shift its colours
    records = [
        r for r in records if (r["config"]["task"], r["config"]["method"]) != ("split_digits", "random")
    ]
    palette = method_palette(leaderboard_frame(cell_frame(records)))
    colorblind = sns.color_palette("colorblind", n_colors=10)
    assert palette == {name: tuple(colorblind[i]) for i, name in enumerate(sorted(STORED_METHODS))}
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    assert method_palette(leaderboard_frame(cell_frame(shuffled))) == palette
    colours = {}
    board = leaderboard_frame(cell_frame(records))
    for task in TASKS:
        for name, line in drawn_series(draw_memory_accuracy(board, task)).items():
            colours.setdefault(name, set()).add(tuple(line.get_color()))
    assert {name: colours[name] for name in STORED_METHODS} == {
        name: {palette[name]} for name in STORED_METHODS
    }


def drawn_series(figure) -> dict[str, Any]:
    """The data line of each series (an error-bar container) in every panel, by its name."""
    return {
        container.get_label().removesuffix(" (best)"): container.lines[0]
        for axes in figure.axes
        for container in axes.containers
    }


def test_coresets_and_core_tokensets_are_facets_and_bounds_dotted(records: list[dict[str, Any]]) -> None:
    figure = draw_memory_accuracy(leaderboard_frame(cell_frame(records)), "split_shapes")
    coresets, tokensets = figure.axes[:2]
    assert {c.get_label().removesuffix(" (best)") for c in coresets.containers} == {"random", "reservoir"}
    assert [c.get_label().removesuffix(" (best)") for c in tokensets.containers] == ["random+random"]
    styles = {name: line.get_linestyle() for name, line in drawn_series(figure).items()}
    assert styles == {"random": "-", "reservoir": "-", "random+random": "--"}
    for axes in (coresets, tokensets):
        dotted = sorted(line.get_ydata()[0] for line in axes.get_lines() if line.get_linestyle() == ":")
        assert dotted == pytest.approx(
            [np.mean(expected_finals("split_shapes", bound, None)) for bound in ("none", "joint")]
        )
        assert axes.get_xscale() == "log"
    # the best coreset is repeated, grey, beside the core tokensets
    reference = [line for line in tokensets.get_lines() if line.get_label().startswith("best coreset")]
    assert len(reference) == 1 and "reservoir" in reference[0].get_label()


def test_accuracy_matrix_is_the_seed_mean(records: list[dict[str, Any]], tmp_path: Path) -> None:
    matrix, seeds = mean_accuracy_matrix(cell_frame(records), "split_digits", "reservoir", 0.05)
    by_hand = np.mean(
        [finished_cell("split_digits", "reservoir", 0.05, seed)["accuracy_matrix"] for seed in SEEDS], axis=0
    )
    assert seeds == 3 and np.allclose(matrix, by_hand)
    paths = accuracy_matrix_figure(
        cell_frame(records), "split_digits", "reservoir", 0.05, tmp_path, caption="G."
    )
    assert [path.read_bytes()[:5] for path in paths[:2]] == [PDF_MAGIC, PNG_MAGIC[:5]]
    assert paths[2].name.endswith(".caption.txt") and paths[2].read_text().strip().endswith("G.")


# --- errors -------------------------------------------------------------------------------------


def test_empty_results_dir_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    with pytest.raises(UserError, match="no finished cell results"):
        make_report(tmp_path / "empty", tmp_path / "out")


def test_only_failed_cells_is_a_user_error(tmp_path: Path) -> None:
    record = failed_cell(*FAILED_CELL)
    write_json_atomic(tmp_path / "grid" / "cells" / f"{record['config_hash']}.json", record)
    with pytest.raises(UserError, match="no finished cell results"):
        make_report(tmp_path / "grid", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ranks_within_task_and_retention_and_overall() -> None:
    import pandas as pd

    from reports.leaderboard import overall_rank_frame, rank_within_groups

    frame = pd.DataFrame(
        {
            "task": ["a", "a", "a", "a", "a", "b", "b"],
            "method": ["none", "x", "y", "x", "y", "x", "y"],
            "kind": [
                "bound",
                "coreset",
                "core tokenset",
                "coreset",
                "core tokenset",
                "coreset",
                "core tokenset",
            ],
            "retention": [float("nan"), 0.1, 0.1, 0.2, 0.2, 0.1, 0.1],
            "final_accuracy_mean": [0.1, 0.8, 0.7, 0.6, 0.9, 0.5, 0.5],
        }
    )
    frame["rank"] = rank_within_groups(frame)
    assert frame["rank"].isna().tolist() == [True] + [False] * 6  # bounds are not ranked
    assert frame["rank"].tolist()[1:] == [1, 2, 2, 1, 1, 1]  # a tie shares the best rank
    overall = overall_rank_frame(frame)
    assert overall["method"].tolist() == ["x", "y"]
    assert overall["mean_rank"].tolist() == pytest.approx([4 / 3, 4 / 3])
    assert overall["overall_rank"].tolist() == [1, 1]
    assert overall["groups"].tolist() == [3, 3] and overall["tasks"].tolist() == [2, 2]


def test_a_task_scored_by_cider_is_named_and_not_judged_by_the_accuracy_threshold() -> None:
    from reports.leaderboard import leaderboard_frame, leaderboard_markdown

    cells = [finished_cell("split_shapes", "random", 0.05, seed) for seed in (0, 1)]
    captions = []
    for seed in (0, 1):
        cell = finished_cell("split_digits", "random", 0.05, seed)
        cell.update(metric="CIDEr", diagonal_mean=0.5)  # a CIDEr diagonal below 0.9 is no failure to learn
        captions.append(cell)
    frame = leaderboard_frame(cell_frame(cells + captions))
    assert frame.set_index("task").loc["split_digits", "learned"]
    text = leaderboard_markdown(frame, "caption")
    assert "split_digits: the final-accuracy and forgetting columns hold CIDEr" in text
    assert "split_shapes:" not in text


def test_dagger_marks_a_row_whose_mean_diagonal_passes_when_one_seed_does_not() -> None:
    records = [finished_cell("split_shapes", "random", 0.05, seed) for seed in SEEDS]
    records[1]["accuracy_matrix"][1][1] = 0.73  # seed 1's diagonal mean: (0.97 + 0.73 + 0.97) / 3 = 0.89
    records[1]["diagonal_mean"] = float(np.mean(np.diag(np.asarray(records[1]["accuracy_matrix"]))))
    frame = leaderboard_frame(cell_frame(records))
    assert frame["diagonal_mean"].item() > 0.9 and not frame["learned"].item()
    markdown = leaderboard_markdown(frame, "caption")
    assert any("†" in " ".join(row) for row in markdown_rows(markdown))
    assert "some seed's diagonal mean" in markdown and "Some seed" in leaderboard_latex(frame, "caption")
