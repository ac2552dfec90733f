"""Issue 18's protocol 2: exact budgets, seeded class ties, coverage, a validation slice, [tune] chosen on
validation with test data sealed until the end, symmetric input dropout, ``zero`` replay, shortcut
diagnostics, and stream seeds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import benchmark.cell
from benchmark.cell import VALIDATION_STREAM, run_cell
from benchmark.cell_data import SealedDataRead, SealedTests, to_tensors
from benchmark.config import CellConfig, TrainConfig
from benchmark.contracts import BackboneSpec, TokenBatch, full_positions
from benchmark.diagnostics import diagnostic_fraction, shortcut_row
from benchmark.errors import UserError
from benchmark.grid import load_grid
from benchmark.learner import TaskCache, build_learner, create_entries, fused_optimizer_for, input_dropout_for
from benchmark.memory import ByteCosts, MemoryBuffer, retention_budget_bytes
from benchmark.model import TokenViT, fill_masked
from benchmark.pretrain import WEIGHTS_DIR
from benchmark.selection import sample_budget
from benchmark.task_memory import budget_bytes_for, store_task_memory
from benchmark.train import channel_dropout
from methods.base import per_class_budgets
from tasks.base import class_order

TINY = {"train_per_class": 30, "test_per_class": 10}
CACHE = TaskCache()
GRIDS = Path(__file__).resolve().parent.parent / "grids"
RESULTS = Path(__file__).resolve().parent.parent / "results"


def cell(method: str, retention: float | None = 0.1, fraction: float = 1.0, **fields: object) -> CellConfig:
    sample, _, token = method.partition("+")
    train = fields.pop("train", TrainConfig(epochs=1))
    return CellConfig(
        grid="t",
        task="split-shapes",
        task_params=dict(TINY),
        method=method,
        sample_selector=sample,
        token_selector=token or None,
        selector_params={},
        token_selector_params={},
        retention=retention,
        token_fraction=fraction,
        seed=0,
        train=train,  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------------- exact budgets


@settings(max_examples=200, deadline=None)
@given(
    samples=st.integers(1, 5000),
    retention=st.integers(1, 1000).map(lambda per_mille: per_mille / 1000),
    tokens=st.sampled_from([4, 16, 64, 196]),
    patch_bytes=st.integers(1, 768),
    text_tokens=st.integers(0, 12),
    label_tokens=st.integers(1, 20),
)
def test_a_coreset_keeps_floor_r_n_whole_samples_within_the_bytes(
    samples: int, retention: float, tokens: int, patch_bytes: int, text_tokens: int, label_tokens: int
) -> None:
    costs = ByteCosts.for_samples(tokens, patch_bytes, text_tokens, label_tokens)
    whole = costs.of(tokens)
    budget = retention_budget_bytes(retention, samples * whole)
    kept = sample_budget(budget, 1.0, tokens, patch_bytes, text_tokens, label_tokens)
    per_mille = round(retention * 1000)
    assert kept == samples * per_mille // 1000  # ⌊r·n⌋, computed in integers
    assert kept * whole <= budget


def test_the_protocol_2_base_counts_the_label_and_protocol_1_does_not() -> None:
    stream = CACHE.get("split-shapes", TINY)
    task, _ = to_tensors(stream.experiences[0], stream.backbone.patch_size)
    assert task.stored_bytes == task.train_bytes + 2 * len(task)  # a uint16 label per sample
    p1 = cell("herding", retention=0.1, protocol=1)
    p2 = cell("herding", retention=0.1)
    whole = task.byte_costs.of(16)
    assert budget_bytes_for(p2, task) // whole == len(task) // 10  # exactly ⌊r·n⌋ samples
    assert budget_bytes_for(p1, task) // whole == len(task) // 10 - 1  # one short: the old base


def test_class_ties_follow_the_tie_order_and_without_one_the_lower_label() -> None:
    labels = np.repeat([3, 5, 7], 10)
    assert per_class_budgets(labels, 4) == {3: 2, 5: 1, 7: 1}
    assert per_class_budgets(labels, 4, np.array([7, 3, 5])) == {3: 1, 5: 1, 7: 2}
    assert per_class_budgets(labels, 5, np.array([7, 5, 3])) == {3: 1, 5: 2, 7: 2}
    with pytest.raises(ValueError, match="every class"):
        per_class_budgets(labels, 4, np.array([7, 3]))


def stored_classes(config: CellConfig) -> list[int]:
    """The classes of task 1's memory as ``config`` stores it (no training: seconds)."""
    entries = create_entries(config, CACHE)
    learner = build_learner(config, entries, WEIGHTS_DIR)
    rng = None if config.protocol == 1 else np.random.default_rng([config.seed, VALIDATION_STREAM])
    task, _ = to_tensors(entries.stream.experiences[0], 8, (), rng)
    memory = MemoryBuffer(entries.stream.tokens)
    stored = store_task_memory(learner, entries, memory, task, 0, config)
    assert stored.classes == 2 and stored.classes_covered == len(set(memory.entries[0].labels.tolist()))
    return sorted(memory.entries[0].labels.tolist())


