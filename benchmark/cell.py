"""Run one grid cell: train the task stream with the cell's memory, measure, return its record.

The steps follow DESIGN's data flow: the cell's registry entries (task stream,
selectors, objective) are created, the model is built from the pretrained
backbone, then for each task the learner trains on it (with replay of what
memory holds), is evaluated on every task, and stores the task's memory
(samples, then tokens, within the byte budget); the record is made last.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from benchmark import registry
from benchmark.checkpoints import fit_to_model, read_checkpoint
from benchmark.config import AUTO, CellConfig
from benchmark.contracts import (
    Experience,
    SamplePool,
    SampleSelector,
    TaskStream,
    TokenBatch,
    TokenSelector,
    patchify,
    selects_pairs,
)
from benchmark.crashpoints import crash_point
from benchmark.memory import (
    BLOCK_HEADER_BYTES,
    ByteCosts,
    MemoryBuffer,
    kept_token_count,
    retention_budget_bytes,
)
from benchmark.metrics import average_forgetting, backward_transfer, diagonal_mean, final_average_accuracy
from benchmark.objectives import EvalSet, Objective, evaluate_row, final_metrics
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

# Random input dropout on new data for core tokensets when the grid does not set it:
# the seed paper's code drops patch embeddings at p = 0.9 (METHODS.md); see README for the choice.
CORE_TOKENSET_INPUT_DROPOUT = 0.5

StatusHook = Callable[[str, int], None]  # (what the cell is doing, epochs just finished)
TaskHook = Callable[[int, list[float]], None]  # (task index, the accuracy row after training it)


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


# ------------------------------------------------------------------------------------------ the data


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

    @property
    def byte_costs(self) -> ByteCosts:
        """What storing one of its training samples costs, by tokens kept."""
        tokens, patch_bytes = self.train.patches.shape[1:]
        return ByteCosts.for_samples(int(tokens), int(patch_bytes), self.text_tokens, self.label_tokens)

    @property
    def test_set(self) -> EvalSet:
        return EvalSet(self.test, self.test_targets, self.test_references)


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


# ------------------------------------------------------------------------------- entries and learner


@dataclass(frozen=True)
class CellEntries:
    """The registry entries a cell runs: its task stream, its selectors and the task's objective."""

    stream: TaskStream
    sample_selector: SampleSelector
    token_selector: TokenSelector | None
    objective: Objective


def create_entries(config: CellConfig, cache: TaskCache) -> CellEntries:
    stream = cache.get(config.task, config.task_params)
    sample_selector = registry.create("sample_selector", config.sample_selector, **config.selector_params)
    token_selector = (
        None
        if config.token_selector is None
        else registry.create("token_selector", config.token_selector, **config.token_selector_params)
    )
    return CellEntries(
        stream, sample_selector, token_selector, registry.create("objective", stream.objective)
    )


@dataclass(frozen=True)
class Learner:
    """The model a cell trains, what trains it, and where."""

    model: ContinualModel
    optimizer: torch.optim.Optimizer
    settings: TrainSettings
    device: torch.device


