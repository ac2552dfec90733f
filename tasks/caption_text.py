"""Caption text as the caption tasks store it: lower-case words, token ids with bos/eos, 0 = padding.

Every caption task uses the same four special tokens at the same ids
(``benchmark.contracts``), so a model and a metric can tell them apart
without knowing the task.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from benchmark.contracts import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(caption: str) -> list[str]:
    """Lower-case word tokens of a caption; punctuation is dropped (as COCO evaluation's PTB step does)."""
    return _WORD.findall(caption.lower())


def build_vocabulary(captions: Iterable[str], min_count: int = 1) -> tuple[str, ...]:
    """Special tokens, then every word seen at least ``min_count`` times, most frequent first (ties: a–z)."""
    counts = Counter(word for caption in captions for word in words(caption))
    kept = sorted(
        (word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w)
    )
    return SPECIAL_TOKENS + tuple(w for w in kept if w not in SPECIAL_TOKENS)


def encode_captions(captions: Sequence[str], vocabulary: Sequence[str], max_length: int) -> np.ndarray:
    """int64 [n, max_length]: bos, word ids (unknown → <unk>), eos, then 0; too long → cut before eos."""
    if max_length < 3:
        raise ValueError(f"max_length must leave room for bos, one word and eos, got {max_length}")
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = np.full((len(captions), max_length), PAD_ID, dtype=np.int64)
    for row, caption in enumerate(captions):
        tokens = [index.get(word, UNK_ID) for word in words(caption)][: max_length - 2]
        ids[row, : len(tokens) + 2] = [BOS_ID, *tokens, EOS_ID]
    return ids