def test_the_odd_sample_of_a_class_split_goes_to_a_seeded_class_not_the_lower_label() -> None:
    # 0.02 of 54 training samples (two classes of 27): one sample, so one class is left out.
    seeded = {tuple(stored_classes(replace(cell("herding", retention=0.02), seed=seed))) for seed in range(8)}
    assert seeded == {(0,), (1,)}
    by_label = {
        tuple(stored_classes(replace(cell("herding", retention=0.02, protocol=1), seed=s))) for s in range(3)
    }
    assert by_label == {(0,)}  # protocol 1: always the lower label (and one sample: 0.02 · 60 bytes-wise)


# ------------------------------------------------------------------------------------ [tune] and test


def test_reading_sealed_test_data_before_opening_raises() -> None:
    sealed = SealedTests([])
    with pytest.raises(SealedDataRead):
        _ = sealed.splits
    assert sealed.open() == [] and sealed.splits == []


def test_a_tuned_cell_reads_test_data_only_after_choosing_and_reports_the_chosen_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    train_stream, open_tests = benchmark.cell.train_stream, SealedTests.open

    def spy_train(*args: object, **kwargs: object) -> object:
        events.append("train")
        return train_stream(*args, **kwargs)  # type: ignore[arg-type]

    def spy_open(self: SealedTests) -> object:
        events.append("open")
        return open_tests(self)

    monkeypatch.setattr(benchmark.cell, "train_stream", spy_train)
    monkeypatch.setattr(SealedTests, "open", spy_open)
    tuned = cell("random", retention=0.1, tune={"input_dropout": [0.0, 0.5]})
    record = run_cell(tuned, "test", CACHE).to_dict()
    assert record["status"] == "finished", record.get("error")
    assert events == ["train", "train", "open"]
    tuning = record["tuning"]
    scores = [c["validation_final_accuracy"] for c in tuning["candidates"]]
    assert [c["train"]["input_dropout"] for c in tuning["candidates"]] == [0.0, 0.5]
    assert tuning["chosen"] == int(np.argmax(scores))
    assert record["validation_final_accuracy"] == scores[tuning["chosen"]]
    # The reported test numbers are the chosen candidate's, as if it had run alone.
    value = [0.0, 0.5][tuning["chosen"]]
    alone = run_cell(
        cell("random", retention=0.1, train=TrainConfig(epochs=1, input_dropout=value)), "t", CACHE
    )
    assert record["accuracy_matrix"] == alone.accuracy_matrix
    assert alone.validation_matrix == tuning["candidates"][tuning["chosen"]]["validation_matrix"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[tune]\nbatch = [1]\n", "unknown tunable setting 'batch'"),
        ("[tune]\ninput_dropout = []\n", "'tune.input_dropout' is empty"),
        ("[tune]\ninput_dropout = [0.0, 1.5]\n", "input_dropout must be in"),
        ("[tune]\nlr = 0.1\n", "must be a list"),
        ("protocol = 1\n[tune]\nlr = [0.1]\n", "needs protocol 2"),
        ("protocol = 3\n", "'protocol' must be one of 1, 2"),
        ("stream_seeds = 1\n", "'stream_seeds' must be true or false"),
        ('[train]\nreplay = "fill"\n', "replay must be one of drop, mask, zero"),
    ],
)
def test_bad_protocol_settings_are_one_line_errors(tmp_path: Path, table: str, message: str) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'tasks = ["split-shapes"]\nmethods = ["random"]\nretention = [0.1]\nseeds = [0]\n' + table
    )
    with pytest.raises(UserError, match=message) as caught:
        load_grid(grid)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------- input dropout


def test_protocol_2_uses_the_fused_optimizer_and_protocol_1_the_loop() -> None:
    assert fused_optimizer_for(cell("random")) is True
    assert fused_optimizer_for(cell("random", protocol=1)) is False
    assert fused_optimizer_for(cell("random", train=TrainConfig(fused_optimizer=False))) is False


def test_input_dropout_defaults_to_one_value_for_every_method_under_protocol_2() -> None:
    assert (
        input_dropout_for(cell("herding")) == input_dropout_for(cell("herding+rollout", fraction=0.25)) == 0.0
    )
    assert input_dropout_for(cell("herding", protocol=1)) == 0.0
    assert input_dropout_for(cell("herding+rollout", fraction=0.25, protocol=1)) == 0.5


