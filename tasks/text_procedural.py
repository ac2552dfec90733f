"""Procedural sentences with ground truth: a fixed vocabulary, a few words of which decide the class.

A sentence is a run of clauses ("the velo mira rests near a tuka .") made of
function words and filler words, cut to its length; a few of its noun phrases
are the *class phrase* instead: a class adjective and a class noun. A class is
one (adjective, noun) pair, as a split-shapes class is a (colour, shape) pair:
the ten task classes and the fifteen pretraining classes are disjoint pairs of
the same eight class adjectives and eight class nouns, which never appear as
filler. Only the class phrases say the class: their words are the sentence's
relevance mask. So a backbone pretrained on this text has seen every word, and
learned that class words decide, but has never seen a task's class.

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
CLASS_WORDS = 8  # class adjectives, and as many class nouns: 64 possible classes
VOCABULARY_SEED = 2024
WORDS_PER_PHRASE = 2  # a class phrase: its adjective and its noun

# The ten task classes as (class adjective, class noun) indices: split-shapes' (colour, shape) pairs.
TASK_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 0), (2, 1), (1, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (0, 1), (1, 0),
)  # fmt: skip


def pretrain_pairs(count: int = 15, seed: int = 12345) -> tuple[tuple[int, int], ...]:
    """``count`` (adjective, noun) classes that no task uses, fixed by ``seed``."""
    unused = [pair for pair in product(range(CLASS_WORDS), repeat=2) if pair not in TASK_PAIRS]
    order = np.random.default_rng(seed).permutation(len(unused))[:count]
    return tuple(unused[i] for i in sorted(order))


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
    class_adjectives: np.ndarray  # int64 [CLASS_WORDS]: words that only ever appear in a class phrase
    class_nouns: np.ndarray

    def phrases(self, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
        """int64 [classes, 2]: the (adjective id, noun id) of each class."""
        return np.array([[self.class_adjectives[a], self.class_nouns[n]] for a, n in pairs], dtype=np.int64)

    @property
    def class_words(self) -> np.ndarray:
        return np.concatenate([self.class_adjectives, self.class_nouns])

    def decode(self, ids: np.ndarray) -> str:
        return " ".join(self.words[i] for i in ids if i != PAD_ID)


@cache
def lexicon() -> Lexicon:
    """The fixed vocabulary: special tokens, function words, then pseudo-words for each group."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = ["".join(pair) for pair in product(consonants, vowels)]
    rng = np.random.default_rng(VOCABULARY_SEED)
    needed = FILLER_NOUNS + FILLER_ADJECTIVES + FILLER_VERBS + 2 * CLASS_WORDS
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
    class_adjectives, class_nouns = span(CLASS_WORDS), span(CLASS_WORDS)
    return Lexicon(
        words, nouns, adjectives, verbs, determiners, prepositions, connectives, int(punctuation[0]),
        class_adjectives, class_nouns,
    )  # fmt: skip


@dataclass(frozen=True)
class Sentences:
    ids: np.ndarray  # int64 [n, max_length], padded with 0
    labels: np.ndarray  # int64 [n]
    masks: np.ndarray  # bool [n, max_length]: the words of the class phrases
    lengths: np.ndarray  # int64 [n]


def most_phrases(min_length: int) -> int:
    """The class phrases a sentence of ``min_length`` words surely has room for (a clause of at most 12
    words holds two noun phrases)."""
    return 2 * (min_length // 12)


def draw_sentences(
    phrases: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    *,
    min_length: int,
    max_length: int,
    phrases_per_sentence: tuple[int, int],
) -> Sentences:
    """``per_class`` sentences of each class (class-major; ``phrases``: [classes, 2] adjective and noun
    ids): lengths uniform in [min, max], and a number of class phrases uniform in
    ``phrases_per_sentence`` (inclusive), each in place of a noun phrase's adjective and noun."""
    words = lexicon()
    classes = len(phrases)
    n = classes * per_class
    ids = np.full((n, max_length), PAD_ID, dtype=np.int64)
    masks = np.zeros((n, max_length), dtype=bool)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    lengths = rng.integers(min_length, max_length + 1, size=n)
    low, high = phrases_per_sentence
    for i, (label, length) in enumerate(zip(labels, lengths, strict=True)):
        sentence, slots = _clauses(words, int(length), rng)
        count = min(int(rng.integers(low, high + 1)), len(slots))
        chosen = slots[rng.choice(len(slots), size=count, replace=False)]
        sentence[chosen] = phrases[label][None, :]
        ids[i, :length] = sentence
        masks[i, chosen.ravel()] = True
    return Sentences(ids, labels, masks, lengths.astype(np.int64))


def _clauses(words: Lexicon, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Filler clauses cut to ``length`` words, and the (adjective, noun) positions of each whole noun
    phrase ([k, 2]).

    A clause: determiner, adjective, noun, verb, determiner, adjective, noun, then (preposition,
    determiner, adjective, noun), then a full stop or a connective.
    """
    out: list[int] = []
    phrases: list[tuple[int, int]] = []

    def noun_phrase() -> None:
        out.append(int(rng.choice(words.determiners)))
        phrases.append((len(out), len(out) + 1))
        out.append(int(rng.choice(words.adjectives)))
        out.append(int(rng.choice(words.nouns)))

    while len(out) < length:
        noun_phrase()
        out.append(int(rng.choice(words.verbs)))
        noun_phrase()
        if rng.random() < 0.5:
            out.append(int(rng.choice(words.prepositions)))
            noun_phrase()
        out.append(words.full_stop if rng.random() < 0.6 else int(rng.choice(words.connectives)))
    whole = np.asarray([pair for pair in phrases if pair[1] < length], dtype=np.int64).reshape(-1, 2)
    return np.asarray(out[:length], dtype=np.int64), whole
