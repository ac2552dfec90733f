"""reports/style.py and the figures: 20 methods in one figure get 20 colours and 20 markers, and no legend
entry is clipped (each legend text lies inside the figure)."""

from __future__ import annotations

from typing import Any

import matplotlib
import pytest
from matplotlib.figure import Figure

from reports.figures import draw_coreset_size, draw_forgetting, draw_memory_accuracy
from reports.leaderboard import leaderboard_frame
from reports.records import cell_frame
from reports.style import MARKERS, PAPER_STYLE, series_styles
from tests.test_regimes_report import record

SAMPLE_SELECTORS = ("random", "herding", "kcenter", "craig", "gradmatch", "ocs", "reservoir")
TOKEN_SELECTORS = ("gradlrp", "rollout", "atman")
RETENTIONS = (0.01, 0.05, 0.2)


def twenty_methods() -> list[str]:
    """7 coresets and 13 core tokensets, some with long names."""
    tokensets = [f"{sample}+{token}" for sample in SAMPLE_SELECTORS for token in TOKEN_SELECTORS][:13]
    return [*SAMPLE_SELECTORS, *tokensets]


def records() -> list[dict[str, Any]]:
    found = []
    for index, method in enumerate(twenty_methods()):
        fraction = 0.25 if "+" in method else 1.0
        for retention in RETENTIONS:
            for seed in range(2):
                accuracy = 0.4 + 0.01 * index + retention + 0.01 * seed
                found.append(record(method, retention, seed, accuracy, token_fraction=fraction))
    found += [
        record(bound, None, seed, value)
        for bound, value in (("none", 0.2), ("joint", 0.95))
        for seed in range(2)
    ]
    return found


def assert_legend_inside(figure: Figure) -> None:
    figure.draw_without_rendering()
    box = figure.bbox
    texts = [text for legend in figure.legends for text in legend.get_texts()]
    assert texts, "the figure has no legend"
    for text in texts:
        extent = text.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 + 0.5, text.get_text()
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1 + 0.5, text.get_text()


@pytest.fixture(scope="module")
def board():
    return leaderboard_frame(cell_frame(records()))


def test_twenty_series_never_share_a_colour_or_a_marker() -> None:
    styles = series_styles(twenty_methods())
    assert len({style.color for style in styles.values()}) == 20
    assert len({style.marker for style in styles.values()}) == 20 <= len(MARKERS)


@pytest.mark.parametrize("draw", [draw_memory_accuracy, draw_forgetting, draw_coreset_size])
def test_no_legend_entry_is_clipped_with_twenty_methods(board, draw) -> None:
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw(board, "split-shapes")
        assert figure is not None
        assert_legend_inside(figure)
    if draw is draw_memory_accuracy:
        labels = {text.get_text().removesuffix(" (best)") for text in figure.legends[0].get_texts()}
        assert set(twenty_methods()) <= labels
