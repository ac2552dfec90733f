"""grids/paper.toml (ViT-S, 196-token procedural tasks) and grids/paper_cifar.toml (ViT-B/16 from a local
checkpoint, CIFAR-100 at 224 px) run, shrunk by overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from benchmark import registry
from benchmark.cell import TaskCache
from benchmark.checkpoints import fit_to_model, read_checkpoint
from benchmark.contracts import BackboneSpec
from benchmark.errors import UserError
from benchmark.grid import load_grid
from benchmark.model import TokenViT
from benchmark.pretrain import default_recipe, pretrain
from benchmark.runner import run_grid
from benchmark.track import MlflowTracker
from tasks.pretrain_sets import Scenes15, Shapes15, Text15
from tests.conftest import GRIDS, write_cifar_fixture

VIT_S = {"embed_dim": 384, "depth": 12, "num_heads": 6}


def tiny_checkpoint(path: Path, image_size: int) -> Path:
    """A timm ViT state dict of the shrunk shape, at another resolution, with a 1000-class head."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        vit = VisionTransformer(img_size=image_size, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    torch.save({"state_dict": vit.state_dict()}, path)
    return path


def test_paper_cifar_grid_states_the_seed_papers_protocol() -> None:
    grid = load_grid(GRIDS / "paper_cifar.toml")
    cell = next(c for c in grid.cells if c.method == "gradmatch+gradlrp")
    assert cell.task_params["patch_size"] == 16 and cell.task_params["image_size"] == 224
    assert cell.task_params["embed_dim"] == 768 and cell.task_params["depth"] == 12
    assert sorted({c.retention for c in grid.cells if c.retention}) == [0.01, 0.05, 0.1, 0.2, 0.5]
    assert sorted({c.seed for c in grid.cells}) == [0, 1, 2]


