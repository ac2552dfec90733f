"""Refuse an impossible grid before any cell runs: data, weights, masks, budgets, what objectives need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark import registry
from benchmark.cell_data import to_tensors
from benchmark.checkpoints import check_fits, read_checkpoint
from benchmark.config import AUTO
from benchmark.errors import UserError
from benchmark.grid import Grid
from benchmark.learner import TaskCache
from benchmark.memory import kept_token_count
from benchmark.model import TokenViT
from benchmark.pretrain import default_recipe, weights_path
from benchmark.task_memory import budget_bytes_for
from benchmark.token_split import AUTO_CANDIDATES


def preflight(grid: Grid, cache: TaskCache, weights_dir: Path) -> None:
    """Build every task once and check what each cell needs; raise a one-line UserError if not."""
    checked_budgets: set[tuple[str, float, float]] = set()
    for cell in grid.cells:
        stream = cache.get(cell.task, cell.task_params)
        # An objective may say what it needs beyond the data (captioning: Java for its metrics).
        check_available = getattr(registry.get("objective", stream.objective), "check_available", None)
        if check_available is not None:
            check_available()
        if cell.train.backbone_weights:
            path = Path(cell.train.backbone_weights).expanduser()
            with torch.device("meta"):  # shapes only, no memory
                model = TokenViT(stream.backbone, stream.num_classes)
            check_fits(read_checkpoint(path), model.vit, path)
        elif cell.train.pretrained:
            recipe = default_recipe(stream.backbone, cell.train.pretrain_token_dropout)
            path = weights_path(recipe, weights_dir)
            if not path.exists():
                raise UserError(
                    f"pretrained backbone {path} for {cell.task} not found: "
                    "make it with `nox -s pretrain` (or `python -m benchmark pretrain"
                    + (f" --token-dropout {recipe.token_dropout:g}" if recipe.token_dropout else "")
                    + "`)"
                )
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
