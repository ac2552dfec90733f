"""clevr: a user's local CLEVR v1.0 (Johnson et al., CVPR 2017), split into tasks by question type.

Layout read (the release's own)::

    <root>/questions/CLEVR_train_questions.json   {"questions": [{"image_filename", "question", "answer",
    <root>/questions/CLEVR_val_questions.json        "question_family_index", "program", ...}, ...]}
    <root>/images/train/<image_filename>            PNG (the release's are 480×320 RGBA)
    <root>/images/val/<image_filename>

The root is the ``root`` parameter or ``$CLEVR_ROOT``. Training questions come
from ``train``, test questions from ``val`` (the release's test split has no
answers). Tasks, in order, by the last function of a question's program (the
answer's function; every train and val question of the release has a program):

1. attribute: ``query_color``, ``query_shape``, ``query_material``, ``query_size``;
2. counting: ``count``;
3. existence: ``exist``;
4. comparison: ``equal_integer``, ``less_than``, ``greater_than``, ``equal_color`` / ``_shape`` /
   ``_material`` / ``_size``.

A question without a program (a hand-made file) is typed by its answer: a
number is counting, yes/no with a comparing word ("same", "equal", "more",
"fewer", "greater", "less", "than") is comparison, other yes/no is existence,
anything else is attribute. ``question_family_index`` is not used: in the
release the families of one type are not contiguous ranges and their order is
not documented.

Questions are lower-cased and split into words and punctuation marks; the
vocabulary is ``<pad>``, ``<unk>`` and the training words, sorted; questions are
padded (or cut) to ``question_length`` words, by default the longest training
question. The answers are the training answers, sorted, then ``<unk>``: a val
answer never seen in training gets ``<unk>``'s id, which no training sample
has, so it counts as a miss. Images are resized to a square of
``image_size`` (bicubic, aspect not kept, as FiLM and MAC resize CLEVR); each
file is read once per split. A type with no training question is no task.

At the defaults (2000 training and 500 test questions per type) a build reads
about 10 000 PNGs, and json loads the whole training questions file (the
release's holds 699 989 questions) into memory.

The backbone is pretrained on "shapes-15" at (image_size, patch_size); the
committed weights are for 32 and 8, the defaults. Any other pair names a new
pretraining recipe, whose weights ``python -m benchmark pretrain`` makes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from benchmark import registry
from benchmark.contracts import BackboneSpec, Experience, TaskStream
from benchmark.errors import UserError

ENV_VAR = "CLEVR_ROOT"
TASK_TYPES: tuple[str, ...] = ("attribute", "counting", "existence", "comparison")
ANSWER_FUNCTION_TYPES = MappingProxyType(
    {
        "query_color": "attribute",
        "query_shape": "attribute",
        "query_material": "attribute",
        "query_size": "attribute",
        "count": "counting",
        "exist": "existence",
        "equal_integer": "comparison",
        "less_than": "comparison",
        "greater_than": "comparison",
        "equal_color": "comparison",
        "equal_shape": "comparison",
        "equal_material": "comparison",
        "equal_size": "comparison",
    }
)
COMPARING_WORDS = frozenset({"same", "equal", "more", "fewer", "greater", "less", "than"})
PAD, UNKNOWN = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words_of(question: str) -> list[str]:
    """Lower-cased words and punctuation marks: "Is it red?" → ["is", "it", "red", "?"]."""
    return _WORD.findall(question.lower())


def question_type(record: dict[str, Any]) -> str | None:
    """The task a question belongs to (see the module docstring); None if it fits none."""
    program = record.get("program")
    if program and isinstance(program, list) and isinstance(program[-1], dict):
        last = program[-1]  # the release names it "function"; the generator's own output "type"
        return ANSWER_FUNCTION_TYPES.get(str(last.get("function", last.get("type", ""))))
    answer = str(record["answer"]).lower()
    if answer.isdigit():
        return "counting"
    if answer in ("yes", "no"):
        return "comparison" if COMPARING_WORDS & set(words_of(record["question"])) else "existence"
    return "attribute"


def read_questions(path: Path) -> list[dict[str, Any]]:
    """The question records of one CLEVR questions file."""
    try:
        with path.open(encoding="utf-8") as stream:
            payload = json.load(stream)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read CLEVR file {path}: {error}") from None
    questions = payload.get("questions") if isinstance(payload, dict) else None
    if not isinstance(questions, list):
        raise UserError(f"{path} is not a CLEVR questions file (no 'questions' list)")
    for record in questions:
        if not isinstance(record, dict) or not {"image_filename", "question", "answer"} <= record.keys():
            raise UserError(f"{path}: a question lacks image_filename, question or answer: {record!r:.120}")
    return questions


def read_image(path: Path, image_size: int) -> np.ndarray:
    """uint8 [3, image_size, image_size] from a PNG (alpha dropped), resized bicubically."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read CLEVR image {path}: {error}") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def encode(questions: Sequence[Sequence[str]], vocabulary: Sequence[str], length: int) -> np.ndarray:
    """int64 [n, length] word ids (0 = padding, unknown words → ``<unk>``), cut at ``length``."""
    index = {word: i for i, word in enumerate(vocabulary)}
    unknown = index[UNKNOWN]
    ids = np.zeros((len(questions), length), dtype=np.int64)
    for row, words in enumerate(questions):
        kept = words[:length]
        ids[row, : len(kept)] = [index.get(word, unknown) for word in kept]
    return ids


