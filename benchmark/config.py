"""Frozen configs of a grid cell, and the hash that names its result file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

ParamValue = Any  # a TOML scalar, list or table
AUTO = "auto"  # token_fraction = "auto": t picked per task on held-out training data (benchmark.token_split)
REPLAY_MODES: tuple[str, ...] = ("drop", "mask", "zero")

# The evaluation protocol a cell follows (README, "The protocol"). 1: the first committed results
# (retention base = input bytes only, per-class ties to the lower label, input dropout 0.5 for core
# tokensets and 0 for coresets, no validation slice). 2: the base is what a whole stored sample
# costs (inputs plus label, caption or question), ties drawn by the cell's generator, one input
# dropout default for every method, and a validation slice held out of each task's training data
# (for tuning, ``auto`` and the report's validation choices).
PROTOCOLS: tuple[int, ...] = (1, 2)
CURRENT_PROTOCOL = 2
# ``[tune]``: the training settings a grid may search per cell (chosen on validation, never on test).
TUNABLE_TRAIN_FIELDS: tuple[str, ...] = ("input_dropout", "lr", "weight_decay", "epochs")
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
    # None: the protocol's default (2: ``DEFAULT_INPUT_DROPOUT`` for every method; 1: 0 for coresets,
    # 0.5 for core tokensets)
    input_dropout: float | None = None
    pretrained: bool = True  # False: train from scratch (ablation; docs/design.md: it does not learn)
    backbone_weights: str = ""  # a local timm checkpoint to start from instead of the procedural one
    eval_batch_size: int = 256
    device: str = "auto"  # "auto": CUDA when available, else CPU
    # How partial inputs enter the model: "drop" feeds the kept tokens only; "mask" every position, a
    # dropped one as a learned mask token; "zero" every position, a dropped one as a zero patch (the seed
    # paper's code), with input dropout as channel dropout on patch embeddings (rescaled by 1/(1 − p)).
    replay: str = "drop"
    pretrain_token_dropout: float = 0.0  # the backbone pretrained with this patch-token dropout (weights/)
    partial_inputs: bool = False  # also measure accuracy on partial test inputs after each task (costs time)
    # AdamW's fused kernel where the device has one (CPU, CUDA): one op a step instead of a per-tensor
    # loop; its numbers differ from the loop's in the last bits. None: the protocol's (2: fused; 1: loop).
    fused_optimizer: bool | None = None

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
            (
                self.replay in REPLAY_MODES,
                f"replay must be one of {', '.join(REPLAY_MODES)}, got {self.replay!r}",
            ),
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
    protocol: int = CURRENT_PROTOCOL
    # ``[tune]``: train field → candidate values, each run in full and chosen on validation ({}: none)
    tune: dict[str, list[ParamValue]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol must be one of {', '.join(map(str, PROTOCOLS))}, got {self.protocol!r}"
            )
        if self.tune and self.protocol < 2:
            raise ValueError("[tune] needs protocol 2 (protocol 1 holds out no validation data)")
        for name, candidates in self.tune.items():
            if name not in TUNABLE_TRAIN_FIELDS:
                raise ValueError(
                    f"[tune] {name!r} cannot be tuned; tunable: {', '.join(TUNABLE_TRAIN_FIELDS)}"
                )
            if not isinstance(candidates, list) or not candidates:
                raise ValueError(f"[tune] {name} must be a non-empty list of candidate values")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellConfig:
        """The config of a record; a field the record predates takes the value it was computed with."""
        fields = {**LATER_CELL_FIELDS, **data}
        fields["train"] = TrainConfig(**{**LATER_TRAIN_FIELDS, **fields.get("train", {})})
        return cls(**fields)

    def candidates(self) -> list[CellConfig]:
        """The cell once per combination of its ``[tune]`` values (itself when it tunes nothing)."""
        configs = [self]
        for name, values in self.tune.items():
            configs = [
                replace(config, train=replace(config.train, **{name: value}), tune={})
                for config in configs
                for value in values
            ]
        return [replace(config, tune={}) for config in configs]

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
    "fused_optimizer": None,
}
LATER_CELL_FIELDS: dict[str, ParamValue] = {"protocol": 1, "tune": {}}


# Task parameters added after results were first committed, likewise left out at their older value.
LATER_TASK_PARAMS: dict[str, ParamValue] = {
    "boundary_overlap": 0.0,
    "class_order_seed": None,
    "embed_dim": 64,  # split-shapes' ViT size (issue 21); split-cifar100 has had them from the start
    "depth": 4,
    "num_heads": 4,
}

# Sample selector parameters added later (the options for large pools, issue 22), at the values that
# select exactly as before: left out of the hash too.
LATER_SELECTOR_PARAMS: dict[str, ParamValue] = {
    "partitions": 1,
    "oversample": 2.0,
    "parallel": "auto",
    "optimizer": "lazy",
    "epsilon": 0.01,
    "batch_size": 1,
}


def config_hash(cell: CellConfig) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of the config, grid name excluded.

    The grid name is left out so that the same cell in two grids is one result;
    fields of ``LATER_TRAIN_FIELDS`` at their older-behaviour value are left out
    so that a new option keeps the names of the cells that do not use it.
    """
    payload = without_older_values(cell.to_dict(), LATER_CELL_FIELDS)
    payload.pop("grid")
    payload["train"] = without_older_values(payload["train"], LATER_TRAIN_FIELDS)
    payload["task_params"] = without_older_values(payload["task_params"], LATER_TASK_PARAMS)
    payload["selector_params"] = without_older_values(payload["selector_params"], LATER_SELECTOR_PARAMS)
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def without_older_values(table: dict[str, Any], later: dict[str, ParamValue]) -> dict[str, Any]:
    """``table`` less the fields of ``later`` that hold the value reproducing the older behaviour: a
    record written before a field existed and one that states its older value are the same setting."""
    return {name: value for name, value in table.items() if not (name in later and later[name] == value)}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
