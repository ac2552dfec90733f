"""reports/: accuracy-matrix selection, forgetting and budget-split figures, and the HTML leaderboard
(rendered in headless Chromium where it is installed)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.config import CellConfig
from benchmark.results import FINISHED, load_results, write_json_atomic
from reports.figures import (
    budget_split_figure,
    budget_split_points,
    draw_budget_split,
    draw_forgetting,
    forgetting_figure,
    matrix_selection,
)
from reports.leaderboard import caption_for, leaderboard_frame
from reports.make import make_report
from reports.records import cell_frame
from reports.site import render_site
from tests.conftest import REPO_ROOT
from tests.test_reports import (
    RETENTIONS,
    SEEDS,
    TASKS,
    cell_config,
    expected_finals,
    finished_cell,
    synthetic_records,
)

CHROMIUM = "/usr/bin/chromium"
SWEPT_FRACTIONS = (0.125, 0.25, 0.5)
DEFAULT_CELLS = REPO_ROOT / "results" / "default" / "cells"


# --- synthetic records with a swept token fraction ----------------------------------------------


def split_accuracy(retention: float, fraction: float, seed: int) -> float:
    return 0.4 + retention + 0.1 * fraction + 0.01 * seed


def swept_cell(retention: float, fraction: float, seed: int) -> dict[str, Any]:
    """A random+random cell on split_shapes at token fraction ``fraction`` with a known final accuracy."""
    record = finished_cell("split_shapes", "random+random", retention, seed)
    base = cell_config("split_shapes", "random+random", retention, seed)
    config = CellConfig(**{**base.__dict__, "token_fraction": fraction})
    final = split_accuracy(retention, fraction, seed)
    return {
        **record,
        "config": config.to_dict(),
        "config_hash": config.config_hash,
        "final_average_accuracy": final,
    }


def swept_records() -> list[dict[str, Any]]:
    records = [r for r in synthetic_records() if r["config"]["method"] != "random+random"]
    records += [swept_cell(r, t, s) for r in RETENTIONS for t in SWEPT_FRACTIONS for s in SEEDS]
    return records


def best_coreset(task: str, retention: float) -> str:
    return max(("random", "reservoir"), key=lambda method: np.mean(expected_finals(task, method, retention)))


# --- accuracy matrices --------------------------------------------------------------------------


def test_matrix_selection_is_bounds_and_best_of_each_kind_at_the_middle_retention() -> None:
    frame = leaderboard_frame(cell_frame(synthetic_records()))
    # split_shapes at 5%: reservoir is the best coreset, random+random the only core tokenset
    assert matrix_selection(frame, "split_shapes") == [
        ("none", None, None),
        ("joint", None, None),
        ("reservoir", 0.05, 1.0),
        ("random+random", 0.05, 0.25),
    ]


def test_make_report_draws_the_selected_matrices_forgetting_and_a_site(tmp_path: Path) -> None:
    results = tmp_path / "results" / "smoke"
    for record in synthetic_records():
        write_json_atomic(results / "cells" / f"{record['config_hash']}.json", record)
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    stale = out_dir / "accuracy_matrix_split_shapes_ocs_r5.png"
    stale.write_bytes(b"old")
    outputs = make_report(results, out_dir)
    matrices = sorted(path.name for path in out_dir.glob("accuracy_matrix_*.png"))
    assert matrices == sorted(
        f"accuracy_matrix_{task}_{name}.png"
        for task in TASKS
        for name in ("none_bound", "joint_bound", f"{best_coreset(task, 0.05)}_r5", "random+random_r5_t0.25")
    )
    assert not stale.exists()
    for task in TASKS:
        assert (out_dir / f"forgetting_{task}.png") in outputs["figures"]
    assert not list(out_dir.glob("budget_split_*"))  # one token fraction: no budget split
    # synthetic tasks are not registered: no gallery, and the page says so
    assert outputs["gallery"] == []
    page = outputs["site"][0].read_text()
    assert outputs["site"] == [out_dir / "index.html"]
    assert "No attribution gallery" in page
    for png in out_dir.glob("*.png"):
        assert f'src="{png.name}"' in page


# --- forgetting -----------------------------------------------------------------------------------


def test_forgetting_points_are_the_seed_means_with_their_interval(tmp_path: Path) -> None:
    records = synthetic_records()
    frame = leaderboard_frame(cell_frame(records))
    caption = caption_for(frame)
    figure = draw_forgetting(frame, "split_digits")
    rows = frame[frame["task"] == "split_digits"]
    drawn = sorted(
        (round(float(container.lines[0].get_xdata()[0]), 9)) for container in figure.axes[0].containers
    )
    assert drawn == sorted(round(value, 9) for value in rows["forgetting_mean"])
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    assert labels[:2] == ["none", "joint"] and set(labels) == set(rows["method"])
    assert figure._suptitle is None  # provenance goes into the caption file, not the figure
    paths = forgetting_figure(frame, "split_digits", tmp_path, caption)
    assert [path.name for path in paths][-1] == "forgetting_split_digits.caption.txt"
    assert caption in " ".join(paths[-1].read_text().split())


# --- budget split ----------------------------------------------------------------------------------


def test_budget_split_is_skipped_with_one_token_fraction(tmp_path: Path) -> None:
    stale = tmp_path / "budget_split_split_shapes.png"
    stale.write_bytes(b"old")
    board = leaderboard_frame(cell_frame(synthetic_records()))
    assert draw_budget_split(board, "split_shapes") is None
    assert budget_split_figure(board, "split_shapes", tmp_path, "caption") == []
    assert not stale.exists()


def test_budget_split_points_add_the_coreset_at_t_1() -> None:
    frame = leaderboard_frame(cell_frame(swept_records()))
    points = budget_split_points(frame, "split_shapes", "random+random")
    assert len(points) == len(RETENTIONS) * (len(SWEPT_FRACTIONS) + 1)
    coreset = points[points["source"] == "coreset"]
    assert list(coreset["token_fraction"]) == [1.0] * len(RETENTIONS)
    random_rows = frame[(frame["task"] == "split_shapes") & (frame["method"] == "random")]
    assert sorted(coreset["final_accuracy_mean"]) == sorted(random_rows["final_accuracy_mean"])


def test_budget_split_draws_a_line_per_retention_at_the_seed_means(tmp_path: Path) -> None:
    board = leaderboard_frame(cell_frame(swept_records()))
    caption = caption_for(board)
    figure = draw_budget_split(board, "split_shapes")
    assert figure is not None
    axes = figure.axes[0]
    assert axes.get_title() == "random+random"
    lines = {
        container.get_label(): container.lines[0]
        for container in axes.containers
        if container.get_label().startswith("retention")
    }
    assert sorted(lines) == sorted(f"retention {r * 100:g}%" for r in RETENTIONS)
    for retention in RETENTIONS:
        line = lines[f"retention {retention * 100:g}%"]
        assert list(line.get_xdata()) == [*SWEPT_FRACTIONS, 1.0]
        expected = [np.mean([split_accuracy(retention, t, s) for s in SEEDS]) for t in SWEPT_FRACTIONS]
        assert np.allclose(line.get_ydata()[:-1], expected)
    assert draw_budget_split(board, "split_digits") is None  # nothing swept there
    paths = budget_split_figure(board, "split_shapes", tmp_path, caption)
    stem = "budget_split_split_shapes"
    assert [path.name for path in paths] == [f"{stem}.pdf", f"{stem}.png", f"{stem}.caption.txt"]
    assert caption in " ".join(paths[-1].read_text().split())


# --- the HTML page ---------------------------------------------------------------------------------


def test_site_rows_carry_sort_values_and_methods_their_descriptions(tmp_path: Path) -> None:
    cells = cell_frame(synthetic_records())
    frame = leaderboard_frame(cells)
    page = render_site(frame, cells, caption_for(frame), [], tmp_path)
    rows = re.findall(r"<tr class=\"[^\"]+\">(.*?)</tr>", page)
    assert len(rows) == len(frame)
    first = re.findall(r'data-sort="([^"]*)"', rows[0])
    assert first[1] == frame["method"].iloc[0]
    assert float(first[6]) == pytest.approx(frame["final_accuracy_mean"].iloc[0])
    assert "Uniform random coreset" in page  # registry.describe of sample selector "random"
    assert "Uniform random token scores" in page  # ... and of token selector "random"
    assert caption_for(frame) in page and "http" not in page.split("<script>")[1]


# --- headless Chromium on the committed results ------------------------------------------------------


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI installs it in .ci/run)")
    pytest.skip("chromium is not installed: apt-get install -y chromium")


def dump_dom(browser: str, page: Path, query: str, profile: Path) -> str:
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri() + query,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dom_rows(dom: str) -> list[list[str]]:
    """The data-sort values of each body row of the leaderboard, in DOM order."""
    body = dom[dom.index("<tbody>") : dom.index("</tbody>")]
    return [re.findall(r'data-sort="([^"]*)"', row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def committed_methods() -> set[str]:
    records = [json.loads(path.read_text()) for path in DEFAULT_CELLS.glob("*.json")]
    return {record["config"]["method"] for record in records if record["status"] == FINISHED}


@pytest.fixture(scope="module")
def default_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("site")
    return make_report(DEFAULT_CELLS.parent, out_dir, gallery=False)["site"][0]


def test_chromium_lists_every_method_of_the_committed_results(default_site: Path, tmp_path: Path) -> None:
    browser = chromium_or_skip()
    dom = dump_dom(browser, default_site, "", tmp_path / "profile")
    rows = dom_rows(dom)
    assert {row[1] for row in rows} == committed_methods()
    assert len(rows) == len(leaderboard_frame(cell_frame(load_results(DEFAULT_CELLS.parent))))
    for source in re.findall(r'<img src="([^"]+)"', dom):
        assert (default_site.parent / source).is_file(), source
    assert "<img" in dom


def test_chromium_click_sort_and_filter(default_site: Path, tmp_path: Path) -> None:
    browser = chromium_or_skip()
    profile = tmp_path / "profile"
    descending = dump_dom(browser, default_site, "?sort=final_accuracy&order=desc", profile)
    finals = [float(row[6]) for row in dom_rows(descending)]
    assert finals == sorted(finals, reverse=True) and len(set(finals)) > 1
    assert re.search(r'<th data-key="final_accuracy"[^>]*aria-sort="descending"', descending)
    ascending = dump_dom(browser, default_site, "?sort=method", profile)
    methods = [row[1] for row in dom_rows(ascending)]
    assert methods == sorted(methods) and methods != [row[1] for row in dom_rows(descending)]
    filtered = dump_dom(browser, default_site, "?filter=split-digits", profile)
    body = filtered[filtered.index("<tbody>") :]
    shown = re.findall(r'<tr class="(?![^"]*hidden)[^"]*">\s*<td class="text" data-sort="([^"]*)"', body)
    assert set(shown) == {"split-digits"}
    assert not math.isnan(finals[0])