@registry.register("task", "clevr")
class Clevr:
    """CLEVR v1.0 from a local copy (path or $CLEVR_ROOT), 4 tasks by question type, no masks."""

    def __init__(
        self,
        *,
        root: str = "",
        max_questions_per_task: int = 2000,
        max_test_questions_per_task: int = 500,
        image_size: int = 32,
        patch_size: int = 8,
        question_length: int = 0,
        data_seed: int = 0,
        epochs: int = 4,
    ) -> None:
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size {image_size}, got {patch_size}")
        if max_questions_per_task < 1 or max_test_questions_per_task < 1:
            raise ValueError("max_questions_per_task and max_test_questions_per_task must be at least 1")
        if question_length < 0:
            raise ValueError(f"question_length must be at least 0 (0: the longest), got {question_length}")
        if data_seed < 0:
            raise ValueError(f"data_seed must be at least 0, got {data_seed}")
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.root = root
        self.max_questions_per_task = max_questions_per_task
        self.max_test_questions_per_task = max_test_questions_per_task
        self.image_size = image_size
        self.question_length = question_length
        self.data_seed = data_seed
        self.epochs = epochs
        self.backbone = BackboneSpec(
            image_size=image_size, channels=3, patch_size=patch_size, pretrain_set="shapes-15"
        )

    def dataset_dir(self) -> Path:
        root = self.root or os.environ.get(ENV_VAR, "")
        if not root:
            raise UserError(f"clevr needs a local CLEVR v1.0: set [task_params.clevr] root or ${ENV_VAR}")
        path = Path(root).expanduser()
        for candidate in (path, path / "CLEVR_v1.0"):
            if (candidate / "questions" / "CLEVR_train_questions.json").is_file():
                return candidate
        raise UserError(f"no CLEVR v1.0 (questions/CLEVR_train_questions.json) at {path}")

    def split(self, folder: Path, split: str, cap: int) -> list[list[dict[str, Any]]]:
        """Per task type, at most ``cap`` questions of the split, a seeded choice kept in file order."""
        questions = read_questions(folder / "questions" / f"CLEVR_{split}_questions.json")
        by_type: list[list[dict[str, Any]]] = [[] for _ in TASK_TYPES]
        for record in questions:
            kind = question_type(record)
            if kind is not None:
                by_type[TASK_TYPES.index(kind)].append(record)
        rng = np.random.default_rng([self.data_seed, ("train", "val").index(split)])
        chosen = []
        for records in by_type:
            keep = np.sort(rng.permutation(len(records))[:cap]) if len(records) > cap else range(len(records))
            chosen.append([records[int(i)] for i in keep])
        return chosen

    def images(self, folder: Path, split: str, records: list[dict[str, Any]]) -> np.ndarray:
        """uint8 [n, 3, S, S]: each record's image, each file read once."""
        cache: dict[str, np.ndarray] = {}
        out = np.empty((len(records), 3, self.image_size, self.image_size), dtype=np.uint8)
        for i, record in enumerate(records):
            name = str(record["image_filename"])
            if name not in cache:
                cache[name] = read_image(folder / "images" / split / name, self.image_size)
            out[i] = cache[name]
        return out

    def build(self) -> TaskStream:
        folder = self.dataset_dir()
        train = self.split(folder, "train", self.max_questions_per_task)
        test = self.split(folder, "val", self.max_test_questions_per_task)
        train_words = [[words_of(r["question"]) for r in records] for records in train]
        every_train = [words for task in train_words for words in task]
        if not every_train:
            raise UserError(f"{folder}: CLEVR_train_questions.json holds no question of a known type")
        vocabulary = (PAD, UNKNOWN, *sorted({word for words in every_train for word in words}))
        length = self.question_length or max(len(words) for words in every_train)
        answers = (*sorted({str(r["answer"]) for records in train for r in records}), UNKNOWN)
        answer_id = {answer: i for i, answer in enumerate(answers)}
        experiences = []
        for train_records, words, test_records in zip(train, train_words, test, strict=True):
            if not train_records:
                continue  # a type with no training question is no task
            train_labels = np.array([answer_id[str(r["answer"])] for r in train_records], dtype=np.int64)
            test_labels = np.array(
                [answer_id.get(str(r["answer"]), answer_id[UNKNOWN]) for r in test_records], dtype=np.int64
            )
            experiences.append(
                Experience(
                    classes=tuple(sorted(int(c) for c in np.unique(train_labels))),
                    train_images=self.images(folder, "train", train_records),
                    train_labels=train_labels,
                    test_images=self.images(folder, "val", test_records),
                    test_labels=test_labels,
                    train_text=encode(words, vocabulary, length),
                    test_text=encode([words_of(r["question"]) for r in test_records], vocabulary, length),
                )
            )
        return TaskStream(
            "clevr",
            tuple(experiences),
            len(answers),
            self.backbone,
            has_masks=False,
            epochs=self.epochs,
            vocabulary=vocabulary,
            answers=answers,
        )
