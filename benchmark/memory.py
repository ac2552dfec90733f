"""The replay memory: stores what the selectors chose and counts its bytes exactly.

Bytes are counted from the arrays actually held (``ndarray.nbytes``), never
estimated: a whole sample costs its pixels (uint8) plus its label (uint16); a
kept token costs its patch's pixels plus its position (uint16). A text input
(a VQA question) is kept whole, its token ids as uint16; a sequence target (a
caption) is stored like a label, uint16 per token. A sample that
keeps every token is stored whole, without positions, so a core tokenset at
token fraction 1 is exactly the coreset (docs/design.md, "Memory is bytes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.contracts import TokenBatch

LABEL_DTYPE = np.uint16
POSITION_DTYPE = np.uint16


def kept_token_count(token_fraction: float, tokens: int) -> int:
    """⌈t · tokens⌉ tokens per stored sample (at least one)."""
    if not 0.0 < token_fraction <= 1.0:
        raise ValueError(f"token fraction must be in (0, 1], got {token_fraction}")
    return max(1, min(tokens, math.ceil(token_fraction * tokens - 1e-9)))


@dataclass(frozen=True)
class ByteCosts:
    """What storing tokens of one sample costs: the one byte formula of the memory.

    A whole sample costs its pixels plus its per-sample ids (label or target
    sequence, and text input, uint16 each); a sample keeping fewer tokens pays
    each kept token's pixels plus its position (uint16), since a whole sample
    stores no positions.
    """

    tokens: int  # P: tokens of a whole sample
    patch_bytes: int  # pixels of one token
    sample_bytes: int  # per stored sample: label (or target sequence) and text input
    position_bytes: int = np.dtype(POSITION_DTYPE).itemsize  # the position id of a kept token
    reserve_bytes: int = 0  # kept back for a ragged memory's block headers (single-stage selection)

    @classmethod
    def for_samples(
        cls,
        tokens: int,
        patch_bytes: int,
        text_tokens: int = 0,
        label_tokens: int = 1,
        reserve_bytes: int = 0,
    ) -> ByteCosts:
        """The costs of a task's samples: ``label_tokens`` target ids and ``text_tokens`` input ids each."""
        sample_bytes = (label_tokens + text_tokens) * np.dtype(LABEL_DTYPE).itemsize
        return cls(tokens, patch_bytes, sample_bytes, reserve_bytes=reserve_bytes)

    def of(self, kept: int) -> int:
        """Bytes of one stored sample keeping ``kept`` tokens."""
        if kept == self.tokens:
            return self.tokens * self.patch_bytes + self.sample_bytes
        return kept * (self.patch_bytes + self.position_bytes) + self.sample_bytes


def stored_sample_bytes(
    kept_tokens: int, tokens: int, patch_bytes: int, text_tokens: int = 0, label_tokens: int = 1
) -> int:
    """Bytes one stored sample occupies in the buffer (text and label ids at uint16 each)."""
    return ByteCosts.for_samples(tokens, patch_bytes, text_tokens, label_tokens).of(kept_tokens)


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
class StoredBlock:
    """Samples of one task that keep the same number of tokens each."""

    patches: np.ndarray  # uint8 [k, K, C·p·p]
    positions: np.ndarray | None  # uint16 [k, K], None when every token is kept
    labels: np.ndarray  # uint16 [k] (a class) or [k, L] (a sequence target)
    text: np.ndarray | None = None  # uint16 [k, L]: the text input, kept whole

    @property
    def nbytes(self) -> int:
        held = self.patches.nbytes + self.labels.nbytes
        held += 0 if self.text is None else self.text.nbytes
        return held + (0 if self.positions is None else self.positions.nbytes)

    @property
    def tokens_stored(self) -> int:
        return int(self.patches.shape[0] * self.patches.shape[1])

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MemoryEntry:
    """What memory keeps of one finished task: one block, or one per token count (ragged selections).

    A ragged entry also stores, per block, its sample count and tokens per
    sample (two uint16, ``BLOCK_HEADER_BYTES``), which are counted.
    """

    task_index: int
    blocks: tuple[StoredBlock, ...]
    bytes_allowed: int

    @property
    def nbytes(self) -> int:
        headers = BLOCK_HEADER_BYTES * len(self.blocks) if len(self.blocks) > 1 else 0
        return sum(block.nbytes for block in self.blocks) + headers

    @property
    def tokens_stored(self) -> int:
        return sum(block.tokens_stored for block in self.blocks)

    @property
    def patches(self) -> np.ndarray:
        """The single block's patches (a ragged entry has no one array)."""
        return self._single().patches

    @property
    def positions(self) -> np.ndarray | None:
        return self._single().positions

    @property
    def labels(self) -> np.ndarray:
        return self._single().labels

    def _single(self) -> StoredBlock:
        if len(self.blocks) != 1:
            raise ValueError(f"memory entry of task {self.task_index} holds {len(self.blocks)} blocks")
        return self.blocks[0]

    def __len__(self) -> int:
        return sum(len(block) for block in self.blocks)


BLOCK_HEADER_BYTES = 2 * np.dtype(POSITION_DTYPE).itemsize