def build_learner(config: CellConfig, entries: CellEntries, weights_dir: Path) -> Learner:
    """The task's model (seeded), its backbone weights loaded, and its optimizer and settings."""
    device = resolve_device(config.train.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = entries.objective.build_model(entries.stream, mask_token=config.train.replay == "mask")
    if config.train.backbone_weights:
        checkpoint = read_checkpoint(Path(config.train.backbone_weights).expanduser())
        model.encoder.load_backbone(fit_to_model(checkpoint, model.encoder.vit.pos_embed.shape))
    elif config.train.pretrained:
        recipe = default_recipe(entries.stream.backbone, config.train.pretrain_token_dropout)
        model.encoder.load_backbone(load_backbone_weights(recipe, weights_dir))
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    settings = TrainSettings(
        epochs=epochs_for(config, entries.stream),
        batch_size=config.train.batch_size,
        replay_batch_size=config.train.replay_batch_size,
        input_dropout=input_dropout_for(config),
        eval_batch_size=config.train.eval_batch_size,
        replay_mode=config.train.replay,
    )
    return Learner(model, optimizer, settings, device)


# -------------------------------------------------------------------------------------------- train


def train_task(
    learner: Learner,
    training: list[ExperienceTensors],
    memory: MemoryBuffer,
    generator: torch.Generator,
    on_epoch: Callable[[str], None],
) -> None:
    """One task's training: ``training`` holds its data (every task's so far for the joint bound)."""
    train_experience(
        learner.model,
        learner.optimizer,
        concatenate([d.train for d in training]),
        torch.cat([d.train_targets for d in training]),
        memory.replay_set() if len(memory) else None,
        learner.settings,
        generator,
        learner.device,
        on_epoch,
    )


# ------------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class StoredTask:
    """What storing one task's memory measured."""

    samples: int  # samples stored
    quality: dict[str, float] | None  # attribution quality of the kept tokens (tasks with masks)
    token_fraction: float | None  # t used; None when tokens per sample vary (tokengreedy)
    tokens_stored: int
    auto_scores: dict[str, float] | None = None  # token_fraction = "auto": validation score per t


def selection_pool(
    learner: Learner, memory: MemoryBuffer, current: ExperienceTensors, needs_grads: bool
) -> SamplePool:
    """The selectors' view of the finished task: features, gradient proxies and memory's gradients."""
    batch_size, device = learner.settings.eval_batch_size, learner.device
    features, grads = features_and_grads(
        learner.model, current.train, current.train_targets, needs_grads, batch_size, device
    )
    memory_grads = None
    stored = memory.replay_set().whole() if needs_grads and len(memory) else None
    if stored is not None and stored[0].patches.shape[1] == current.train.positions.shape[1]:
        memory_grads = features_and_grads(learner.model, *stored, True, batch_size, device)[1]
    return SamplePool(features, grads, current.train_categories, memory_grads)


def store_task_memory(
    learner: Learner,
    entries: CellEntries,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    config: CellConfig,
) -> StoredTask:
    """Select task ``index``'s memory within its byte budget and store it."""
    assert config.retention is not None
    budget_bytes = retention_budget_bytes(config.retention, current.train_bytes)
    pool = selection_pool(learner, memory, current, entries.sample_selector.needs_grads)
    rng = np.random.default_rng([config.seed, 2, index])
    selector, token_selector = entries.sample_selector, entries.token_selector
    if token_selector is not None and selects_pairs(selector):
        relevance = rank_tokens(
            learner.model,
            token_selector,
            current.train,
            current.train_targets,
            current.train_masks,
            torch.arange(len(pool)),
            rng,
            learner.device,
        )
        costs = replace(current.byte_costs, reserve_bytes=BLOCK_HEADER_BYTES * current.byte_costs.tokens)
        picked = selector.select_pairs(pool, relevance.numpy(), budget_bytes, costs)
        return _store_pairs(memory, current, index, picked, relevance, budget_bytes)
    return _store_samples_then_tokens(
        learner, entries, memory, current, index, pool, budget_bytes, config, rng
    )


def _store_samples_then_tokens(
    learner: Learner,
    entries: CellEntries,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    pool: SamplePool,
    budget_bytes: int,
    config: CellConfig,
    rng: np.random.Generator,
) -> StoredTask:
    """Two-stage selection: samples within the bytes at token fraction t, then the top t of their tokens."""
    tokens, patch_bytes = current.train.patches.shape[1:]

    def budget_at(fraction: float) -> int:
        return sample_budget(
            budget_bytes, fraction, tokens, patch_bytes, current.text_tokens, current.label_tokens
        )

    fraction, auto_scores = config.token_fraction, None
    if fraction == AUTO:
        fraction, auto_scores = _auto_token_fraction(
            learner, entries, current, pool, budget_at, config, index
        )
    assert isinstance(fraction, float)
    choice = choose_memory(
        learner.model,
        pool,
        current.train,
        current.train_targets,
        current.train_masks,
        entries.sample_selector,
        entries.token_selector,
        fraction,
        budget_at(fraction),
        rng,
        learner.device,
    )
    chosen = torch.from_numpy(choice.selection.indices)
    kept = choice.kept_positions
    stored_patches = current.train.patches[chosen].numpy()
    quality = None
    if kept is not None:
        stored_patches = np.take_along_axis(stored_patches, kept[:, :, None], axis=1)
        if current.train_masks is not None:
            assert choice.top_tokens is not None
            quality = attribution_quality(kept, choice.top_tokens, current.train_masks[chosen].numpy())
    text = None if current.train.text is None else current.train.text[chosen].numpy()
    entry = memory.add(index, stored_patches, kept, current.train_targets[chosen].numpy(), budget_bytes, text)
    return StoredTask(len(entry), quality, fraction, entry.tokens_stored, auto_scores)


def _auto_token_fraction(
    learner: Learner,
    entries: CellEntries,
    current: ExperienceTensors,
    pool: SamplePool,
    budget_at: Callable[[float], int],
    config: CellConfig,
    index: int,
) -> tuple[float, dict[str, float]]:
    """``token_fraction = "auto"``: the t chosen on a held-out slice, and every candidate's scores."""
    assert entries.token_selector is not None
    split = choose_token_fraction(
        learner.model,
        current.train,
        current.train_targets,
        current.train_categories,
        current.train_masks,
        pool.grads,
        pool.features,
        entries.sample_selector,
        entries.token_selector,
        {t: budget_at(t) for t in AUTO_CANDIDATES},
        learner.settings.replay_mode,
        np.random.default_rng([config.seed, 5, index]),
        learner.settings.eval_batch_size,
        learner.device,
    )
    scores = {f"accuracy@{t}": v for t, v in split.scores.items()}
    scores.update({f"margin@{t}": v for t, v in split.margins.items()})
    return split.token_fraction, scores


def _store_pairs(
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    picked: dict[int, np.ndarray],
    relevance: torch.Tensor,
    budget_bytes: int,
) -> StoredTask:
    """Store a pair selector's choice (sample → kept positions) in blocks of equal token count."""
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
        samples = list(picked)
        best = relevance[samples].argmax(dim=1).numpy()
        quality = attribution_quality(list(picked.values()), best, current.train_masks[samples].numpy())
    return StoredTask(len(entry), quality, None, entry.tokens_stored)


# ------------------------------------------------------------------------------------------ measure


@dataclass
class CellLog:
    """What a cell measures as it goes: the accuracy matrix, partial-input rows, stored memory, times."""

    matrix: np.ndarray
    partial: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    stored: list[StoredTask] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"training": 0.0, "selection": 0.0})

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - tick

    def add_partial(self, row: dict[str, dict[str, list[float]]]) -> None:
        for mode, per_fraction in row.items():
            for fraction, values in per_fraction.items():
                self.partial.setdefault(mode, {}).setdefault(fraction, []).append(values)

    def attribution(self) -> dict[str, float] | None:
        """Attribution quality over the stored tasks, each weighted by its stored samples."""
        rows = [(s.quality, s.samples) for s in self.stored if s.quality is not None]
        if not rows:
            return None
        weights = [samples for _, samples in rows]
        return {key: float(np.average([q[key] for q, _ in rows], weights=weights)) for key in rows[0][0]}

    def tokens_per_sample(self, config: CellConfig, tokens: int, uses_memory: bool) -> int | None:
        """Tokens each stored sample keeps, where that is one number for the whole cell."""
        if not uses_memory:
            return None
        if isinstance(config.token_fraction, float) and all(
            s.token_fraction is not None for s in self.stored
        ):
            return kept_token_count(config.token_fraction, tokens)
        return None


