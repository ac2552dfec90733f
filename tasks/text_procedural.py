"""Procedural sentences with ground truth: a fixed vocabulary, a few words of which decide the class.

A sentence is a run of clauses ("the velo mira rests near a tuka .") made of
function words and filler words that no class owns, cut to its length; a few
of its noun slots hold *keywords* of its class instead. Only the keywords say
the class: their positions are the sentence's relevance mask. Task classes and
pretraining classes own disjoint keywords, and neither set ever appears as
filler, so a backbone pretrained on this text has seen the grammar and the
filler but no keyword of a task.

Words are procedural pseudo-words (consonant–vowel syllables) fixed by a seed,
so the vocabulary is the same on every machine; ids 0–3 are the suite's
special tokens (0 = padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import product

import numpy as np

from benchmark.contracts import PAD_ID, SPECIAL_TOKENS

DETERMINERS = ("the", "a", "this", "that", "every", "some", "each", "no")
PREPOSITIONS = ("in", "on", "near", "under", "with", "from", "over", "behind")
CONNECTIVES = ("and", "but", "while", "so")
PUNCTUATION = (".", ",")
FUNCTION_WORDS = DETERMINERS + PREPOSITIONS + CONNECTIVES + PUNCTUATION

FILLER_NOUNS = 120
FILLER_ADJECTIVES = 40
FILLER_VERBS = 40
KEYWORDS_PER_CLASS = 4
TASK_CLASSES = 10
PRETRAIN_CLASSES = 15
VOCABULARY_SEED = 2024


@dataclass(frozen=True)
class Lexicon:
    """The vocabulary (index = word id) and the ids of each word group."""

    words: tuple[str, ...]
    nouns: np.ndarray  # int64 filler noun ids
    adjectives: np.ndarray
    verbs: np.ndarray
    determiners: np.ndarray
    prepositions: np.ndarray
    connectives: np.ndarray
    full_stop: int
    task_keywords: np.ndarray  # int64 [TASK_CLASSES, KEYWORDS_PER_CLASS]
    pretrain_keywords: np.ndarray  # int64 [PRETRAIN_CLASSES, KEYWORDS_PER_CLASS]

    def decode(self, ids: np.ndarray) -> str:
        return " ".join(self.words[i] for i in ids if i != PAD_ID)


@cache
def lexicon() -> Lexicon:
    """The fixed vocabulary: special tokens, function words, then pseudo-words for each group."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = ["".join(pair) for pair in product(consonants, vowels)]
    rng = np.random.default_rng(VOCABULARY_SEED)
    needed = (
        FILLER_NOUNS
        + FILLER_ADJECTIVES
        + FILLER_VERBS
        + (TASK_CLASSES + PRETRAIN_CLASSES) * KEYWORDS_PER_CLASS
    )
    pseudo: list[str] = []
    seen = set(FUNCTION_WORDS)
    while len(pseudo) < needed:
        word = "".join(syllables[i] for i in rng.integers(len(syllables), size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            pseudo.append(word)
    words = (*SPECIAL_TOKENS, *FUNCTION_WORDS, *pseudo)
    start = len(SPECIAL_TOKENS)

    def span(count: int) -> np.ndarray:
        nonlocal start
        ids = np.arange(start, start + count, dtype=np.int64)
        start += count
        return ids

    determiners, prepositions = span(len(DETERMINERS)), span(len(PREPOSITIONS))
    connectives, punctuation = span(len(CONNECTIVES)), span(len(PUNCTUATION))
    nouns, adjectives, verbs = span(FILLER_NOUNS), span(FILLER_ADJECTIVES), span(FILLER_VERBS)
    task = span(TASK_CLASSES * KEYWORDS_PER_CLASS).reshape(TASK_CLASSES, KEYWORDS_PER_CLASS)
    pretrain = span(PRETRAIN_CLASSES * KEYWORDS_PER_CLASS).reshape(PRETRAIN_CLASSES, KEYWORDS_PER_CLASS)
    return Lexicon(
        words, nouns, adjectives, verbs, determiners, prepositions, connectives, int(punctuation[0]),
        task, pretrain,
    )  # fmt: skip


@dataclass(frozen=True)
class Sentences:
    ids: np.ndarray  # int64 [n, max_length], padded with 0
    labels: np.ndarray  # int64 [n]
    masks: np.ndarray  # bool [n, max_length]: the keyword positions
    lengths: np.ndarray  # int64 [n]


def draw_sentences(
    keywords: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    *,
    min_length: int,
    max_length: int,
    keywords_per_sentence: tuple[int, int],
) -> Sentences:
    """``per_class`` sentences of each class (class-major): lengths uniform in [min, max], and a number of
    keywords of the class uniform in ``keywords_per_sentence`` (inclusive) put in noun slots."""
    words = lexicon()
    classes = len(keywords)
    n = classes * per_class
    ids = np.full((n, max_length), PAD_ID, dtype=np.int64)
    masks = np.zeros((n, max_length), dtype=bool)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    lengths = rng.integers(min_length, max_length + 1, size=n)
    low, high = keywords_per_sentence
    for i, (label, length) in enumerate(zip(labels, lengths, strict=True)):
        sentence, noun_slots = _clauses(words, int(length), rng)
        count = min(int(rng.integers(low, high + 1)), len(noun_slots))
        slots = np.sort(rng.choice(noun_slots, size=count, replace=False))
        sentence[slots] = rng.choice(keywords[label], size=count)
        ids[i, :length] = sentence
        masks[i, slots] = True
    return Sentences(ids, labels, masks, lengths.astype(np.int64))


def _clauses(words: Lexicon, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Filler clauses cut to ``length`` words, and the positions of their nouns.

    A clause: determiner, (adjective), noun, verb, determiner, (adjective), noun, then (preposition,
    determiner, noun), then a full stop or a connective.
    """
    out: list[int] = []
    nouns: list[int] = []

    def noun_phrase() -> None:
        out.append(int(rng.choice(words.determiners)))
        if rng.random() < 0.5:
            out.append(int(rng.choice(words.adjectives)))
        nouns.append(len(out))
        out.append(int(rng.choice(words.nouns)))

    while len(out) < length:
        noun_phrase()
        out.append(int(rng.choice(words.verbs)))
        noun_phrase()
        if rng.random() < 0.5:
            out.append(int(rng.choice(words.prepositions)))
            noun_phrase()
        out.append(words.full_stop if rng.random() < 0.6 else int(rng.choice(words.connectives)))
    slots = np.asarray([slot for slot in nouns if slot < length], dtype=np.int64)
    return np.asarray(out[:length], dtype=np.int64), slots
