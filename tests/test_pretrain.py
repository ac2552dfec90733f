"""The committed backbones match their recipes; pretraining writes a file that loads back safely."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmark import registry
from benchmark.contracts import BackboneSpec
from benchmark.errors import UserError
from benchmark.pretrain import default_recipe, load_backbone_weights, pretrain, weights_path


@pytest.mark.parametrize("task", ["split-shapes", "split-digits", "seq-vqa"])
def test_committed_weights_match_the_tasks_recipes(task: str) -> None:
    recipe = default_recipe(registry.create("task", task).build().backbone)
    path = weights_path(recipe)
    assert path.exists(), f"run `nox -s pretrain`: {path.name} is missing"
    assert path.stat().st_size < 2 * 1024 * 1024
    state = load_backbone_weights(recipe)
    assert not any(key.startswith("head.") for key in state)
    assert state["pos_embed"].shape == (1, recipe.backbone.tokens + 1, recipe.backbone.embed_dim)


def test_pretraining_writes_loadable_weights_named_by_the_recipe(tmp_path: Path) -> None:
    spec = BackboneSpec(8, 1, 2, "glyphs-20", embed_dim=16, depth=1, num_heads=2)
    recipe = replace(default_recipe(spec), per_class=4, epochs=1)
    path = pretrain(recipe, tmp_path, show_progress=False)
    assert path.name == f"glyphs-20-{recipe.recipe_hash}.pt"
    state = load_backbone_weights(recipe, tmp_path)
    assert state["patch_embed.proj.weight"].shape == (16, 1, 2, 2)
    # Same recipe, same weights (pretraining is seeded).
    again = pretrain(recipe, tmp_path / "again", show_progress=False)
    torch.testing.assert_close(torch.load(again, weights_only=True)["state"]["pos_embed"], state["pos_embed"])
    # A file made by another recipe is refused, as is a missing one.
    other = replace(recipe, epochs=2)
    path.rename(weights_path(other, tmp_path))
    with pytest.raises(UserError, match="made by another recipe"):
        load_backbone_weights(other, tmp_path)
    with pytest.raises(UserError, match="nox -s pretrain"):
        load_backbone_weights(recipe, tmp_path)