# -------------------------------------------------------------------------------------- zero replay


def small_model() -> TokenViT:
    torch.manual_seed(0)
    return TokenViT(BackboneSpec(16, 3, 8, "shapes-15", embed_dim=8, depth=1, num_heads=2), 4).eval()


def test_zero_replay_feeds_a_dropped_position_as_a_zero_patch_of_the_normalised_image() -> None:
    model = small_model()
    patches = torch.randint(0, 256, (2, 4, 192), dtype=torch.uint8)
    kept = TokenBatch(patches[:, [0, 2]], torch.tensor([[0, 2], [0, 2]]))
    fed = model.embed(fill_masked(kept, 4))
    proj, pos = model.vit.patch_embed.proj, model.vit.pos_embed[0]
    torch.testing.assert_close(fed[:, 2], (proj.bias + pos[2]).expand(2, -1))  # position 1: dropped
    whole = model.embed(TokenBatch(patches, full_positions(2, 4)))
    torch.testing.assert_close(fed[:, 1], whole[:, 1])  # position 0: kept as it is


def test_channel_dropout_zeroes_tokens_and_rescales_the_rest() -> None:
    batch = TokenBatch(torch.zeros(400, 16, 3, dtype=torch.uint8), full_positions(400, 16))
    scaled = channel_dropout(batch, 0.75, torch.Generator().manual_seed(0))
    assert scaled.scale is not None and len(scaled.positions[0]) == 16  # every position stays
    assert set(scaled.scale.unique().tolist()) == {0.0, 4.0}
    assert abs(float((scaled.scale == 0).float().mean()) - 0.75) < 0.02
    model = small_model()
    patches = torch.randint(0, 256, (1, 4, 192), dtype=torch.uint8)
    plain = model.embed(TokenBatch(patches, full_positions(1, 4)))
    half = model.embed(TokenBatch(patches, full_positions(1, 4), scale=torch.tensor([[0.0, 2.0, 2.0, 0.0]])))
    pos = model.vit.pos_embed[0]
    torch.testing.assert_close(half[0, 1], pos[1])  # a dropped token keeps only its position
    torch.testing.assert_close(half[0, 2] - pos[2], 2 * (plain[0, 2] - pos[2]))


def test_zero_replay_stores_the_same_bytes_as_drop() -> None:
    drop = run_cell(cell("random+rollout", fraction=0.25), "t", CACHE).to_dict()
    zero = run_cell(
        cell("random+rollout", fraction=0.25, train=TrainConfig(epochs=1, replay="zero")), "t", CACHE
    )
    assert drop["status"] == zero.status == "finished"
    assert zero.bytes_used_per_task == drop["bytes_used_per_task"]
    assert zero.samples_per_task == drop["samples_per_task"]
    assert zero.tokens_per_task == drop["tokens_per_task"]
    assert zero.accuracy_matrix != drop["accuracy_matrix"]  # ...while the model is fed otherwise


# ---------------------------------------------------------------------------------------- shortcut


def test_shortcut_row_by_hand() -> None:
    whole_batch = TokenBatch(torch.zeros(4, 4, 3, dtype=torch.uint8), full_positions(4, 4))
    tests = [(whole_batch, torch.tensor([0, 0, 1, 1])), (whole_batch, torch.tensor([2, 2, 3, 3]))]

    def predict(batch: TokenBatch) -> torch.Tensor:
        # Whole inputs → class 2 (the newest task's); partial ones → class 0 (an old one).
        return torch.full((len(batch),), 2 if batch.positions.shape[1] == 4 else 0)

    orders = [torch.arange(4).expand(4, 4)] * 2
    row = shortcut_row(predict, tests, [(0, 1), (2, 3)], 1, orders, 0.25, "drop")
    assert row == {
        "old_whole": 0.0,
        "new_whole": 0.5,
        "newest_share_whole": 1.0,
        "old_partial": 0.5,
        "new_partial": 0.0,
        "newest_share_partial": 0.0,
    }
    first = shortcut_row(predict, tests, [(0, 1), (2, 3)], 0, orders, 0.25, "drop")
    assert first["old_whole"] is None and first["newest_share_whole"] is None
    assert diagnostic_fraction(0.125) == 0.125 and diagnostic_fraction(1.0) == 0.25


