"""Run one grid cell: train the task stream with the cell's memory, measure, return its record."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark import registry
from benchmark.checkpoints import fit_to_model, read_checkpoint
from benchmark.config import CellConfig
from benchmark.memory import MemoryBuffer, kept_token_count, retention_budget_bytes
from benchmark.metrics import average_forgetting, backward_transfer, diagonal_mean, final_average_accuracy
from benchmark.model import TokenBatch
from benchmark.objectives import EvalSet, evaluate_row, final_metrics
from benchmark.pretrain import WEIGHTS_DIR, default_recipe, load_backbone_weights
from benchmark.provenance import provenance
from benchmark.results import FAILED, FINISHED, CellResult
from benchmark.selection import attribution_quality, choose_memory, features_and_grads, sample_budget
from benchmark.train import ContinualModel, TrainSettings, seeded_generator, train_experience, whole
from methods.base import SamplePool, SampleSelector, TokenSelector
from tasks.base import Experience, TaskStream, patchify

# Random input dropout on new data for core tokensets when the grid does not set it:
# the seed paper's code drops patch embeddings at p = 0.9 (METHODS.md); see README for the choice.
CORE_TOKENSET_INPUT_DROPOUT = 0.5

StatusHook = Callable[[str, int], None]  # (what the cell is doing, epochs just finished)


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' but CUDA is not available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def input_dropout_for(config: CellConfig) -> float:
    if config.train.input_dropout is not None:
        return config.train.input_dropout
    return 0.0 if config.token_selector is None else CORE_TOKENSET_INPUT_DROPOUT


def epochs_for(config: CellConfig, stream: TaskStream) -> int:
    """``[train] epochs`` when the grid sets it, else the task's own."""
    return config.train.epochs if config.train.epochs is not None else stream.epochs


@dataclass
class TaskCache:
    """Built task streams of one process, keyed by task config (building is deterministic)."""

    streams: dict[str, TaskStream] = field(default_factory=dict)

    def get(self, task: str, params: dict[str, object]) -> TaskStream:
        key = f"{task}:{sorted(params.items())}"
        if key not in self.streams:
            self.streams[key] = registry.create("task", task, **params).build()
        return self.streams[key]


@dataclass(frozen=True)
class ExperienceTensors:
    train: TokenBatch  # every token of each training sample (and its text input, if any)
    train_targets: torch.Tensor  # int64 [n] classes, or [n, L] sequences
    train_categories: np.ndarray  # int64 [n]: what per-class selection groups by
    test: TokenBatch
    test_targets: torch.Tensor
    test_references: tuple[tuple[str, ...], ...] | None
    train_masks: torch.Tensor | None
    train_bytes: int

    @property
    def text_tokens(self) -> int:
        return 0 if self.train.text is None else int(self.train.text.shape[1])

    @property
    def label_tokens(self) -> int:
        return 1 if self.train_targets.ndim == 1 else int(self.train_targets.shape[1])


def to_tensors(experience: Experience, patch_size: int) -> ExperienceTensors:
    masks = experience.train_masks
    train_text, test_text = experience.train_text, experience.test_text
    return ExperienceTensors(
        train=whole(
            torch.from_numpy(patchify(experience.train_images, patch_size)),
            None if train_text is None else torch.from_numpy(train_text),
        ),
        train_targets=torch.from_numpy(experience.train_labels),
        train_categories=experience.categories,
        test=whole(
            torch.from_numpy(patchify(experience.test_images, patch_size)),
            None if test_text is None else torch.from_numpy(test_text),
        ),
        test_targets=torch.from_numpy(experience.test_labels),
        test_references=experience.test_references,
        train_masks=None if masks is None else torch.from_numpy(masks),
        train_bytes=experience.train_bytes,
    )


def concatenate(batches: list[TokenBatch]) -> TokenBatch:
    """One batch of every sample of ``batches`` (whole samples, as the joint bound trains on)."""
    texts = [b.text for b in batches]
    return TokenBatch(
        torch.cat([b.patches for b in batches]),
        torch.cat([b.positions for b in batches]),
        None if texts[0] is None else torch.cat([t for t in texts if t is not None]),
    )


def run_cell(
    config: CellConfig,
    commit: str,
    cache: TaskCache | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    on_status: StatusHook | None = None,
) -> CellResult:
    """Run one cell; any exception becomes a ``failed`` record with the error, never a crash."""
    started = time.perf_counter()
    try:
        return _run_cell(config, commit, cache or TaskCache(), weights_dir, on_status, started)
    except Exception as error:  # a failed cell is data: record it and let the grid go on
        return CellResult(
            config=config.to_dict(),
            config_hash=config.config_hash,
            status=FAILED,
            error=f"{type(error).__name__}: {error}",
            wall_seconds=time.perf_counter() - started,
            provenance={"commit": commit, "traceback": traceback.format_exc(limit=8)},
        )


