"""What a cell trains: its registry entries, its model (from the pretrained backbone) and its optimizer.

The training recipe's defaults live here: input dropout by protocol (protocol 2:
one default for every method; protocol 1: 0.5 for core tokensets and 0 for
coresets, as the first committed results ran) and epochs by task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark import registry
from benchmark.checkpoints import fit_to_model, read_checkpoint
from benchmark.config import CellConfig
from benchmark.contracts import SampleSelector, TaskStream, TokenBatch, TokenSelector
from benchmark.memory import MemoryBuffer
from benchmark.objectives import Objective
from benchmark.pretrain import default_recipe, load_backbone_weights
from benchmark.train import ContinualModel, TrainSettings, train_experience

# Protocol 2: random input dropout of new data for every method when the grid does not set it. Given to
# core tokensets only (protocol 1), it decided the verdict at 2–10% retention by itself (README, "The
# protocol"); conclusions tune it per method on validation data (``[tune] input_dropout``).
DEFAULT_INPUT_DROPOUT = 0.0
# Protocol 1: core tokensets trained with 0.5 (the seed paper's code drops patch embeddings at p = 0.9).
PROTOCOL_1_CORE_TOKENSET_INPUT_DROPOUT = 0.5

FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel

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
    if config.protocol == 1:
        return 0.0 if config.token_selector is None else PROTOCOL_1_CORE_TOKENSET_INPUT_DROPOUT
    return DEFAULT_INPUT_DROPOUT


def fused_optimizer_for(config: CellConfig) -> bool:
    """Whether AdamW uses its fused kernel (where the device has one): the grid's, or the protocol's."""
    if config.train.fused_optimizer is not None:
        return config.train.fused_optimizer
    return config.protocol >= 2


def epochs_for(config: CellConfig, stream: TaskStream) -> int:
    """``[train] epochs`` when the grid sets it, else the task's own."""
    return config.train.epochs if config.train.epochs is not None else stream.epochs


def total_epochs(config: CellConfig, stream: TaskStream) -> int:
    """Epochs a cell trains in all: every task, for each of its ``[tune]`` candidates."""
    return sum(len(stream.experiences) * epochs_for(c, stream) for c in config.candidates())


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

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the model's weights (on the CPU), to evaluate it later as it is now."""
        return {name: value.detach().to("cpu", copy=True) for name, value in self.model.state_dict().items()}


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
    fused = fused_optimizer_for(config) and device.type in FUSED_OPTIMIZER_DEVICES
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay, fused=fused or None
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


def train_task(
    learner: Learner,
    data: Sequence[tuple[TokenBatch, torch.Tensor]],
    memory: MemoryBuffer,
    generator: torch.Generator,
    on_epoch: Callable[[str], None],
) -> None:
    """One task's training on ``data`` (its own samples, or every task's so far for the joint bound)."""
    train_experience(
        learner.model,
        learner.optimizer,
        concatenate([batch for batch, _ in data]),
        torch.cat([targets for _, targets in data]),
        memory.replay_set() if len(memory) else None,
        learner.settings,
        generator,
        learner.device,
        on_epoch,
    )


def concatenate(batches: Sequence[TokenBatch]) -> TokenBatch:
    """One batch of every sample of ``batches`` (whole samples, as the joint bound trains on)."""
    texts = [b.text for b in batches]
    return TokenBatch(
        torch.cat([b.patches for b in batches]),
        torch.cat([b.positions for b in batches]),
        None if texts[0] is None else torch.cat([t for t in texts if t is not None]),
    )