def test_a_protocol_2_record_holds_validation_coverage_shortcut_and_class_order() -> None:
    record = run_cell(cell("random+rollout", fraction=0.25), "t", CACHE).to_dict()
    assert record["status"] == "finished", record.get("error")
    assert len(record["validation_matrix"]) == 5 and len(record["shortcut"]) == 5
    assert record["validation_final_accuracy"] == pytest.approx(np.mean(record["validation_matrix"][-1]))
    assert record["class_order"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert record["shortcut"][2]["new_whole"] == pytest.approx(record["accuracy_matrix"][2][2])
    old = np.mean(record["accuracy_matrix"][3][:3])
    assert record["shortcut"][3]["old_whole"] == pytest.approx(old)
    assert len(record["classes_covered_per_task"]) == 4


# ------------------------------------------------------------------------------------- stream seeds


def test_stream_seeds_draw_each_cells_data_and_class_order(tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'tasks = ["split-shapes"]\nmethods = ["none"]\nretention = [0.1]\nseeds = [0, 1]\n'
        "[task_params.split-shapes]\ntrain_per_class = 30\ntest_per_class = 10\n"
    )
    cells = load_grid(grid).cells
    assert [c.task_params["data_seed"] for c in cells] == [0, 1]
    assert [c.task_params["class_order_seed"] for c in cells] == [0, 1]
    orders = [run_cell(c, "t", CACHE).class_order for c in cells]
    assert orders[0] != orders[1]
    assert all(sorted(c for task in o for c in task) == list(range(10)) for o in orders)
    assert orders[0] == [class_order(10, 0)[i : i + 2] for i in range(0, 10, 2)]
    fixed = grid.read_text().replace("seeds = [0, 1]", "seeds = [0, 1]\nstream_seeds = false")
    grid.write_text(fixed)
    assert {c.task_params["class_order_seed"] for c in load_grid(grid).cells} == {None}
    grid.write_text(fixed.replace("stream_seeds = false", "") + "data_seed = 3\n")
    with pytest.raises(UserError, match="drawn from each cell's seed"):
        load_grid(grid)


# grid → (its protocol-1 records, the overrides that make the grid file name exactly them)
PROTOCOL_1_RECORDS = {
    "default": ("default_protocol1", ["protocol=1", "stream_seeds=false", "seeds=[0, 1, 2]"]),
    "regimes_protocol1": ("regimes_protocol1", []),
    "vqa": ("vqa", []),
    "captions": ("captions", []),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_1_RECORDS))
def test_the_committed_protocol_1_cells_keep_their_names(name: str) -> None:
    folder, overrides = PROTOCOL_1_RECORDS[name]
    cells = {c.config_hash for c in load_grid(GRIDS / f"{name}.toml", overrides).cells}
    committed = {p.stem for p in (RESULTS / folder / "cells").glob("*.json")}
    assert committed and cells == committed


@pytest.mark.parametrize(
    "name", ["default", "fair", "regimes", "regimes_share", "regimes_tokens", "text", "text_tuned"]
)
def test_the_committed_protocol_2_records_are_the_grid_files_cells(name: str) -> None:
    cells = {c.config_hash for c in load_grid(GRIDS / f"{name}.toml").cells}
    committed = {p.stem for p in (RESULTS / name / "cells").glob("*.json")}
    assert committed and cells == committed


def test_a_record_without_later_fields_reads_back_with_their_older_values() -> None:
    old = cell("random").to_dict()
    for name in ("protocol", "tune"):
        del old[name]
    del old["train"]["replay"]
    config = CellConfig.from_dict(old)
    assert config.protocol == 1 and config.tune == {} and config.train.replay == "drop"
    assert config.config_hash != cell("random").config_hash  # protocol 1 is another cell


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    fraction=st.sampled_from([0.0, 0.1, 0.25]),
    seed=st.integers(0, 2**16),
)
def test_a_stratified_split_holds_out_at_least_one_of_each_class_that_can_spare_one(
    sizes: list[int], fraction: float, seed: int
) -> None:
    from benchmark.splits import stratified_split

    labels = np.repeat(np.arange(len(sizes)), sizes)
    kept, held = stratified_split(labels, fraction, np.random.default_rng(seed), min_held_out=1)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    for label, size in enumerate(sizes):
        n_held = int(np.sum(labels[held] == label))
        assert n_held == (max(1, round(size * fraction)) if size > 1 else 0)
        assert np.sum(labels[kept] == label) >= 1


def test_a_task_of_single_sample_classes_has_no_validation_slice_and_says_so() -> None:
    from benchmark.contracts import Experience

    images = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1])
    experience = Experience((0, 1), images, labels, images, labels)
    with pytest.raises(ValueError, match="no validation slice"):
        to_tensors(experience, 4, (), np.random.default_rng(0))
