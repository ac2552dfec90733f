"""reports/latex.py: the LaTeX tables compile in a two-column paper without an overfull box (where a TeX
engine is installed; CI installs one in .ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.results import load_results
from reports.latex import REQUIRED_PACKAGES, coreset_size_latex, leaderboard_latex, regime_latex
from reports.leaderboard import caption_for, leaderboard_frame
from reports.records import cell_frame
from reports.regime_table import AXIS_SHORT_NAMES, axis_value_text, markdown_axes, regime_table
from tests.conftest import REPO_ROOT
from tests.test_regimes_report import regime_records
from tests.test_reports import synthetic_records

# A two-column paper: 6.75 in of text in two 3.25 in columns (ICML's geometry).
DOCUMENT = r"""\documentclass[twocolumn,10pt]{article}
\setlength{\textwidth}{6.75in}
\setlength{\columnsep}{0.25in}
\setlength{\textheight}{9in}
\usepackage{%s}
\begin{document}
\input{table}
\end{document}
"""


def pdflatex_or_skip() -> str:
    found = shutil.which("pdflatex")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("pdflatex is not installed (CI installs texlive in .ci/run)")
    pytest.skip("no TeX engine: apt-get install texlive-latex-base texlive-latex-recommended")


def compile_log(table: str, folder: Path) -> str:
    """The log of compiling ``table`` in the two-column document; the run must succeed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.tex").write_text(table)
    (folder / "paper.tex").write_text(DOCUMENT % ",".join(REQUIRED_PACKAGES))
    result = subprocess.run(
        [pdflatex_or_skip(), "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (folder / "paper.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    return log


def committed(grid: str):
    cells = cell_frame(load_results(REPO_ROOT / "results" / grid))
    return cells, leaderboard_frame(cells)


def tables() -> dict[str, str]:
    synthetic = leaderboard_frame(cell_frame(synthetic_records()))
    regime_cells = cell_frame(regime_records())
    regime = regime_table(regime_cells)
    found = {
        "synthetic-leaderboard": leaderboard_latex(synthetic, caption_for(synthetic)),
        "synthetic-regimes": regime_latex(
            regime, markdown_axes(regime), AXIS_SHORT_NAMES, axis_value_text, "Grid regimes.", 0.02
        ),
    }
    for grid in ("default", "regimes"):
        cells, board = committed(grid)
        found[f"{grid}-leaderboard"] = leaderboard_latex(board, caption_for(board))
        found[f"{grid}-coreset-size"] = coreset_size_latex(board, caption_for(board))
    cells, _ = committed("regimes")
    table = regime_table(cells)
    found["regimes-regimes"] = regime_latex(
        table, markdown_axes(table), AXIS_SHORT_NAMES, axis_value_text, "Grid regimes.", 0.02
    )
    return {name: text for name, text in found.items() if text is not None}


@pytest.fixture(scope="module")
def all_tables() -> dict[str, str]:
    return tables()


@pytest.mark.parametrize(
    "name",
    [
        "synthetic-leaderboard",
        "synthetic-regimes",
        "default-leaderboard",
        "default-coreset-size",
        "regimes-leaderboard",
        "regimes-coreset-size",
        "regimes-regimes",
    ],
)
def test_table_compiles_within_the_text_width(name: str, all_tables: dict[str, str], tmp_path: Path) -> None:
    log = compile_log(all_tables[name], tmp_path / name)
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    assert "LaTeX Error" not in log