@dataclass(frozen=True)
class ReplaySet:
    """Stored samples ready for replay: one TokenBatch and targets per block of equal token count."""

    blocks: tuple[tuple[TokenBatch, torch.Tensor], ...]

    @property
    def offsets(self) -> torch.Tensor:
        sizes = torch.tensor([len(batch) for batch, _ in self.blocks])
        return torch.cumsum(sizes, 0) - sizes

    def __len__(self) -> int:
        return sum(len(batch) for batch, _ in self.blocks)

    def draw(self, pick: torch.Tensor) -> list[tuple[TokenBatch, torch.Tensor]]:
        """The samples at global indices ``pick``, grouped by block (one batch per block drawn from)."""
        if len(self.blocks) == 1:
            batch, targets = self.blocks[0]
            return [(batch.take(pick), targets[pick])]
        owner = torch.bucketize(pick, self.offsets, right=True) - 1
        drawn = []
        for index, (batch, targets) in enumerate(self.blocks):
            rows = pick[owner == index] - self.offsets[index]
            if len(rows):
                drawn.append((batch.take(rows), targets[rows]))
        return drawn

    def whole(self) -> tuple[TokenBatch, torch.Tensor] | None:
        """Every stored sample as one batch when all keep the same tokens (None otherwise)."""
        if len(self.blocks) == 1:
            return self.blocks[0]
        return None


class MemoryBuffer:
    """Per-task entries within their byte budgets; replays samples across all of them."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.entries: list[MemoryEntry] = []

    def block(
        self,
        patches: np.ndarray,
        positions: np.ndarray | None,
        labels: np.ndarray,
        text: np.ndarray | None = None,
    ) -> StoredBlock:
        """Samples that keep the same tokens, as they are stored (checked, ids as uint16)."""
        if patches.dtype != np.uint8 or patches.ndim != 3:
            raise ValueError(f"patches must be uint8 [k, K, d], got {patches.dtype} {patches.shape}")
        kept = patches.shape[1]
        if positions is not None and kept == self.tokens:
            positions = None  # every token kept: stored whole, positions implied
        if positions is None and kept != self.tokens:
            raise ValueError(f"{kept} of {self.tokens} tokens kept but no positions given")
        return StoredBlock(
            patches=np.ascontiguousarray(patches),
            positions=None if positions is None else np.ascontiguousarray(positions, dtype=POSITION_DTYPE),
            labels=_as_stored_ids(labels, "labels"),
            text=None if text is None else _as_stored_ids(text, "text"),
        )

    def add(
        self,
        task_index: int,
        patches: np.ndarray,
        positions: np.ndarray | None,
        labels: np.ndarray,
        bytes_allowed: int,
        text: np.ndarray | None = None,
    ) -> MemoryEntry:
        """Store one task's samples, each keeping the same tokens."""
        return self.add_blocks(task_index, [self.block(patches, positions, labels, text)], bytes_allowed)

    def add_blocks(self, task_index: int, blocks: list[StoredBlock], bytes_allowed: int) -> MemoryEntry:
        """Store one task's samples as blocks of equal token count; refuse it over its byte budget."""
        entry = MemoryEntry(
            task_index, tuple(b for b in blocks if len(b)) or tuple(blocks[:1]), bytes_allowed
        )
        if entry.nbytes > bytes_allowed:
            raise ValueError(
                f"memory for task {task_index} holds {entry.nbytes} bytes > {bytes_allowed} allowed"
            )
        has_text = {b.text is not None for e in [*self.entries, entry] for b in e.blocks if len(b)}
        if len(has_text) > 1:
            raise ValueError("some memory entries hold a text input and others do not")
        self.entries.append(entry)
        return entry

    @property
    def bytes_used(self) -> int:
        return sum(entry.nbytes for entry in self.entries)

    @property
    def bytes_allowed(self) -> int:
        return sum(entry.bytes_allowed for entry in self.entries)

    def __len__(self) -> int:
        return sum(len(entry) for entry in self.entries)

    def replay_set(self) -> ReplaySet:
        """Every stored sample, grouped by tokens kept per sample (in order of first appearance)."""
        groups: dict[int, list[StoredBlock]] = {}
        for entry in self.entries:
            for block in entry.blocks:
                if len(block):
                    groups.setdefault(block.patches.shape[1], []).append(block)
        return ReplaySet(tuple(self._as_batch(blocks) for blocks in groups.values()))

    def tensors(self) -> tuple[TokenBatch, torch.Tensor]:
        """All stored samples as one TokenBatch (text included) and int64 labels; every sample must keep
        the same number of tokens (``replay_set`` serves the ragged case)."""
        whole = self.replay_set().whole()
        if whole is None:
            raise ValueError("stored samples keep different numbers of tokens: use replay_set()")
        return whole

    def _as_batch(self, blocks: list[StoredBlock]) -> tuple[TokenBatch, torch.Tensor]:
        patches = torch.from_numpy(np.concatenate([b.patches for b in blocks]))
        positions = torch.from_numpy(
            np.concatenate(
                [
                    np.broadcast_to(np.arange(self.tokens), (len(b), self.tokens))
                    if b.positions is None
                    else b.positions.astype(np.int64)
                    for b in blocks
                ]
            ).astype(np.int64)
        )
        labels = torch.from_numpy(np.concatenate([b.labels for b in blocks]).astype(np.int64))
        text = None
        if blocks[0].text is not None:
            text = torch.from_numpy(
                np.concatenate([b.text for b in blocks if b.text is not None]).astype(np.int64)
            )
        return TokenBatch(patches, positions, text), labels


def _as_stored_ids(values: np.ndarray, name: str) -> np.ndarray:
    """Ids as uint16, refusing what would wrap around."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > np.iinfo(LABEL_DTYPE).max):
        raise ValueError(f"{name} ids must lie in [0, {np.iinfo(LABEL_DTYPE).max}] to be stored as uint16")
    return np.ascontiguousarray(values, dtype=LABEL_DTYPE)