@dataclass(frozen=True)
class Evaluation:
    """Every task's test set, scored by the objective (and, if asked, on partial inputs)."""

    objective: Objective
    data: list[ExperienceTensors]
    partial_fractions: list[float]
    orders: dict[str, list[torch.Tensor]]

    @classmethod
    def of(cls, objective: Objective, data: list[ExperienceTensors], config: CellConfig) -> Evaluation:
        chosen = [config.token_fraction] if isinstance(config.token_fraction, float) else []
        fractions = sorted({*PARTIAL_FRACTIONS, *chosen}, reverse=True)
        orders = token_orders([d.test for d in data], [d.test_masks for d in data], config.seed)
        return cls(objective, data, fractions, orders)

    def row(self, learner: Learner) -> list[float]:
        sets = [d.test_set for d in self.data]
        return evaluate_row(
            self.objective, learner.model, sets, learner.settings.eval_batch_size, learner.device
        )

    def partial_row(self, learner: Learner) -> dict[str, dict[str, list[float]]]:
        def evaluate(batch: TokenBatch, task: int) -> float:
            d = self.data[task]
            return self.objective.evaluate(
                learner.model,
                batch,
                d.test_targets,
                d.test_references,
                learner.settings.eval_batch_size,
                learner.device,
            )

        tests = [d.test for d in self.data]
        return partial_row(evaluate, tests, self.orders, self.partial_fractions, learner.settings.replay_mode)

    def final_metrics(self, learner: Learner) -> dict | None:
        sets = [d.test_set for d in self.data]
        return final_metrics(
            self.objective, learner.model, sets, learner.settings.eval_batch_size, learner.device
        )


