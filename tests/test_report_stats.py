"""Paired statistics of the reports (issue 19): checked against hand-computed cases, Holm's family-wise
error on simulated tables, bootstrap rank intervals, and the coreset size a core tokenset matches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reports.comparisons import rank_intervals
from reports.coreset_size import ABOVE, BELOW, INSIDE, matching_bytes
from reports.leaderboard import leaderboard_frame
from reports.records import cell_frame
from reports.stats import (
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    WORSE,
    format_ratio,
    holm,
    paired_test,
    verdicts,
)
from tests.test_regimes_report import record

A = [0.80, 0.78, 0.83, 0.81, 0.79]
B = [0.79, 0.78, 0.82, 0.80, 0.80]  # differences 0.01, 0, 0.01, 0.01, -0.01: mean 0.004, sd √8e-5


def t4_cdf(t: float) -> float:
    """Student-t CDF with 4 degrees of freedom, in closed form."""
    x = t / math.sqrt(4 + t * t)
    return 0.5 + 0.75 * x * (1 - x * x / 3)


# --- hand-computed cases ------------------------------------------------------------------------------


def test_paired_t_and_tost_on_fixed_numbers() -> None:
    """Mean difference 0.004, standard error √(8e-5 / 5) = 0.004: t = 1 on 4 df; the TOST at ±0.02 takes the
    larger one-sided p of t = (0.004 + 0.02) / 0.004 = 6 and t = (0.004 − 0.02) / 0.004 = −4."""
    test = paired_test(A, B, margin=0.02)
    assert test.seeds == 5 and test.difference == pytest.approx(0.004)
    assert test.p_difference == pytest.approx(2 * (1 - t4_cdf(1.0)), rel=1e-9)  # 0.3739
    assert test.p_equivalence == pytest.approx(max(1 - t4_cdf(6.0), t4_cdf(-4.0)), rel=1e-9)  # 0.00807
    half = 2.7764451051977987 * 0.004  # t_{0.975, 4} × standard error
    assert (test.low, test.high) == pytest.approx((0.004 - half, 0.004 + half), rel=1e-9)


def test_holm_on_a_known_vector() -> None:
    """Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 → 0.02, 0.03, 0.06, 0.04 → monotone: 0.06."""
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])  # a comparison without a p-value is not in the family


def test_verdicts_use_the_four_words() -> None:
    equal = paired_test(A, A)  # identical per-seed values
    assert (equal.p_difference, equal.p_equivalence) == (1.0, 0.0)
    far = paired_test([a + 0.1 for a in A], A)  # a constant offset beyond the margin
    close = paired_test([a + 0.01 for a in A], A)  # a constant offset within it
    noisy = paired_test(A, B)  # Δ = 0.004, 95% CI within ±0.02: equivalent, though not different
    single = paired_test([0.9], [0.1])
    worse = paired_test([0.5, 0.52, 0.49, 0.51, 0.5], [0.7, 0.71, 0.69, 0.72, 0.7])
    words = [verdict for verdict, _, _ in verdicts([equal, far, close, noisy, single, worse])]
    assert words == [EQUIVALENT, BETTER, EQUIVALENT, EQUIVALENT, INCONCLUSIVE, WORSE]
    assert verdicts([paired_test(A, B, margin=0.005)])[0][0] == INCONCLUSIVE  # a margin the CI exceeds
    two = paired_test([0.7, 0.8], [0.5, 0.61])  # two seeds: a test on one degree of freedom
    assert two.seeds == 2 and 0 < two.p_difference < 1


def test_identical_methods_are_never_reported_different_and_holm_keeps_the_family_wise_error() -> None:
    """Tables of 10 comparisons of two methods drawn from one distribution (a shared seed effect plus
    noise), 5 seeds: the share of tables with any "better" or "worse" stays at or below 5% (the
    binomial's 3-σ slack for 400 tables)."""
    rng = np.random.default_rng(19)
    tables, comparisons, seeds = 400, 10, 5
    flagged = 0
    for _ in range(tables):
        tests = []
        for _ in range(comparisons):
            seed_effect = rng.normal(0.7, 0.05, seeds)
            tests.append(
                paired_test(
                    seed_effect + rng.normal(0, 0.02, seeds), seed_effect + rng.normal(0, 0.02, seeds)
                )
            )
        flagged += any(verdict in (BETTER, WORSE) for verdict, _, _ in verdicts(tests))
    assert flagged / tables <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / tables)


