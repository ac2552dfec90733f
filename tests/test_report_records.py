"""reports/records.py: the one typed view of cell records (issue 17, item 4)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd
import pytest

from benchmark.config import AUTO
from benchmark.results import FAILED, FINISHED
from reports.leaderboard import leaderboard_frame
from reports.records import COLUMNS, cell_frame, fraction_order, fraction_text, is_auto
from tests.conftest import REPO_ROOT
from tests.test_regimes_report import record
from tests.test_reports import FAILED_CELL, SEEDS, failed_cell, finished_cell, synthetic_records

REPORTS = REPO_ROOT / "reports"
RECORD_ONLY_KEYS = frozenset({"config", "provenance"})  # keys of a record dict that no frame column has
# reports/reproduction.py (branch repro) compares a fresh record with its committed one, key by key, by
# hash: it reads records, not results, and is left to its owner.
READS_RECORDS = frozenset({"records.py", "reproduction.py"})


def test_declared_columns_and_dtypes() -> None:
    cells = cell_frame(synthetic_records())
    for column, dtype in COLUMNS.items():
        assert cells[column].dtype == pd.Series([], dtype=dtype).dtype, column
    assert cells["retention"].isna().sum() == 2 * 2 * len(SEEDS)  # the bounds of two tasks
    assert set(cells["status"]) == {FINISHED, FAILED}
    assert (cells["config_hash"].value_counts() == 1).all()
    assert cells["token_selector"].map(lambda value: value is None or isinstance(value, str)).all()
    assert cells["accuracy_matrix"].map(lambda matrix: matrix.shape).iloc[0] == (3, 3)
    assert cells["train.epochs"].eq(3).all() and "train.replay" in cells  # a later option, filled in
    assert cells["attribution.precision"].notna().sum() == 3 * 3  # split_shapes random+random only


def test_row_order_does_not_depend_on_record_order() -> None:
    records = synthetic_records()
    forward = cell_frame(records)
    backward = cell_frame(list(reversed(records)))
    assert forward["config_hash"].tolist() == backward["config_hash"].tolist()


def test_a_finished_record_wins_over_a_failed_one_of_the_same_cell() -> None:
    finished = finished_cell(*FAILED_CELL)
    cells = cell_frame([failed_cell(*FAILED_CELL), finished])
    assert cells["status"].tolist() == [FINISHED]


def test_auto_has_one_representation_from_records_to_the_leaderboard() -> None:
    records = [record("random+gradlrp", 0.1, seed, 0.6, token_fraction=AUTO) for seed in SEEDS]
    records += [record("random+gradlrp", 0.1, seed, 0.6, token_fraction=0.25) for seed in SEEDS]
    cells = cell_frame(records)
    assert sorted(map(str, cells["token_fraction"])) == ["0.25"] * 3 + [AUTO] * 3
    board = leaderboard_frame(cells)
    assert [value for value in board["token_fraction"] if isinstance(value, str)] == [AUTO]
    assert board["method"].str.endswith("[t=auto]").sum() == 1
    assert is_auto(AUTO) and not is_auto(0.5) and fraction_text(AUTO) == AUTO and fraction_text(0.25) == "25%"
    assert sorted([AUTO, 0.5, 0.125], key=fraction_order) == [0.125, 0.5, AUTO]


def test_a_missing_diagonal_is_the_mean_of_the_matrix_diagonal() -> None:
    item = record("random", 0.1, 0, 0.6)
    cells = cell_frame([item])
    assert cells["diagonal_mean"].item() == pytest.approx((0.97 + item["final_average_accuracy"]) / 2)
    assert math.isnan(cell_frame([{**item, "accuracy_matrix": []}])["diagonal_mean"].item())


def _string_keys(tree: ast.AST) -> set[str]:
    """String constants used as a subscript or as the first argument of ``.get``."""
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
    return {key for key in keys if isinstance(key, str)}


@pytest.mark.parametrize("path", sorted(REPORTS.glob("*.py")), ids=lambda path: path.name)
def test_only_the_records_module_reads_records(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if path.name in READS_RECORDS:
        return
    assert not _string_keys(tree) & RECORD_ONLY_KEYS, "reads a record by key: use reports.records.cell_frame"
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "benchmark.results"
        for alias in node.names
    }
    allowed = {
        "write_text_atomic",
        "write_bytes_atomic",
        *(["load_results"] if path.name == "make.py" else []),
    }
    assert imported <= allowed
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert AUTO not in constants, "use benchmark.config.AUTO through reports.records"


def stream_record(method: str, retention: float, seed: int, accuracy: float, protocol: int = 2, **extra):
    """A protocol-2 record whose seed also drew the data and the class order (``stream_seeds``)."""
    item = record(method, retention, seed, accuracy, **extra)
    item["config"]["task_params"].update(data_seed=seed, class_order_seed=seed)
    item["config"]["protocol"] = protocol
    item["config"]["tune"] = {}
    item["config_hash"] = f"{item['config_hash']}-p{protocol}"
    return item


def test_stream_seeds_are_the_repetition_and_protocols_are_never_pooled() -> None:
    records = [stream_record("random", 0.1, seed, 0.6 + 0.01 * seed) for seed in range(4)]
    records += [
        stream_record("random+gradlrp", 0.1, seed, 0.62 + 0.01 * seed, token_fraction=0.25)
        for seed in range(4)
    ]
    records += [record("random", 0.1, seed, 0.5) for seed in range(3)]  # protocol 1, fixed stream
    cells = cell_frame(records)
    stream = cells[cells["protocol"] == 2]
    assert set(map(str, stream["setting_params"].map(lambda p: p["data_seed"]))) == {"seed"}
    assert stream["task_params"].map(lambda p: p["data_seed"]).tolist() == stream["seed"].tolist()
    assert stream.groupby("kind")["regime"].nunique().eq(1).all()  # one setting, four seeds
    board = leaderboard_frame(cells)
    random_rows = board[board["method"].str.startswith("random[")]
    assert sorted(random_rows["seeds"]) == [3, 4]  # protocol 1 and 2 are different rows
    assert all("protocol=" in label for label in random_rows["method"])
    tokenset = board[board["kind"] == "core tokenset"].iloc[0]
    assert tokenset["paired_seeds"] == 4 and tokenset["difference_mean"] == pytest.approx(0.02)


def test_parameters_added_later_at_their_older_value_are_the_same_setting() -> None:
    """A record written before split-shapes' ViT size and the coreset options existed, and one that
    states their defaults (the same cell, rerun by later code), are one leaderboard row."""
    old = [record("gradmatch", 0.02, seed, 0.7) for seed in (0, 1)]
    new = [record("gradmatch", 0.02, seed, 0.7) for seed in (2,)]
    for item in new:
        item["config"]["task_params"].update(embed_dim=64, depth=4, num_heads=4)
        item["config"]["selector_params"].update(partitions=1, batch_size=1)
    frame = cell_frame(old + new)
    assert frame["task_label"].nunique() == 1 and frame["selector_label"].nunique() == 1
    board = leaderboard_frame(frame)
    assert len(board) == 1 and board["seeds"].iat[0] == 3
    wider = record("gradmatch", 0.02, 2, 0.7)
    wider["config"]["task_params"]["embed_dim"] = 128  # not the older value: another setting
    assert cell_frame([*old, wider])["task_label"].nunique() == 2
