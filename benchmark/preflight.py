"""Refuse an impossible grid before any cell runs: data, weights, masks, budgets, what objectives need.

Everything that can be known before a cell runs is checked here, so that a grid either
refuses at once with one line (exit 2) or runs: each task is built once from its parameters
(a parameter it cannot be built from is named), its epochs bounded, its backbone made on the
meta device, and each weights file loaded once and checked against its recipe and shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark import registry
from benchmark.cell_data import to_tensors
from benchmark.checkpoints import check_fits, read_checkpoint
from benchmark.config import AUTO, CellConfig
from benchmark.contracts import TaskStream
from benchmark.errors import UserError
from benchmark.grid import MAX_EPOCHS, Grid
from benchmark.learner import TaskCache, epochs_for
from benchmark.memory import kept_token_count
from benchmark.model import TokenViT
from benchmark.pretrain import PretrainRecipe, default_recipe, weights_path
from benchmark.task_memory import budget_bytes_for
from benchmark.token_split import AUTO_CANDIDATES


def build_stream(cache: TaskCache, cell: CellConfig) -> TaskStream:
    """The cell's task stream; a task that its parameters cannot build is a one-line UserError."""
    try:
        return cache.get(cell.task, cell.task_params)
    except UserError:
        raise
    except Exception as error:  # a task's own check, or a library's, on values the grid gave it
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"task {cell.task!r} cannot be built from its parameters: {type(error).__name__}: {message}"
        ) from None


def meta_model(stream: TaskStream, cell: CellConfig) -> TokenViT:
    """The task's model on the meta device (shapes only, no memory): its geometry checked."""
    try:
        with torch.device("meta"):
            return TokenViT(stream.backbone, stream.num_classes)
    except Exception as error:  # timm on an impossible geometry (heads, widths, patch size)
        raise UserError(
            f"task {cell.task!r}: its backbone cannot be built: {type(error).__name__}: {error}"
        ) from None


def load_pretrained(path: Path, recipe: PretrainRecipe) -> dict[str, torch.Tensor]:
    """The pretrained weights file's state: it exists, loads (``weights_only``), was made by ``recipe``."""
    remake = "make it with `nox -s pretrain` (or `python -m benchmark pretrain" + (
        f" --token-dropout {recipe.token_dropout:g}`)" if recipe.token_dropout else "`)"
    )
    if not path.exists():
        raise UserError(f"pretrained backbone {path} not found: {remake}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, tampered or not a torch file: torch raises several types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read pretrained backbone {path} ({first}): re{remake[1:]}") from None
    if not isinstance(payload, dict) or payload.get("recipe_hash") != recipe.recipe_hash:
        raise UserError(f"pretrained backbone {path} was made by another recipe: re{remake[1:]}")
    state = payload.get("state")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"pretrained backbone {path} holds no state dict of tensors: re{remake[1:]}")
    return state


def check_pretrained_fits(state: dict[str, torch.Tensor], model: TokenViT, path: Path) -> None:
    check_fits(state, model.vit, path)
    if "pos_embed" in state and state["pos_embed"].shape != model.vit.pos_embed.shape:
        raise UserError(f"pretrained backbone {path} does not fit the task's token grid: remake it")


def preflight(grid: Grid, cache: TaskCache, weights_dir: Path) -> None:
    """Build every task once and check what each cell needs; raise a one-line UserError if not."""
    checked_budgets: set[tuple[str, float, float]] = set()
    checked_weights: set[tuple[Path, str]] = set()
    states: dict[Path, dict[str, torch.Tensor]] = {}  # each weights file loaded once
    models: dict[str, TokenViT] = {}
    for cell in grid.cells:
        stream = build_stream(cache, cell)
        epochs = epochs_for(cell, stream)
        if not 1 <= epochs <= MAX_EPOCHS:
            raise UserError(f"task {cell.task!r}: epochs must be in [1, {MAX_EPOCHS}], got {epochs}")
        # An objective may say what it needs beyond the data (captioning: Java for its metrics).
        check_available = getattr(registry.get("objective", stream.objective), "check_available", None)
        if check_available is not None:
            check_available()
        task_key = cell.task + repr(sorted(cell.task_params.items()))
        model = models.get(task_key) or models.setdefault(task_key, meta_model(stream, cell))
        if cell.train.backbone_weights:
            path = Path(cell.train.backbone_weights).expanduser()
            if (path, task_key) not in checked_weights:
                state = states[path] if path in states else states.setdefault(path, read_checkpoint(path))
                check_fits(state, model.vit, path)
                checked_weights.add((path, task_key))
        elif cell.train.pretrained:
            recipe = default_recipe(stream.backbone, cell.train.pretrain_token_dropout)
            path = weights_path(recipe, weights_dir)
            if (path, task_key) not in checked_weights:
                if path not in states:
                    states[path] = load_pretrained(path, recipe)
                check_pretrained_fits(states[path], model, path)
                checked_weights.add((path, task_key))
        if cell.token_selector is not None:
            token_selector = registry.get("token_selector", cell.token_selector)
            if getattr(token_selector, "needs_mask", False) and not stream.has_masks:
                raise UserError(
                    f"method {cell.method!r} needs ground-truth masks, which task {cell.task!r} does not have"
                )
        if cell.retention is None:
            continue
        key = (
            cell.task + repr(sorted(cell.task_params.items())),
            cell.retention,
            cell.token_fraction,
            cell.protocol,
        )
        if key in checked_budgets:
            continue
        checked_budgets.add(key)
        validation_rng = None if cell.protocol == 1 else np.random.default_rng(0)  # sizes do not depend on it
        fraction = min(AUTO_CANDIDATES) if cell.token_fraction == AUTO else float(cell.token_fraction)
        for index, experience in enumerate(stream.experiences[:-1]):
            task, _ = to_tensors(experience, stream.backbone.patch_size, stream.vocabulary, validation_rng)
            budget = budget_bytes_for(cell, task)
            per_sample = task.byte_costs.of(kept_token_count(fraction, stream.tokens))
            if budget < per_sample:
                raise UserError(
                    f"impossible budget: retention {cell.retention:g} of {cell.task} task {index + 1} is "
                    f"{budget} bytes, less than one stored sample ({per_sample} bytes at token fraction "
                    f"{fraction:g})"
                )