def test_the_leaderboard_calls_two_identical_coresets_equivalent() -> None:
    records = []
    for retention in (0.02, 0.05, 0.1):
        for seed in range(4):
            value = 0.6 + retention + 0.03 * math.sin(seed)
            records += [record(method, retention, seed, value) for method in ("random", "reservoir")]
    board = leaderboard_frame(cell_frame(records))
    reservoir = board[board["method"] == "reservoir"]
    assert (reservoir["reference"] == "random").all()
    assert set(reservoir["verdict"]) == {EQUIVALENT}
    assert board.loc[board["method"] == "random", "verdict"].isna().all()  # the reference itself


# --- ranks ----------------------------------------------------------------------------------------------


def test_rank_intervals_are_seeded_and_overlap_for_identical_methods() -> None:
    seed_values = {"a": [0.8, 0.7, 0.9, 0.75], "b": [0.8, 0.7, 0.9, 0.75], "c": [0.5, 0.45, 0.55, 0.52]}
    import pandas as pd

    rows = [
        pd.DataFrame({"seed": range(4), "final_average_accuracy": values}) for values in seed_values.values()
    ]
    groups, methods = [np.arange(3)], [np.array([0]), np.array([1]), np.array([2])]
    low, high, method_low, method_high = rank_intervals(rows, groups, methods)
    again = rank_intervals(rows, groups, methods)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])  # seeded: the same every time
    assert list(low) == [1.0, 1.0, 3.0] and list(high) == [1.0, 1.0, 3.0]  # a and b tie for first, c last
    assert np.array_equal(method_low, low) and np.array_equal(method_high, high)


def test_a_rank_interval_covers_the_rank_when_seeds_disagree() -> None:
    import pandas as pd

    rows = [
        pd.DataFrame({"seed": range(5), "final_average_accuracy": [0.9, 0.5, 0.9, 0.5, 0.9]}),
        pd.DataFrame({"seed": range(5), "final_average_accuracy": [0.6, 0.8, 0.6, 0.8, 0.6]}),
    ]
    low, high, _, _ = rank_intervals(rows, [np.arange(2)], [np.array([0]), np.array([1])])
    assert list(low) == [1.0, 1.0] and list(high) == [2.0, 2.0]


# --- the coreset size a core tokenset performs like -------------------------------------------------------


def test_matching_bytes_interpolates_in_log_bytes() -> None:
    bytes_, accuracy = [1e3, 1e4, 1e5], [0.5, 0.7, 0.8]
    assert matching_bytes(bytes_, accuracy, 0.6) == pytest.approx((10**3.5, INSIDE))
    assert matching_bytes(bytes_, accuracy, 0.75) == pytest.approx((10**4.5, INSIDE))
    assert matching_bytes(bytes_, accuracy, 0.4) == (pytest.approx(1e3), BELOW)
    assert matching_bytes(bytes_, accuracy, 0.9) == (pytest.approx(1e5), ABOVE)
    # not monotone: the first crossing walking up from the smallest memory
    assert matching_bytes(bytes_, [0.5, 0.8, 0.7], 0.75) == pytest.approx((10 ** (3 + 0.25 / 0.3), INSIDE))


def curve_accuracy(retention: float) -> float:
    """A coreset curve linear in log bytes: +0.1 per factor of 10."""
    return 0.7 + 0.1 * math.log10(retention / 0.01)