# --------------------------------------------------------------------------------------------- cell


def run_cell(
    config: CellConfig,
    commit: str,
    cache: TaskCache | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    on_status: StatusHook | None = None,
    on_task: TaskHook | None = None,
) -> CellResult:
    """Run one cell; any exception becomes a ``failed`` record with the error, never a crash.

    ``on_status`` hears what the cell is doing, ``on_task`` each task's accuracy row as it ends
    (the driver logs it to MLflow); the cell runner itself knows nothing of tracking.
    """
    started = time.perf_counter()
    try:
        return _run_cell(config, commit, cache or TaskCache(), weights_dir, on_status, on_task, started)
    except Exception as error:  # a failed cell is data: record it and let the grid go on
        return CellResult(
            config=config.to_dict(),
            config_hash=config.config_hash,
            status=FAILED,
            error=f"{type(error).__name__}: {error}",
            wall_seconds=time.perf_counter() - started,
            provenance={"commit": commit, "traceback": traceback.format_exc(limit=8)},
        )


def _run_cell(
    config: CellConfig,
    commit: str,
    cache: TaskCache,
    weights_dir: Path,
    on_status: StatusHook | None,
    on_task: TaskHook | None,
    started: float,
) -> CellResult:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    entries = create_entries(config, cache)
    learner = build_learner(config, entries, weights_dir)
    data = [to_tensors(e, entries.stream.backbone.patch_size) for e in entries.stream.experiences]
    status = on_status or (lambda message, advance: None)
    evaluation = Evaluation.of(entries.objective, data, config)
    memory = MemoryBuffer(entries.stream.tokens)
    selector = entries.sample_selector
    tasks = len(data)
    log = CellLog(np.zeros((tasks, tasks)))
    for index, current in enumerate(data):
        # The joint bound trains on every task's data seen so far (cumulative): its matrix is real.
        training = data[: index + 1] if selector.trains_jointly else [current]
        with log.timed("training"):
            generator = seeded_generator(config.seed, 1, index)
            train_task(
                learner,
                training,
                memory,
                generator,
                lambda m, i=index: status(f"task {i + 1}/{tasks} {m}", 1),
            )
        log.matrix[index] = evaluation.row(learner)
        if on_task is not None:
            on_task(index, [float(v) for v in log.matrix[index]])
        crash_point("after_task", config.config_hash)
        if config.train.partial_inputs:
            log.add_partial(evaluation.partial_row(learner))
        if not selector.uses_memory or index == tasks - 1:
            continue  # the last task's memory would never be replayed
        with log.timed("selection"):
            status(f"task {index + 1}/{tasks} selecting memory", 0)
            log.stored.append(store_task_memory(learner, entries, memory, current, index, config))
        crash_point("after_selection", config.config_hash)
    return _finished_result(config, commit, entries, learner, evaluation, memory, log, started)


def _finished_result(
    config: CellConfig,
    commit: str,
    entries: CellEntries,
    learner: Learner,
    evaluation: Evaluation,
    memory: MemoryBuffer,
    log: CellLog,
    started: float,
) -> CellResult:
    matrix = log.matrix
    extra_metrics = evaluation.final_metrics(learner)
    uses_memory = entries.sample_selector.uses_memory
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
        tokens_per_sample=log.tokens_per_sample(config, entries.stream.tokens, uses_memory),
        tokens_per_task=[s.tokens_stored for s in log.stored],
        token_fraction_per_task=[s.token_fraction for s in log.stored],
        partial_input_accuracy=log.partial or None,
        auto_token_fraction_scores=(
            [s.auto_scores for s in log.stored] if config.token_fraction == AUTO else None
        ),
        attribution=log.attribution(),
        extra_metrics=extra_metrics,
        metric=entries.objective.metric,
        selection_seconds=log.seconds["selection"],
        training_seconds=log.seconds["training"],
        wall_seconds=time.perf_counter() - started,
        provenance=provenance(learner.device, commit),
    )