def store_task_memory(
    model: ContinualModel,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    config: CellConfig,
    sample_selector: SampleSelector,
    token_selector: TokenSelector | None,
    settings: TrainSettings,
    device: torch.device,
) -> dict[str, float] | None:
    """Select task ``index``'s memory within its byte budget and store it; the attribution quality
    of the kept tokens where the task has masks (None otherwise)."""
    assert config.retention is not None
    tokens = current.train.positions.shape[1]
    budget_bytes = retention_budget_bytes(config.retention, current.train_bytes)
    patch_bytes = int(current.train.patches.shape[2])
    budget = sample_budget(
        budget_bytes, config.token_fraction, tokens, patch_bytes, current.text_tokens, current.label_tokens
    )
    features, grads = features_and_grads(
        model,
        current.train,
        current.train_targets,
        sample_selector.needs_grads,
        settings.eval_batch_size,
        device,
    )
    memory_grads = None
    whole = memory.replay_set().whole() if sample_selector.needs_grads and len(memory) else None
    if whole is not None and whole[0].patches.shape[1] == tokens:
        memory_grads = features_and_grads(model, whole[0], whole[1], True, settings.eval_batch_size, device)[
            1
        ]
    pool = SamplePool(features, grads, current.train_categories, memory_grads)
    choice = choose_memory(
        model,
        pool,
        current.train,
        current.train_targets,
        current.train_masks,
        sample_selector,
        token_selector,
        config.token_fraction,
        budget,
        np.random.default_rng([config.seed, 2, index]),
        device,
    )
    chosen = torch.from_numpy(choice.selection.indices)
    kept = choice.kept_positions
    stored_patches = current.train.patches[chosen].numpy()
    quality = None
    if kept is not None:
        stored_patches = np.take_along_axis(stored_patches, kept[:, :, None], axis=1)
        if current.train_masks is not None:
            quality = attribution_quality(kept, choice.top_tokens, current.train_masks[chosen].numpy())
    text = None if current.train.text is None else current.train.text[chosen].numpy()
    memory.add(index, stored_patches, kept, current.train_targets[chosen].numpy(), budget_bytes, text)
    return quality


def _run_cell(
    config: CellConfig,
    commit: str,
    cache: TaskCache,
    weights_dir: Path,
    on_status: StatusHook | None,
    started: float,
) -> CellResult:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    device = resolve_device(config.train.device)
    stream = cache.get(config.task, config.task_params)
    sample_selector = registry.create("sample_selector", config.sample_selector, **config.selector_params)
    token_selector = (
        None
        if config.token_selector is None
        else registry.create("token_selector", config.token_selector, **config.token_selector_params)
    )
    objective = registry.create("objective", stream.objective)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = objective.build_model(stream, mask_token=config.train.replay == "mask")
    encoder = model.encoder
    if config.train.backbone_weights:
        checkpoint = read_checkpoint(Path(config.train.backbone_weights).expanduser())
        encoder.load_backbone(fit_to_model(checkpoint, encoder.vit.pos_embed.shape))
    elif config.train.pretrained:
        recipe = default_recipe(stream.backbone, config.train.pretrain_token_dropout)
        encoder.load_backbone(load_backbone_weights(recipe, weights_dir))
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    settings = TrainSettings(
        epochs=epochs_for(config, stream),
        batch_size=config.train.batch_size,
        replay_batch_size=config.train.replay_batch_size,
        input_dropout=input_dropout_for(config),
        eval_batch_size=config.train.eval_batch_size,
        replay_mode=config.train.replay,
    )
    data = [to_tensors(e, stream.backbone.patch_size) for e in stream.experiences]
    status = on_status or (lambda message, advance: None)

    test_sets = [EvalSet(d.test, d.test_targets, d.test_references) for d in data]

    def evaluate_all() -> list[float]:
        return evaluate_row(objective, model, test_sets, settings.eval_batch_size, device)

    memory = MemoryBuffer(stream.tokens)
    tasks = len(data)
    matrix = np.zeros((tasks, tasks))
    train_seconds = select_seconds = 0.0
    attribution_rows: list[dict[str, float]] = []
    attribution_weights: list[int] = []
    for index, current in enumerate(data):
        tick = time.perf_counter()
        replay = memory.replay_set() if len(memory) else None
        # The joint bound trains on every task's data seen so far (cumulative): its matrix is real.
        seen = data[: index + 1] if sample_selector.trains_jointly else [current]
        train_experience(
            model,
            optimizer,
            concatenate([d.train for d in seen]),
            torch.cat([d.train_targets for d in seen]),
            replay,
            settings,
            seeded_generator(config.seed, 1, index),
            device,
            lambda m, i=index: status(f"task {i + 1}/{tasks} {m}", 1),
        )
        train_seconds += time.perf_counter() - tick
        matrix[index] = evaluate_all()
        if not sample_selector.uses_memory or index == tasks - 1:
            continue  # the last task's memory would never be replayed
        tick = time.perf_counter()
        status(f"task {index + 1}/{tasks} selecting memory", 0)
        quality = store_task_memory(
            model, memory, current, index, config, sample_selector, token_selector, settings, device
        )
        if quality is not None:
            attribution_rows.append(quality)
            attribution_weights.append(len(memory.entries[-1]))
        select_seconds += time.perf_counter() - tick
    attribution = None
    if attribution_rows:
        attribution = {
            key: float(np.average([row[key] for row in attribution_rows], weights=attribution_weights))
            for key in attribution_rows[0]
        }
    extra_metrics = final_metrics(objective, model, test_sets, settings.eval_batch_size, device)
    return CellResult(
        config=config.to_dict(),
        config_hash=config.config_hash,
        status=FINISHED,
        accuracy_matrix=[[float(v) for v in row] for row in matrix],
        diagonal_mean=diagonal_mean(matrix),
        final_average_accuracy=final_average_accuracy(matrix),
        average_forgetting=average_forgetting(matrix),
        backward_transfer=backward_transfer(matrix),
        bytes_used=memory.bytes_used,
        bytes_allowed=memory.bytes_allowed,
        bytes_used_per_task=[e.nbytes for e in memory.entries],
        bytes_allowed_per_task=[e.bytes_allowed for e in memory.entries],
        samples_per_task=[len(e) for e in memory.entries],
        tokens_per_sample=(
            kept_token_count(config.token_fraction, stream.tokens) if sample_selector.uses_memory else None
        ),
        attribution=attribution,
        extra_metrics=extra_metrics,
        selection_seconds=select_seconds,
        training_seconds=train_seconds,
        wall_seconds=time.perf_counter() - started,
        provenance=provenance(device, commit),
    )