def test_a_tokenset_on_a_known_curve_matches_a_coreset_three_times_larger() -> None:
    records = []
    for seed in range(4):
        for retention in (0.01, 0.1, 1.0):
            records.append(record("gradmatch", retention, seed, curve_accuracy(retention)))
        records.append(record("gradmatch+gradlrp", 0.01, seed, curve_accuracy(0.03), token_fraction=0.25))
        records.append(record("gradmatch+rollout", 0.1, seed, curve_accuracy(0.005), token_fraction=0.25))
        records.append(record("random+rollout", 0.1, seed, 0.9, token_fraction=0.25))  # no random coreset
    board = leaderboard_frame(cell_frame(records)).set_index("method")
    gradlrp, rollout = board.loc["gradmatch+gradlrp"], board.loc["gradmatch+rollout"]
    assert gradlrp["coreset_size_ratio"] == pytest.approx(3.0, rel=1e-3)
    assert (gradlrp["coreset_size_low"], gradlrp["coreset_size_high"]) == pytest.approx((3.0, 3.0), rel=1e-3)
    assert gradlrp["coreset_size_position"] == INSIDE and gradlrp["coreset_size_reference"] == "gradmatch"
    # below the curve's smallest coreset (1%): k is only bounded, at most 0.01 / 0.1
    assert rollout["coreset_size_position"] == BELOW and rollout["coreset_size_ratio"] == pytest.approx(0.1)
    assert math.isnan(board.loc["random+rollout", "coreset_size_ratio"])
    assert math.isnan(board.loc["gradmatch"].iloc[0]["coreset_size_ratio"])  # coresets have none
    assert format_ratio(3.0, 2.5, 3.5, INSIDE, False, False) == "× 3.0 [2.5, 3.5]"
    assert format_ratio(0.1, 0.1, 0.2, BELOW, True, False) == "≤ × 0.10 [≤ 0.10, 0.20]"


# --- the equivalence margin a grid declares --------------------------------------------------------------

GRID = """
tasks = ["split-shapes"]
methods = ["random", "random+random"]
retention = [0.05]
seeds = [0]
"""


def test_equivalence_margin_is_a_report_setting_in_no_cell(tmp_path, monkeypatch) -> None:
    import pandas as pd

    from benchmark.errors import UserError
    from benchmark.grid import declared_equivalence_margin, load_grid
    from reports import make

    plain, declared = tmp_path / "plain.toml", tmp_path / "declared.toml"
    plain.write_text(GRID)
    declared.write_text(GRID + "equivalence_margin = 0.05\n")
    assert load_grid(declared).equivalence_margin == 0.05 and load_grid(plain).equivalence_margin == 0.02
    assert [cell.config_hash for cell in load_grid(declared).cells] == [
        cell.config_hash for cell in load_grid(plain).cells
    ]
    assert declared_equivalence_margin(declared) == 0.05
    bad = tmp_path / "bad.toml"
    bad.write_text(GRID + "equivalence_margin = 2\n")
    with pytest.raises(UserError, match="equivalence_margin"):
        load_grid(bad)
    variant = tmp_path / "variant.toml"
    variant.write_text(GRID + "[[variant]]\nequivalence_margin = 0.1\n")
    with pytest.raises(UserError, match="may not set"):
        load_grid(variant)
    monkeypatch.setattr(make, "GRIDS_DIR", tmp_path)
    assert make.declared_margin(pd.DataFrame({"grid": ["declared", "declared"]})) == 0.05
    assert make.declared_margin(pd.DataFrame({"grid": ["elsewhere"]})) == 0.02  # no file: the default
    with pytest.raises(UserError, match="different equivalence margins"):
        make.declared_margin(pd.DataFrame({"grid": ["declared", "plain"]}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 1.0), st.just(math.nan)), min_size=1, max_size=12))
def test_holm_equals_statsmodels_on_any_family(p_values: list[float]) -> None:
    from statsmodels.stats.multitest import multipletests

    adjusted = holm(p_values)
    values = np.asarray(p_values)
    present = ~np.isnan(values)
    assert np.isnan(adjusted[~present]).all()
    if present.any():
        expected = multipletests(values[present], method="holm")[1]
        assert adjusted[present] == pytest.approx(expected, abs=1e-12)
