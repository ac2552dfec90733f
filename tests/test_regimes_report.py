"""The regime map on synthetic records whose answer is known: the core tokenset wins with small objects
and loses with large ones; bounds never count; seeds are paired; "auto" is a core tokenset."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.config import CellConfig
from benchmark.results import FINISHED, load_results, write_json_atomic
from reports.make import make_report
from reports.records import cell_frame
from reports.regime_figures import default_axes_pairs, partial_accuracy_frame
from reports.regime_table import regime_cells
from reports.regimes import (
    draw_accuracy_vs_t,
    draw_regime_heatmaps,
    regime_markdown,
    regime_table,
    swept_tasks,
    write_regime_report,
)
from reports.stats import mean_ci
from tests.conftest import REPO_ROOT

TASK = "split-shapes"
SCALES = (0.2, 0.6)
RETENTIONS = (0.05, 0.1)
SEEDS = (0, 1, 2)
NOISE = (0.0, 0.013, -0.008, 0.021)  # per seed: the same for every method, so pairing removes it
TASK_BYTES = 1_000_000


def record(
    method: str,
    retention: float | None,
    seed: int,
    accuracy: float,
    *,
    object_scale: float = 0.2,
    modes_per_class: int = 1,
    token_fraction: float | str = 1.0,
    replay: str = "drop",
    **extra: Any,
) -> dict[str, Any]:
    sample_selector, _, token_selector = method.partition("+")
    config = {
        "grid": "regimes",
        "task": TASK,
        "task_params": {
            "object_scale": object_scale,
            "modes_per_class": modes_per_class,
            "train_per_class": 150,
        },
        "method": method,
        "sample_selector": sample_selector,
        "token_selector": token_selector or None,
        "selector_params": {},
        "token_selector_params": {},
        "retention": retention,
        "token_fraction": token_fraction,
        "seed": seed,
        "train": {"epochs": None, "input_dropout": None, "replay": replay, "pretrain_token_dropout": 0.0},
    }
    digest = CellConfig.from_dict(config).config_hash  # a record counts only under its own hash
    allowed = 0 if retention is None else int(retention * TASK_BYTES)
    final = accuracy + NOISE[seed]
    return {
        "config": config,
        "config_hash": digest,
        "status": FINISHED,
        "final_average_accuracy": final,
        "average_forgetting": 0.1,
        "accuracy_matrix": [[0.97, 0.0], [final, final]],
        "bytes_used": int(allowed * 0.95),
        "bytes_allowed": allowed,
        "provenance": {"commit": "0" * 40},
        # a validation score that ranks candidates as test does (None: a protocol-1 record without one)
        "validation_final_accuracy": final,
        **extra,
    }


def tokenset_advantage(scale: float, retention: float) -> float:
    """Small objects: the core tokenset is 0.08 better (more at more memory); large: 0.06 worse."""
    return (0.08 + (retention - 0.05)) if scale < 0.5 else -0.06


def regime_records(seeds_of_tokenset: tuple[int, ...] = SEEDS) -> list[dict[str, Any]]:
    records = []
    for scale in SCALES:
        for retention in RETENTIONS:
            base = 0.5 + retention
            for seed in SEEDS:
                records.append(record("random", retention, seed, base, object_scale=scale))
                records.append(record("kcenter", retention, seed, base - 0.02, object_scale=scale))
            advantage = tokenset_advantage(scale, retention)
            for seed in seeds_of_tokenset:
                for fraction, offset in ((0.25, 0.0), (0.5, -0.03)):
                    records.append(
                        record("gradmatch+gradlrp", retention, seed, base + advantage + offset,
                               object_scale=scale, token_fraction=fraction)
                    )  # fmt: skip
        for seed in SEEDS:  # the bounds are far above every memory: never the best "coreset"
            records.append(record("joint", None, seed, 0.99, object_scale=scale))
            records.append(record("none", None, seed, 0.2, object_scale=scale))
    return records


def row_at(table, scale: float, retention: float):
    rows = table[(table["object_scale"] == scale) & (table["retention"] == retention)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_table_sign_and_ci_flag_per_regime() -> None:
    table = regime_table(cell_frame(regime_records()))
    assert len(table) == len(SCALES) * len(RETENTIONS)
    for scale in SCALES:
        for retention in RETENTIONS:
            row = row_at(table, scale, retention)
            advantage = tokenset_advantage(scale, retention)
            assert row["coreset"] == "random"  # not joint, not none, not the worse kcenter
            assert row["tokenset"] == "gradmatch+gradlrp" and row["tokenset_token_fraction"] == 0.25
            assert row["difference_mean"] == pytest.approx(advantage)
            assert row["seeds"] == 3 and row["p_holm"] < 0.05  # the same noise on both sides: CI ≈ 0
            assert row["verdict"] == ("better" if advantage > 0 else "worse")  # said of the tokenset
            assert row["equal_bytes"] and row["bytes_allowed"] == int(retention * TASK_BYTES)


def test_a_difference_within_noise_is_not_flagged() -> None:
    records = [
        record("random", 0.1, seed, 0.6 + noise, object_scale=0.2)
        for seed, noise in zip(SEEDS, (0.0, 0.05, -0.05), strict=True)
    ] + [
        record("random+random", 0.1, seed, 0.6 + noise, object_scale=0.2, token_fraction=0.5)
        for seed, noise in zip(SEEDS, (0.04, -0.03, 0.0), strict=True)
    ]
    row = regime_table(cell_frame(records)).iloc[0]
    differences = [0.04 - 0.0, -0.03 - 0.05, 0.0 + 0.05]
    mean, half = mean_ci(differences)
    assert row["difference_mean"] == pytest.approx(mean) and row["difference_ci"] == pytest.approx(half)
    assert row["ci_low"] == pytest.approx(mean - half) and row["ci_high"] == pytest.approx(mean + half)
    assert row["verdict"] == "inconclusive"


def test_seeds_are_paired() -> None:
    """A tokenset seed the coreset lacks is left out of the difference (its own mean keeps it)."""
    records = regime_records(seeds_of_tokenset=(0, 1, 2, 3))
    records.append(record("gradmatch+gradlrp", 0.05, 3, 0.9, token_fraction=0.25, object_scale=0.2))
    row = row_at(regime_table(cell_frame(records)), 0.2, 0.05)
    assert row["seeds"] == 3
    assert row["difference_mean"] == pytest.approx(tokenset_advantage(0.2, 0.05))


def test_bounds_alone_make_no_row() -> None:
    records = [record(bound, None, seed, 0.9) for bound in ("none", "joint") for seed in SEEDS]
    records += [record("random", 0.1, seed, 0.5) for seed in SEEDS]
    assert regime_table(cell_frame(records)).empty


def test_auto_counts_as_a_core_tokenset() -> None:
    records = [record("random", 0.1, seed, 0.6) for seed in SEEDS]
    records += [record("random+gradlrp", 0.1, seed, 0.62, token_fraction=0.25) for seed in SEEDS]
    records += [
        record("random+gradlrp", 0.1, seed, 0.7, token_fraction="auto", token_fraction_per_task=[0.5, 0.25])
        for seed in SEEDS
    ]
    row = regime_table(cell_frame(records)).iloc[0]
    assert row["tokenset_token_fraction"] == "auto"
    assert row["difference_mean"] == pytest.approx(0.1)
    per_fraction = regime_table(cell_frame(records), per_token_fraction=True)
    assert per_fraction["token_fraction"].tolist() == [0.25, "auto"]
    assert per_fraction["difference_mean"].tolist() == pytest.approx([0.02, 0.1])
    assert "auto" in regime_markdown(regime_table(cell_frame(records)), per_fraction=per_fraction)


def test_unequal_bytes_are_flagged() -> None:
    records = [record("random", 0.1, seed, 0.6) for seed in SEEDS]
    for seed in SEEDS:
        tokenset = record("random+gradlrp", 0.1, seed, 0.62, token_fraction=0.25)
        tokenset["bytes_allowed"] += 1
        records.append(tokenset)
    row = regime_table(cell_frame(records)).iloc[0]
    assert not row["equal_bytes"] and math.isnan(row["bytes_allowed"])
    assert "unequal bytes" in regime_markdown(regime_table(cell_frame(records)))


def test_old_records_without_later_options_join_their_regime() -> None:
    """A record written before ``replay`` existed ran at "drop": the same regime as one that names it."""
    records = [record("random", 0.1, seed, 0.6) for seed in SEEDS]
    for seed in SEEDS:
        tokenset = record("random+gradlrp", 0.1, seed, 0.65, token_fraction=0.25)
        del tokenset["config"]["train"]["replay"]
        records.append(tokenset)
    assert len(regime_table(cell_frame(records))) == 1


def test_markdown_names_varying_axes_and_bolds_significant_rows() -> None:
    text = regime_markdown(regime_table(cell_frame(regime_records())), "Grid regimes.")
    header = next(line for line in text.splitlines() if line.startswith("| retention"))
    assert "object size" in header and "modes per class" not in header  # axes in words
    assert "**+0.130 [+0.130, +0.130]**" in text  # the small-object regime at 10% retention
    assert "modes_per_class=1" in text  # a setting the same everywhere is named once, below


def test_heatmap_cells_hold_the_mean_differences() -> None:
    table = regime_table(cell_frame(regime_records()))
    assert default_axes_pairs(table) == [("retention", "object_scale")]
    figures = draw_regime_heatmaps(table, [("retention", "object_scale"), ("retention", "modes_per_class")])
    assert list(figures) == ["split-shapes_retention_x_object_scale"]  # modes_per_class does not vary
    drawn = figures["split-shapes_retention_x_object_scale"]
    axes = drawn.figure.axes[0]
    plotted = np.asarray(axes.collections[0].get_array()).reshape(len(RETENTIONS), len(SCALES))
    expected = [[tokenset_advantage(scale, retention) for scale in SCALES] for retention in RETENTIONS]
    np.testing.assert_allclose(plotted, expected)
    assert [label.get_text() for label in axes.get_yticklabels()] == ["5%", "10%"]  # retention in %
    assert [label.get_text() for label in axes.get_xticklabels()] == ["0.2", "0.6"]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("object size", "retention")  # axes in words
    assert drawn.figure._suptitle is None and "better or worse" in drawn.caption
    texts = {text.get_text(): text.get_fontweight() for text in axes.texts}
    assert texts["-0.060*"] == "bold" and texts["+0.130*"] == "bold"
    norm = axes.collections[0].norm
    assert norm.vmin == pytest.approx(-norm.vmax)  # centred at 0


def test_heatmap_fixes_other_axes_at_their_most_common_value() -> None:
    records = regime_records()
    # A third axis: replay "mask" in one regime only, so "drop" is the most common value.
    for seed in SEEDS:
        records.append(record("random", 0.05, seed, 0.55, replay="mask"))
        records.append(record("random+random", 0.05, seed, 0.9, replay="mask", token_fraction=0.25))
    table = regime_table(cell_frame(records))
    figures = draw_regime_heatmaps(table, [("retention", "object_scale")])
    drawn = figures["split-shapes_retention_x_object_scale"]
    assert "replay of kept tokens drop" in drawn.caption
    plotted = np.asarray(drawn.figure.axes[0].collections[0].get_array())
    assert plotted.max() == pytest.approx(0.13)  # the 0.35 advantage under "mask" is not drawn here


def test_heatmap_axes_are_in_numeric_order() -> None:
    records = []
    for modes in (10, 2, 1):
        for seed in SEEDS:
            records.append(record("random", 0.1, seed, 0.6, modes_per_class=modes))
            records.append(record("random+random", 0.1, seed, 0.6 + 0.01 * modes, modes_per_class=modes,
                                  token_fraction=0.25))  # fmt: skip
            records.append(record("random+random", 0.1, seed, 0.5, modes_per_class=modes, token_fraction=0.5))
    table = regime_table(cell_frame(records), per_token_fraction=True)
    figures = draw_regime_heatmaps(table, default_axes_pairs(table))
    axes = figures["split-shapes_token_fraction_x_modes_per_class"].figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["1", "2", "10"]
    plotted = np.asarray(axes.collections[0].get_array()).reshape(2, 3)
    np.testing.assert_allclose(plotted, [[0.01, 0.02, 0.1], [-0.1, -0.1, -0.1]])


def test_partial_input_accuracy_is_the_mean_of_the_last_row() -> None:
    partial = {"random": {"0.25": [[0.9, 0.0], [0.5, 0.7]]}, "oracle": {"0.25": [[0.9, 0.0], [0.8, 0.9]]}}
    records = [record("random+gradlrp", 0.1, 0, 0.6, token_fraction=0.25, partial_input_accuracy=partial)]
    frame = partial_accuracy_frame(regime_cells(cell_frame(records))).set_index("ranking")
    assert frame.loc["random", "accuracy"] == pytest.approx(0.6)
    assert frame.loc["oracle", "accuracy"] == pytest.approx(0.85)


def test_accuracy_vs_t_draws_both_panels() -> None:
    records = regime_records()
    partial = {
        ranking: {str(t): [[0.0], [base * t**0.2]] for t in (0.125, 0.25, 0.5, 1.0)}
        for ranking, base in (("random", 0.6), ("oracle", 0.9))
    }
    for index, item in enumerate(records):
        if index % 3 == 0:
            item["partial_input_accuracy"] = partial
    drawn = draw_accuracy_vs_t(cell_frame(records), TASK)
    assert drawn is not None
    left, right = drawn.figure.axes[:2]
    assert len(left.get_lines()) >= len(RETENTIONS)  # a line per retention, plus coreset markers
    assert {line.get_label() for line in right.get_lines()} >= {"random tokens, core tokensets"}
    assert "object size 0.2" in drawn.caption  # fixed at its most common value (a tie: the first)


def test_write_regime_report_writes_and_skips(tmp_path: Path) -> None:
    records = regime_records()
    written = write_regime_report(cell_frame(records), tmp_path, "Grid regimes.")
    names = {path.name for path in written}
    assert "regimes.md" in names
    assert "regime_heatmaps_split-shapes_retention_x_object_scale.png" in names
    assert "regime_heatmaps_split-shapes_retention_x_token_fraction.png" in names
    assert "accuracy_vs_t_split-shapes.png" in names and "accuracy_vs_t_split-shapes.pdf" in names
    assert all(path.exists() and path.stat().st_size > 0 for path in written)
    # Without a sweep the earlier regime files go; cells chosen on validation make the tuned Δ instead.
    plain = [r for r in records if r["config"]["task_params"]["object_scale"] == 0.2]
    plain = [r for r in plain if r["config"]["token_fraction"] in (1.0, 0.25)]
    assert swept_tasks(cell_frame(plain)) == {}
    written = write_regime_report(cell_frame(plain), tmp_path)
    assert sorted(path.name for path in written) == ["tuned_delta.md", "tuned_delta.tex"]
    assert not list(tmp_path.glob("regime*")) and not list(tmp_path.glob("accuracy_vs_t_*"))
    text = (tmp_path / "tuned_delta.md").read_text()
    assert "chosen on validation" in text and "| split-shapes | 5%" in text and "| split-shapes | 10%" in text
    # Protocol-1 records (no validation score): nothing, and the tuned Δ of the earlier report goes.
    protocol_1 = [{**r, "validation_final_accuracy": None} for r in plain]
    assert write_regime_report(cell_frame(protocol_1), tmp_path) == []
    assert not list(tmp_path.glob("tuned_delta.*"))


def test_the_default_grid_report_makes_no_regime_map() -> None:
    assert swept_tasks(cell_frame(load_results(REPO_ROOT / "results" / "default"))) == {}


def test_make_report_writes_the_regime_map(tmp_path: Path) -> None:
    results = tmp_path / "results" / "regimes"
    for item in regime_records():
        write_json_atomic(results / "cells" / f"{item['config_hash']}.json", item)
    outputs = make_report(results, tmp_path / "out", gallery=False, site=False)
    assert (tmp_path / "out" / "regimes.md") in outputs["regimes"]
    assert (tmp_path / "out" / "regimes.md").read_text().startswith("# Regime map")


def test_coresets_stand_in_every_replay_mode_and_partial_inputs_is_no_axis() -> None:
    from reports.regime_table import regime_table

    def record(
        method: str, token: str | None, seed: int, accuracy: float, replay: str, partial: bool
    ) -> dict:
        return {
            "config_hash": f"{method}-{seed}-{replay}-{partial}",
            "status": "finished",
            "final_average_accuracy": accuracy,
            "bytes_allowed": 100,
            "config": {
                "task": "split-shapes", "task_params": {}, "method": method,
                "sample_selector": method.split("+")[0], "token_selector": token,
                "selector_params": {}, "token_selector_params": {}, "retention": 0.05,
                "token_fraction": 0.25 if token else 1.0, "seed": seed,
                "train": {"replay": replay, "partial_inputs": partial, "input_dropout": None},
            },
        }  # fmt: skip

    records = [record("random", None, s, 0.7, "drop", True) for s in range(3)]
    records += [record("random+rollout", "rollout", s, 0.6, "drop", True) for s in range(3)]
    records += [record("random+rollout", "rollout", s, 0.8, "mask", False) for s in range(3)]
    table = regime_table(cell_frame(records))
    assert "train.partial_inputs" not in table.columns
    by_mode = table.set_index("train.replay")
    assert by_mode.loc["drop", "difference_mean"] == pytest.approx(-0.1)
    assert by_mode.loc["mask", "difference_mean"] == pytest.approx(0.1)  # the drop coreset stands in
    assert by_mode.loc["mask", "coreset"] == "random"
