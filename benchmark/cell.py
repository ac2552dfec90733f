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
from benchmark.config import AUTO, CellConfig
from benchmark.memory import (
    BLOCK_HEADER_BYTES,
    LABEL_DTYPE,
    POSITION_DTYPE,
    MemoryBuffer,
    kept_token_count,
    retention_budget_bytes,
)
from benchmark.metrics import average_forgetting, backward_transfer, diagonal_mean, final_average_accuracy
from benchmark.model import TokenBatch
from benchmark.objectives import EvalSet, evaluate_row, final_metrics
from benchmark.partial_inputs import PARTIAL_FRACTIONS, partial_row, token_orders
from benchmark.pretrain import WEIGHTS_DIR, default_recipe, load_backbone_weights
from benchmark.provenance import provenance
from benchmark.results import FAILED, FINISHED, CellResult
from benchmark.selection import (
    attribution_quality,
    choose_memory,
    features_and_grads,
    rank_tokens,
    sample_budget,
)
from benchmark.token_split import AUTO_CANDIDATES, choose_token_fraction
from benchmark.train import ContinualModel, TrainSettings, seeded_generator, train_experience, whole
from methods.base import SamplePool, SampleSelector, TokenSelector
from methods.tokengreedy import ByteCosts
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
    test_masks: torch.Tensor | None = None

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
        test_masks=None if experience.test_masks is None else torch.from_numpy(experience.test_masks),
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


