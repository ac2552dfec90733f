"""Run one grid cell: train the task stream with the cell's memory, measure, return its record.

The steps follow the data flow of docs/design.md. The cell's registry entries (task stream,
selectors, objective) are created and its data split (``cell_data``: each
task's validation slice held out under protocol 2, test data sealed). Then,
for each ``[tune]`` candidate of its training recipe (the cell itself when it
tunes nothing), a learner is built from the pretrained backbone and trained
on the tasks in order: after each task its weights are kept, it is scored on
every task's validation slice, and the task's memory is stored
(``task_memory``). The candidate with the best final validation score is the
cell's; only then is the test data opened, and the chosen candidate's kept
weights after each task give the accuracy matrix, the partial-input
accuracies and the shortcut diagnostics. The record is made last.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.cell_data import EvalSplit, ExperienceTensors, stream_data
from benchmark.config import AUTO, CellConfig
from benchmark.contracts import TokenBatch
from benchmark.crashpoints import crash_point
from benchmark.diagnostics import diagnostic_fraction, shortcut_row
from benchmark.learner import (
    CellEntries,
    Learner,
    StatusHook,
    TaskCache,
    build_learner,
    create_entries,
    train_task,
)
from benchmark.memory import MemoryBuffer, kept_token_count
from benchmark.metrics import average_forgetting, backward_transfer, diagonal_mean, final_average_accuracy
from benchmark.objectives import ClassPredictor, evaluate_row, final_metrics
from benchmark.partial_inputs import PARTIAL_FRACTIONS, partial_row, token_orders
from benchmark.pretrain import WEIGHTS_DIR
from benchmark.provenance import provenance
from benchmark.results import FAILED, FINISHED, CellResult
from benchmark.task_memory import StoredTask, store_task_memory
from benchmark.train import seeded_generator

# (candidate number from 0, task index, the validation row after training that task): what the
# driver logs to MLflow as each task ends; the test rows come with the record (test data is sealed).
TaskHook = Callable[[int, int, list[float]], None]

TRAINING_STREAM = 1  # seeded_generator stream of training (batch order, input dropout, replay draws)
VALIDATION_STREAM = 8  # np.random.default_rng([seed, 8]): the validation slices (protocol 2)


def run_cell(
    config: CellConfig,
    commit: str,
    cache: TaskCache | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    on_status: StatusHook | None = None,
    on_task: TaskHook | None = None,
) -> CellResult:
    """Run one cell; any exception becomes a ``failed`` record with the error, never a crash.

    ``on_status`` hears what the cell is doing, ``on_task`` each task's validation row as the
    task ends (the driver logs it to MLflow); the cell runner itself knows nothing of tracking.
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
    stream = entries.stream
    validation_rng = None if config.protocol == 1 else np.random.default_rng([config.seed, VALIDATION_STREAM])
    data = stream_data(stream.experiences, stream.backbone.patch_size, stream.vocabulary, validation_rng)
    status = on_status or (lambda message, advance: None)
    candidates = config.candidates()
    runs = []
    for number, candidate in enumerate(candidates, 1):
        prefix = f"candidate {number}/{len(candidates)} " if len(candidates) > 1 else ""
        task_hook = None if on_task is None else (lambda i, row, n=number - 1: on_task(n, i, row))
        runs.append(
            train_stream(
                candidate,
                entries,
                data.tasks,
                weights_dir,
                lambda m, a, p=prefix: status(p + m, a),
                task_hook,
            )
        )
    chosen = choose_on_validation(runs)
    status("testing", 0)
    tested = evaluate_on_test(runs[chosen], entries, data.tests.open(), data.tasks)
    return _finished_result(config, commit, entries, runs, chosen, tested, started)


# ------------------------------------------------------------------------------------------ training


@dataclass
class StreamRun:
    """One training run over the task stream: what it kept after each task and what it measured."""

    config: CellConfig
    learner: Learner
    memory: MemoryBuffer
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)  # weights after each task
    validation_matrix: list[list[float]] = field(default_factory=list)  # [i][j], protocol 2
    stored: list[StoredTask] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"training": 0.0, "selection": 0.0})

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - tick

    @property
    def validation_final_accuracy(self) -> float | None:
        return float(np.mean(self.validation_matrix[-1])) if self.validation_matrix else None


