"""Frozen configs of a grid cell, and the hash that names its result file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

ParamValue = Any  # a TOML scalar, list or table
AUTO = "auto"  # token_fraction = "auto": t picked per task on held-out training data (benchmark.token_split)
# A grid's ``equivalence_margin`` where it declares none: a report setting (how results are read), in no cell.
DEFAULT_EQUIVALENCE_MARGIN = 0.02


@dataclass(frozen=True)
class TrainConfig:
    """How every model of a grid is trained: the ``[train]`` table."""

    epochs: int | None = None  # None: each task's own ``epochs`` parameter
    batch_size: int = 32
    replay_batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    input_dropout: float | None = None  # None: 0 for coresets, ``CORE_TOKENSET_INPUT_DROPOUT`` otherwise
    pretrained: bool = True  # False: train from scratch (ablation; DESIGN: it does not learn)
    backbone_weights: str = ""  # a local timm checkpoint to start from instead of the procedural one
    eval_batch_size: int = 256
    device: str = "auto"  # "auto": CUDA when available, else CPU
    # Core tokenset replay: "drop" feeds the kept tokens only, "mask" all positions (mask token for the rest).
    replay: str = "drop"
    pretrain_token_dropout: float = 0.0  # the backbone pretrained with this patch-token dropout (weights/)
    partial_inputs: bool = False  # also measure accuracy on partial test inputs after each task (costs time)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs is None or self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (
                self.replay_batch_size >= 1,
                f"replay_batch_size must be at least 1, got {self.replay_batch_size}",
            ),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be non-negative, got {self.weight_decay}"),
            (
                self.input_dropout is None or 0.0 <= self.input_dropout < 1.0,
                f"input_dropout must be in [0, 1), got {self.input_dropout}",
            ),
            (
                self.device in ("auto", "cpu", "cuda"),
                f"device must be auto, cpu or cuda, got {self.device!r}",
            ),
            (self.replay in ("drop", "mask"), f"replay must be 'drop' or 'mask', got {self.replay!r}"),
            (
                0.0 <= self.pretrain_token_dropout < 1.0,
                f"pretrain_token_dropout must be in [0, 1), got {self.pretrain_token_dropout}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class CellConfig:
    """Everything that determines one cell's result; its hash names the result file."""

    grid: str
    task: str
    task_params: dict[str, ParamValue]
    method: str
    sample_selector: str
    token_selector: str | None
    selector_params: dict[str, ParamValue]
    token_selector_params: dict[str, ParamValue]
    retention: float | None  # None for the bounds that store nothing (none, joint)
    token_fraction: float | str  # t in (0, 1], or AUTO
    seed: int
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellConfig:
        fields = dict(data)
        fields["train"] = TrainConfig(**fields.get("train", {}))
        return cls(**fields)

    @property
    def config_hash(self) -> str:
        return config_hash(self)

    @property
    def label(self) -> str:
        retention = "-" if self.retention is None else f"{self.retention:g}"
        fraction = self.token_fraction if isinstance(self.token_fraction, str) else f"{self.token_fraction:g}"
        return f"{self.task} {self.method} r={retention} t={fraction} seed={self.seed}"


# Fields added after results were first committed, with the value that reproduces the older behaviour:
# left out of the hash at that value, so that adding an option does not rename every finished cell.
LATER_TRAIN_FIELDS: dict[str, ParamValue] = {
    "replay": "drop",
    "pretrain_token_dropout": 0.0,
    "partial_inputs": False,
}


# Task parameters added after results were first committed, likewise left out at their older value.
LATER_TASK_PARAMS: dict[str, ParamValue] = {"boundary_overlap": 0.0}


def config_hash(cell: CellConfig) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of the config, grid name excluded.

    The grid name is left out so that the same cell in two grids is one result;
    fields of ``LATER_TRAIN_FIELDS`` at their older-behaviour value are left out
    so that a new option keeps the names of the cells that do not use it.
    """
    payload = cell.to_dict()
    payload.pop("grid")
    for name, value in LATER_TRAIN_FIELDS.items():
        if payload["train"].get(name) == value:
            del payload["train"][name]
    for name, value in LATER_TASK_PARAMS.items():
        if payload["task_params"].get(name) == value:
            del payload["task_params"][name]
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