@dataclass(frozen=True)
class StoredTask:
    """What storing one task's memory measured."""

    quality: dict[str, float] | None  # attribution quality of the kept tokens (tasks with masks)
    token_fraction: float | None  # t used; None when tokens per sample vary (tokengreedy)
    tokens_stored: int
    auto_scores: dict[str, float] | None = None  # token_fraction = "auto": validation score per t


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
) -> StoredTask:
    """Select task ``index``'s memory within its byte budget and store it."""
    assert config.retention is not None
    tokens = current.train.positions.shape[1]
    budget_bytes = retention_budget_bytes(config.retention, current.train_bytes)
    patch_bytes = int(current.train.patches.shape[2])
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
        memory_grads = features_and_grads(model, whole[0], whole[1], True, settings.eval_batch_size, device)
        memory_grads = memory_grads[1]
    pool = SamplePool(features, grads, current.train_categories, memory_grads)
    rng = np.random.default_rng([config.seed, 2, index])
    if token_selector is not None and getattr(sample_selector, "selects_tokens", False):
        return _store_pairs(
            model, memory, current, index, pool, sample_selector, token_selector, budget_bytes, rng, device
        )

    def budget_at(fraction: float) -> int:
        return sample_budget(
            budget_bytes, fraction, tokens, patch_bytes, current.text_tokens, current.label_tokens
        )

    auto_scores = None
    fraction = config.token_fraction
    if fraction == AUTO:
        assert token_selector is not None
        split = choose_token_fraction(
            model,
            current.train,
            current.train_targets,
            current.train_categories,
            current.train_masks,
            grads,
            features,
            sample_selector,
            token_selector,
            {t: budget_at(t) for t in AUTO_CANDIDATES},
            settings.replay_mode,
            np.random.default_rng([config.seed, 5, index]),
            settings.eval_batch_size,
            device,
        )
        fraction = split.token_fraction
        auto_scores = {f"accuracy@{t}": v for t, v in split.scores.items()}
        auto_scores.update({f"margin@{t}": v for t, v in split.margins.items()})
    assert isinstance(fraction, float)
    choice = choose_memory(
        model,
        pool,
        current.train,
        current.train_targets,
        current.train_masks,
        sample_selector,
        token_selector,
        fraction,
        budget_at(fraction),
        rng,
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
    entry = memory.add(index, stored_patches, kept, current.train_targets[chosen].numpy(), budget_bytes, text)
    return StoredTask(quality, fraction, entry.tokens_stored, auto_scores)


def _store_pairs(
    model: ContinualModel,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    pool: SamplePool,
    sample_selector: SampleSelector,
    token_selector: TokenSelector,
    budget_bytes: int,
    rng: np.random.Generator,
    device: torch.device,
) -> StoredTask:
    """Single-stage selection (``tokengreedy``): every sample's tokens ranked, pairs kept within the bytes."""
    tokens = current.train.positions.shape[1]
    everyone = torch.arange(len(pool))
    relevance = rank_tokens(
        model,
        token_selector,
        current.train,
        current.train_targets,
        current.train_masks,
        everyone,
        rng,
        device,
    )
    costs = ByteCosts(
        tokens=tokens,
        patch_bytes=int(current.train.patches.shape[2]),
        position_bytes=np.dtype(POSITION_DTYPE).itemsize,
        sample_bytes=(current.label_tokens + current.text_tokens) * np.dtype(LABEL_DTYPE).itemsize,
        reserve_bytes=BLOCK_HEADER_BYTES * tokens,
    )
    picked = sample_selector.select_pairs(pool, relevance.numpy(), budget_bytes, costs)  # type: ignore[attr-defined]
    by_count: dict[int, list[int]] = {}
    for sample, kept in picked.items():
        by_count.setdefault(len(kept), []).append(sample)
    blocks = []
    for count in sorted(by_count, reverse=True):
        samples = np.asarray(by_count[count], dtype=np.int64)
        positions = np.stack([picked[int(i)] for i in samples])
        patches = np.take_along_axis(current.train.patches[samples].numpy(), positions[:, :, None], axis=1)
        text = None if current.train.text is None else current.train.text[samples].numpy()
        blocks.append(memory.block(patches, positions, current.train_targets[samples].numpy(), text))
    if not blocks:
        blocks.append(
            memory.block(current.train.patches[:0].numpy(), None, current.train_targets[:0].numpy())
        )
    entry = memory.add_blocks(index, blocks, budget_bytes)
    quality = None
    if current.train_masks is not None and picked:
        masks = current.train_masks.numpy()
        inside = [masks[i, kept] for i, kept in picked.items()]
        top = {i: int(relevance[i].argmax()) for i in picked}
        quality = {
            "precision": float(np.mean([m.mean() for m in inside])),
            "recall": float(
                np.mean(
                    [
                        m.sum() / max(masks[i].sum(), 1)
                        for (i, _), m in zip(picked.items(), inside, strict=True)
                    ]
                )
            ),
            "pointing_game": float(np.mean([masks[i, top[i]] for i in picked])),
        }
    return StoredTask(quality, None, entry.tokens_stored)


def _tokens_per_sample(
    config: CellConfig, stored_tasks: list[StoredTask], tokens: int, uses_memory: bool
) -> int | None:
    """Tokens each stored sample keeps, where that is one number for the whole cell."""
    if not uses_memory:
        return None
    if isinstance(config.token_fraction, float) and all(s.token_fraction is not None for s in stored_tasks):
        return kept_token_count(config.token_fraction, tokens)
    return None


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

    partial_fractions = sorted(
        {*PARTIAL_FRACTIONS, *([config.token_fraction] if isinstance(config.token_fraction, float) else [])},
        reverse=True,
    )
    orders = token_orders([d.test for d in data], [d.test_masks for d in data], config.seed)
    partial: dict[str, dict[str, list[list[float]]]] = {}

    def evaluate_partial(batch: TokenBatch, task: int) -> float:
        d = data[task]
        return objective.evaluate(
            model, batch, d.test_targets, d.test_references, settings.eval_batch_size, device
        )

    memory = MemoryBuffer(stream.tokens)
    tasks = len(data)
    matrix = np.zeros((tasks, tasks))
    train_seconds = select_seconds = 0.0
    attribution_rows: list[dict[str, float]] = []
    stored_tasks: list[StoredTask] = []
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
        if config.train.partial_inputs:
            row = partial_row(
                evaluate_partial, [d.test for d in data], orders, partial_fractions, settings.replay_mode
            )
            for mode, per_fraction in row.items():
                for fraction, values in per_fraction.items():
                    partial.setdefault(mode, {}).setdefault(fraction, []).append(values)
        if not sample_selector.uses_memory or index == tasks - 1:
            continue  # the last task's memory would never be replayed
        tick = time.perf_counter()
        status(f"task {index + 1}/{tasks} selecting memory", 0)
        stored = store_task_memory(
            model, memory, current, index, config, sample_selector, token_selector, settings, device
        )
        stored_tasks.append(stored)
        if stored.quality is not None:
            attribution_rows.append(stored.quality)
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
        tokens_per_sample=_tokens_per_sample(
            config, stored_tasks, stream.tokens, sample_selector.uses_memory
        ),
        tokens_per_task=[s.tokens_stored for s in stored_tasks],
        token_fraction_per_task=[s.token_fraction for s in stored_tasks],
        partial_input_accuracy=partial or None,
        auto_token_fraction_scores=(
            [s.auto_scores for s in stored_tasks] if config.token_fraction == AUTO else None
        ),
        attribution=attribution,
        extra_metrics=extra_metrics,
        metric=objective.metric,
        selection_seconds=select_seconds,
        training_seconds=train_seconds,
        wall_seconds=time.perf_counter() - started,
        provenance=provenance(device, commit),
    )