def test_checkpoint_loading_drops_the_head_and_resamples_positions(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "vit.pt", image_size=64)  # an 8×8 token grid
    spec = BackboneSpec(32, 3, 8, "shapes-15", embed_dim=32, depth=2, num_heads=2)  # a 4×4 grid
    model = TokenViT(spec, num_classes=7)
    state = fit_to_model(read_checkpoint(path), model.vit.pos_embed.shape)
    assert not any(k.startswith("head.") for k in state)
    model.load_backbone(state)
    assert model.vit.pos_embed.shape == (1, 17, 32)
    torch.testing.assert_close(model.vit.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_paper_cifar_grid_runs_shrunk(tmp_path: Path) -> None:
    write_cifar_fixture(tmp_path / "data", classes=20, per_class=4)
    weights = tiny_checkpoint(tmp_path / "vit.pt", image_size=64)
    shrink = [
        f"task_params.split-cifar100.root={tmp_path / 'data'}",
        "task_params.split-cifar100.classes_per_task=10",
        "task_params.split-cifar100.image_size=48",  # the resize path, as at 224
        "task_params.split-cifar100.patch_size=8",
        "task_params.split-cifar100.embed_dim=32",
        "task_params.split-cifar100.depth=2",
        "task_params.split-cifar100.num_heads=2",
        "task_params.split-cifar100.epochs=1",
        f"train.backbone_weights={weights}",
        "train.batch_size=8",
        "train.replay_batch_size=8",
        "retention=[0.5]",
        "seeds=[0]",
    ]
    grid = load_grid(GRIDS / "paper_cifar.toml", shrink)
    assert len({c.method for c in grid.cells}) == 9
    tracker = MlflowTracker(grid.name, f"sqlite:///{tmp_path / 'ml.db'}")
    summary = run_grid(grid, tmp_path / "results", tracker, show_progress=False)
    assert summary.failed == [], summary.failed
    assert summary.finished == len(grid.cells)


def test_paper_cifar_grid_without_paths_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CIFAR100_ROOT", raising=False)
    grid = load_grid(GRIDS / "paper_cifar.toml")
    tracker = MlflowTracker(grid.name, f"sqlite:///{tmp_path / 'ml.db'}")
    with pytest.raises(UserError, match="needs a local CIFAR-100"):
        run_grid(grid, tmp_path / "results", tracker, show_progress=False)


def test_a_checkpoint_of_another_shape_is_refused_before_any_cell(tmp_path: Path) -> None:
    write_cifar_fixture(tmp_path / "data", classes=20, per_class=2)
    weights = tiny_checkpoint(tmp_path / "vit.pt", image_size=64)  # patch 8, width 32
    grid = load_grid(
        GRIDS / "paper_cifar.toml",
        [
            f"task_params.split-cifar100.root={tmp_path / 'data'}",
            "task_params.split-cifar100.classes_per_task=10",
            "task_params.split-cifar100.image_size=32",
            "task_params.split-cifar100.embed_dim=32",
            "task_params.split-cifar100.depth=2",
            "task_params.split-cifar100.num_heads=2",
            f"train.backbone_weights={weights}",
            "retention=[0.5]",
        ],
    )
    tracker = MlflowTracker(grid.name, f"sqlite:///{tmp_path / 'ml.db'}")
    mismatch = r"do not fit the task's backbone: patch_embed\.proj\.weight is \[32, 3, 8, 8\]"
    with pytest.raises(UserError, match=mismatch):
        run_grid(grid, tmp_path / "results", tracker, show_progress=False)
    assert not (tmp_path / "results").exists()


def test_paper_grid_runs_196_token_tasks_with_a_vit_s() -> None:
    grid = load_grid(GRIDS / "paper.toml")
    assert {c.task for c in grid.cells} == {"split-shapes", "split-shapes-distractors", "split-text"}
    for task in ("split-shapes", "split-shapes-distractors", "split-text"):
        cell = next(c for c in grid.cells if c.task == task and c.method == "gradmatch+gradlrp")
        few = {**cell.task_params, "train_per_class": 1, "test_per_class": 1}  # the geometry, built fast
        spec = registry.create("task", task, **few).build().backbone
        assert spec.tokens == 196
        assert (spec.embed_dim, spec.depth, spec.num_heads) == tuple(VIT_S.values())
        assert cell.train.pretrained and not cell.train.backbone_weights  # the suite pretrains it
        assert cell.token_fraction == 0.1
    assert sorted({c.retention for c in grid.cells if c.retention}) == [0.01, 0.05, 0.1, 0.2, 0.5]


@pytest.mark.slow
def test_paper_grid_pretrains_and_runs_shrunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrunk to CPU size: each task's backbone pretrained for its geometry (tiny recipe), then every
    method of the grid runs on each task."""
    for entry in (Shapes15, Scenes15, Text15):
        monkeypatch.setattr(entry, "per_class", 4)
        monkeypatch.setattr(entry, "epochs", 1)
    tasks = ("split-shapes", "split-shapes-distractors", "split-text")
    small_vit = ["embed_dim=32", "depth=2", "num_heads=2", "epochs=1", "train_per_class=6"]
    shrink = [
        f"task_params.{task}.{setting}" for task in tasks for setting in [*small_vit, "test_per_class=2"]
    ]
    shrink += [
        "task_params.split-shapes.image_size=32",
        "task_params.split-shapes.patch_size=8",
        "task_params.split-shapes-distractors.image_size=32",
        "task_params.split-shapes-distractors.patch_size=8",
        "task_params.split-text.min_length=12",
        "task_params.split-text.max_length=16",
        "task_params.split-text.max_phrases=2",
        "train.batch_size=8",
        "train.replay_batch_size=8",
        "retention=[0.5]",
        "seeds=[0]",
    ]
    grid = load_grid(GRIDS / "paper.toml", shrink)
    weights = tmp_path / "weights"
    cache = TaskCache()
    specs = {cache.get(c.task, c.task_params).backbone for c in grid.cells}
    # one backbone each: shapes-15 (split-shapes), scenes-15 (the distractor scenes), text-15
    assert {spec.pretrain_set for spec in specs} == {"shapes-15", "scenes-15", "text-15"}
    for spec in specs:
        pretrain(default_recipe(spec), weights, show_progress=False)
    tracker = MlflowTracker(grid.name, f"sqlite:///{tmp_path / 'ml.db'}")
    summary = run_grid(grid, tmp_path / "results", tracker, show_progress=False, weights_dir=weights)
    assert summary.failed == [], summary.failed
    assert summary.finished == len(grid.cells) == 3 * 9