def train_stream(
    config: CellConfig,
    entries: CellEntries,
    tasks: list[ExperienceTensors],
    weights_dir: Path,
    status: StatusHook,
    on_task: Callable[[int, list[float]], None] | None = None,
) -> StreamRun:
    """Train on the tasks in order, storing each finished task's memory; test data is never read."""
    learner = build_learner(config, entries, weights_dir)
    run = StreamRun(config, learner, MemoryBuffer(entries.stream.tokens))
    selector = entries.sample_selector
    count = len(tasks)
    validation = [task.validation for task in tasks]
    for index, current in enumerate(tasks):
        # The joint bound trains on every task's data seen so far (cumulative): its matrix is real.
        seen = tasks[: index + 1] if selector.trains_jointly else [current]
        with run.timed("training"):
            train_task(
                learner,
                [(task.train, task.train_targets) for task in seen],
                run.memory,
                seeded_generator(config.seed, TRAINING_STREAM, index),
                lambda m, i=index: status(f"task {i + 1}/{count} {m}", 1),
            )
        run.snapshots.append(learner.snapshot())
        if all(split is not None for split in validation):
            run.validation_matrix.append(_scores(entries, learner, validation))  # type: ignore[arg-type]
            if on_task is not None:
                on_task(index, run.validation_matrix[-1])
        crash_point("after_task", config.config_hash)
        if not selector.uses_memory or index == count - 1:
            continue  # the last task's memory would never be replayed
        with run.timed("selection"):
            status(f"task {index + 1}/{count} selecting memory", 0)
            run.stored.append(store_task_memory(learner, entries, run.memory, current, index, config))
        crash_point("after_selection", config.config_hash)
    return run


def choose_on_validation(runs: list[StreamRun]) -> int:
    """The run with the best final validation score (the first on ties); the only run when untuned."""
    if len(runs) == 1:
        return 0
    scores = [run.validation_final_accuracy for run in runs]
    if any(score is None for score in scores):
        raise ValueError("tuning needs a validation slice of every task (protocol 2)")
    return int(np.argmax(np.asarray(scores, dtype=float)))


def _scores(entries: CellEntries, learner: Learner, splits: list[EvalSplit]) -> list[float]:
    """The objective's metric on each split, with the learner as it is now."""
    sets = [split.eval_set for split in splits]
    return evaluate_row(
        entries.objective, learner.model, sets, learner.settings.eval_batch_size, learner.device
    )


# -------------------------------------------------------------------------------------------- testing


@dataclass
class TestLog:
    """What the chosen run measured on the test splits."""

    matrix: np.ndarray
    partial: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    shortcut: list[dict[str, Any]] | None = None
    extra_metrics: dict[str, Any] | None = None


def evaluate_on_test(
    run: StreamRun, entries: CellEntries, tests: list[EvalSplit], tasks: list[ExperienceTensors]
) -> TestLog:
    """The run's weights after each task, scored on every test split (rows of the accuracy matrix)."""
    config, learner, objective = run.config, run.learner, entries.objective
    batch_size, device, mode = learner.settings.eval_batch_size, learner.device, learner.settings.replay_mode
    count = len(tests)
    log = TestLog(np.zeros((count, count)))
    chosen_t = [config.token_fraction] if isinstance(config.token_fraction, float) else []
    fractions = sorted({*PARTIAL_FRACTIONS, *chosen_t}, reverse=True)
    orders = token_orders([t.data for t in tests], [t.masks for t in tests], config.seed)
    diagnostic_orders = orders["oracle" if "oracle" in orders else "random"]
    # Shortcut diagnostics (protocol 2) where the objective predicts one class per sample.
    predictor = objective if isinstance(objective, ClassPredictor) and config.protocol >= 2 else None
    if predictor is not None:
        log.shortcut = []

    def evaluate(batch: TokenBatch, task: int) -> float:
        test = tests[task]
        return objective.evaluate(learner.model, batch, test.targets, test.references, batch_size, device)

    for index, snapshot in enumerate(run.snapshots):
        learner.model.load_state_dict(snapshot)
        log.matrix[index] = _scores(entries, learner, tests)
        if config.train.partial_inputs:
            row = partial_row(evaluate, [t.data for t in tests], orders, fractions, mode)
            for order, per_fraction in row.items():
                for fraction, values in per_fraction.items():
                    log.partial.setdefault(order, {}).setdefault(fraction, []).append(values)
        if predictor is not None and log.shortcut is not None:

            def predict(batch: TokenBatch, p: ClassPredictor = predictor) -> torch.Tensor:
                return p.predict(learner.model, batch, batch_size, device)

            row = shortcut_row(
                predict,
                [(t.data, t.targets) for t in tests],
                [task.classes for task in tasks],
                index,
                diagnostic_orders,
                diagnostic_fraction(config.token_fraction),
                mode,
            )
            log.shortcut.append(row)
    sets = [t.eval_set for t in tests]
    log.extra_metrics = final_metrics(objective, learner.model, sets, batch_size, device)
    return log


