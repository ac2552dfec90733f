"""The replay memory: stores what the selectors chose and counts its bytes exactly.

Bytes are counted from the arrays actually held (``ndarray.nbytes``), never
estimated: a whole sample costs its pixels (uint8) plus its label (uint16); a
kept token costs its patch's pixels plus its position (uint16). A text input
(a VQA question) is kept whole, its token ids as uint16; a sequence target (a
caption) is stored like a label, uint16 per token. A sample that
keeps every token is stored whole, without positions, so a core tokenset at
token fraction 1 is exactly the coreset (DESIGN, "Memory is bytes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.model import TokenBatch

LABEL_DTYPE = np.uint16
POSITION_DTYPE = np.uint16


def kept_token_count(token_fraction: float, tokens: int) -> int:
    """⌈t · tokens⌉ tokens per stored sample (at least one)."""
    if not 0.0 < token_fraction <= 1.0:
        raise ValueError(f"token fraction must be in (0, 1], got {token_fraction}")
    return max(1, min(tokens, math.ceil(token_fraction * tokens - 1e-9)))


def stored_sample_bytes(
    kept_tokens: int, tokens: int, patch_bytes: int, text_tokens: int = 0, label_tokens: int = 1
) -> int:
    """Bytes one stored sample occupies in the buffer (text and label ids at uint16 each)."""
    extra = (label_tokens + text_tokens) * np.dtype(LABEL_DTYPE).itemsize
    if kept_tokens == tokens:
        return tokens * patch_bytes + extra
    return kept_tokens * (patch_bytes + np.dtype(POSITION_DTYPE).itemsize) + extra


def retention_budget_bytes(retention: float, train_bytes: int) -> int:
    """The byte budget of one finished task: ⌊r × bytes of its training inputs⌋."""
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"retention must be in (0, 1], got {retention}")
    return math.floor(retention * train_bytes + 1e-9)


def samples_within_budget(
    budget_bytes: int,
    kept_tokens: int,
    tokens: int,
    patch_bytes: int,
    text_tokens: int = 0,
    label_tokens: int = 1,
) -> int:
    return budget_bytes // stored_sample_bytes(kept_tokens, tokens, patch_bytes, text_tokens, label_tokens)


@dataclass(frozen=True)
class MemoryEntry:
    """What memory keeps of one finished task."""

    task_index: int
    patches: np.ndarray  # uint8 [k, K, C·p·p]
    positions: np.ndarray | None  # uint16 [k, K], None when every token is kept
    labels: np.ndarray  # uint16 [k] (a class) or [k, L] (a sequence target)
    bytes_allowed: int
    text: np.ndarray | None = None  # uint16 [k, L]: the text input, kept whole

    @property
    def nbytes(self) -> int:
        held = self.patches.nbytes + self.labels.nbytes
        held += 0 if self.text is None else self.text.nbytes
        return held + (0 if self.positions is None else self.positions.nbytes)

    def __len__(self) -> int:
        return len(self.labels)


class MemoryBuffer:
    """Per-task entries within their byte budgets; draws replay batches across all of them."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.entries: list[MemoryEntry] = []

    def add(
        self,
        task_index: int,
        patches: np.ndarray,
        positions: np.ndarray | None,
        labels: np.ndarray,
        bytes_allowed: int,
        text: np.ndarray | None = None,
    ) -> MemoryEntry:
        if patches.dtype != np.uint8 or patches.ndim != 3:
            raise ValueError(f"patches must be uint8 [k, K, d], got {patches.dtype} {patches.shape}")
        kept = patches.shape[1]
        if positions is not None and kept == self.tokens:
            positions = None  # every token kept: stored whole, positions implied
        if positions is None and kept != self.tokens:
            raise ValueError(f"{kept} of {self.tokens} tokens kept but no positions given")
        entry = MemoryEntry(
            task_index=task_index,
            patches=np.ascontiguousarray(patches),
            positions=None if positions is None else np.ascontiguousarray(positions, dtype=POSITION_DTYPE),
            labels=_as_stored_ids(labels, "labels"),
            bytes_allowed=bytes_allowed,
            text=None if text is None else _as_stored_ids(text, "text"),
        )
        if entry.nbytes > bytes_allowed:
            raise ValueError(
                f"memory for task {task_index} holds {entry.nbytes} bytes > {bytes_allowed} allowed"
            )
        if self.entries and len(entry) and entry.patches.shape[1] != self.kept_tokens:
            raise ValueError("every memory entry must keep the same number of tokens per sample")
        self.entries.append(entry)
        return entry

    @property
    def kept_tokens(self) -> int | None:
        stored = [e for e in self.entries if len(e)]
        return stored[0].patches.shape[1] if stored else None

    @property
    def bytes_used(self) -> int:
        return sum(entry.nbytes for entry in self.entries)

    @property
    def bytes_allowed(self) -> int:
        return sum(entry.bytes_allowed for entry in self.entries)

    def __len__(self) -> int:
        return sum(len(entry) for entry in self.entries)

    def tensors(self) -> tuple[TokenBatch, torch.Tensor]:
        """All stored samples as one TokenBatch (text included) and int64 labels, for replay."""
        stored = [e for e in self.entries if len(e)]
        patches = torch.from_numpy(np.concatenate([e.patches for e in stored]))
        positions = torch.from_numpy(
            np.concatenate(
                [
                    np.broadcast_to(np.arange(self.tokens), (len(e), self.tokens))
                    if e.positions is None
                    else e.positions.astype(np.int64)
                    for e in stored
                ]
            ).astype(np.int64)
        )
        labels = torch.from_numpy(np.concatenate([e.labels for e in stored]).astype(np.int64))
        texts = [e.text for e in stored]
        text = None
        if any(t is not None for t in texts):
            if any(t is None for t in texts):
                raise ValueError("some memory entries hold a text input and others do not")
            text = torch.from_numpy(np.concatenate(texts).astype(np.int64))
        return TokenBatch(patches, positions, text), labels


def _as_stored_ids(values: np.ndarray, name: str) -> np.ndarray:
    """Ids as uint16, refusing what would wrap around."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > np.iinfo(LABEL_DTYPE).max):
        raise ValueError(f"{name} ids must lie in [0, {np.iinfo(LABEL_DTYPE).max}] to be stored as uint16")
    return np.ascontiguousarray(values, dtype=LABEL_DTYPE)