# --------------------------------------------------------------------------------------------- record


def _attribution(stored: list[StoredTask]) -> dict[str, float] | None:
    """Attribution quality over the stored tasks, each weighted by its stored samples."""
    rows = [(s.quality, s.samples) for s in stored if s.quality is not None]
    if not rows:
        return None
    weights = [samples for _, samples in rows]
    return {key: float(np.average([q[key] for q, _ in rows], weights=weights)) for key in rows[0][0]}


def _tokens_per_sample(
    config: CellConfig, stored: list[StoredTask], tokens: int, uses_memory: bool
) -> int | None:
    """Tokens each stored sample keeps, where that is one number for the whole cell."""
    if not uses_memory:
        return None
    if isinstance(config.token_fraction, float) and all(s.token_fraction is not None for s in stored):
        return kept_token_count(config.token_fraction, tokens)
    return None


def _tuning(config: CellConfig, runs: list[StreamRun], chosen: int) -> dict[str, Any] | None:
    """The record of a ``[tune]`` search: every candidate's settings and validation scores, and the choice."""
    if not config.tune:
        return None
    return {
        "searched": config.tune,
        "chosen": chosen,
        "candidates": [
            {
                "train": {name: getattr(run.config.train, name) for name in config.tune},
                "validation_final_accuracy": run.validation_final_accuracy,
                "validation_matrix": run.validation_matrix,
            }
            for run in runs
        ],
    }


def _finished_result(
    config: CellConfig,
    commit: str,
    entries: CellEntries,
    runs: list[StreamRun],
    chosen: int,
    tested: TestLog,
    started: float,
) -> CellResult:
    run = runs[chosen]
    matrix, memory, stored = tested.matrix, run.memory, run.stored
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
        tokens_per_sample=_tokens_per_sample(config, stored, entries.stream.tokens, uses_memory),
        tokens_per_task=[s.tokens_stored for s in stored],
        token_fraction_per_task=[s.token_fraction for s in stored],
        partial_input_accuracy=tested.partial or None,
        auto_token_fraction_scores=(
            [s.auto_scores for s in stored] if config.token_fraction == AUTO else None
        ),
        attribution=_attribution(stored),
        extra_metrics=tested.extra_metrics,
        metric=entries.objective.metric,
        selection_seconds=sum(r.seconds["selection"] for r in runs),
        training_seconds=sum(r.seconds["training"] for r in runs),
        wall_seconds=time.perf_counter() - started,
        provenance=provenance(run.learner.device, commit),
        validation_matrix=run.validation_matrix or None,
        validation_final_accuracy=run.validation_final_accuracy,
        tuning=_tuning(config, runs, chosen),
        shortcut=tested.shortcut,
        class_order=[list(e.classes) for e in entries.stream.experiences],
        classes_per_task=[s.classes for s in stored] if config.protocol >= 2 else None,
        classes_covered_per_task=[s.classes_covered for s in stored] if config.protocol >= 2 else None,
    )
