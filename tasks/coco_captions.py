"""coco-captions: a user's local COCO 2017 captions, split into tasks by object category as RATT does.

Layout read (COCO's own)::

    <root>/annotations/captions_{train,val}2017.json   images (id, file_name), annotations (image_id,
                                                       caption)
    <root>/annotations/instances_{train,val}2017.json  annotations (image_id, category_id), categories
                                                       (id, name)
    <root>/{train,val}2017/<file_name>                 the JPEG images

``root`` is a parameter or ``$COCO_ROOT``. The split into tasks follows RATT
(Del Chiaro et al., "RATT: Recurrent Attention to Transient Tasks for Continual
Image Captioning", NeurIPS 2020, ``datasets/coco/coco_job.py`` of their code):
each task is a list of COCO category names; an image belongs to a task when it
has at least one instance of one of the task's categories; an image that
belongs to two or more tasks, or to none, is dropped. The default split is
RATT's five tasks (transport, animals, sports, food, interior; their "TASFI"
job). ``split_file`` names a JSON file with another split::

    {"tasks": [{"name": "transport", "categories": ["bicycle", "car", ...]},
               {"name": "animals", "categories": ["bird", "horse", ...]}]}

Training images come from train2017 and test images from val2017 (RATT halves
val2014 into validation and test; with 2017 the whole of val is the test set).
``train_per_task`` / ``test_per_task`` cap each task with a seeded subset
(0 = every image). Images are squashed to ``image_size`` with Pillow (bicubic).
The vocabulary holds the training captions' words seen at least
``min_word_count`` times (RATT: 5); rarer words become ``<unk>``. Each training
image's target is one of its captions, drawn with ``data_seed``;
``test_references`` holds all captions of each test image. Per-class selection
groups a training image by the first of its task's categories it shows
(``train_categories``, ids in the split's category order); the objective is
``captioning``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmark import registry
from benchmark.contracts import BackboneSpec, Experience, TaskStream
from benchmark.errors import UserError
from tasks.caption_text import build_vocabulary, encode_captions

ENV_VAR = "COCO_ROOT"
SPLITS = ("train", "val")

# RATT's COCO tasks (their jobs.py, job "TASFI": animals without cat and dog, interior without dining table).
RATT_TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transport", ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat")),
    ("animals", ("bird", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")),
    (
        "sports",
        (
            *("snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard"),
            *("surfboard", "tennis racket"),
        ),
    ),
    (
        "food",
        ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"),
    ),
    (
        "interior",
        (
            *(
                "chair",
                "couch",
                "potted plant",
                "bed",
                "toilet",
                "tv",
                "laptop",
                "mouse",
                "remote",
                "keyboard",
            ),
            *("cell phone", "microwave", "oven", "toaster", "sink", "refrigerator"),
        ),
    ),
)


@dataclass(frozen=True)
class CocoSplit:
    """One COCO split as read: file names and captions per image id, categories per image id."""

    file_names: dict[int, str]
    captions: dict[int, list[str]]
    categories: dict[int, set[str]]


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"COCO file {path} not found")
    try:
        with path.open(encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read COCO file {path}: {error}") from None


def read_coco_split(root: Path, split: str) -> CocoSplit:
    """Captions and instance categories of ``<root>/annotations/*_{split}2017.json``."""
    captions_path = root / "annotations" / f"captions_{split}2017.json"
    instances_path = root / "annotations" / f"instances_{split}2017.json"
    captions_json, instances_json = read_json(captions_path), read_json(instances_path)
    try:
        file_names = {int(image["id"]): str(image["file_name"]) for image in captions_json["images"]}
        captions: dict[int, list[str]] = {}
        for note in captions_json["annotations"]:
            captions.setdefault(int(note["image_id"]), []).append(str(note["caption"]).strip())
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{captions_path} is not a COCO captions file (bad or missing {error})") from None
    try:
        names = {int(c["id"]): str(c["name"]) for c in instances_json["categories"]}
        categories: dict[int, set[str]] = {}
        for note in instances_json["annotations"]:
            categories.setdefault(int(note["image_id"]), set()).add(names[int(note["category_id"])])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{instances_path} is not a COCO instances file (bad or missing {error})") from None
    return CocoSplit(file_names, captions, categories)


def read_split_file(path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Tasks of a split file: ``{"tasks": [{"name": str, "categories": [str, ...]}, ...]}``."""
    payload = read_json(path)
    try:
        tasks = tuple((str(t["name"]), tuple(str(c) for c in t["categories"])) for t in payload["tasks"])
    except (KeyError, TypeError) as error:
        raise UserError(
            f'{path}: a split file is {{"tasks": [{{"name": ..., "categories": [...]}}]}} ({error})'
        ) from None
    if len(tasks) < 1 or any(not categories for _, categories in tasks):
        raise UserError(f"{path}: every task needs at least one category")
    return tasks


def assign_tasks(
    categories: dict[int, set[str]], tasks: tuple[tuple[str, tuple[str, ...]], ...]
) -> dict[int, int]:
    """Image id → task (RATT): the one task with an instance of its categories; none or several: dropped."""
    task_of_category: dict[str, set[int]] = {}
    for index, (_, names) in enumerate(tasks):
        for name in names:
            task_of_category.setdefault(name, set()).add(index)
    assigned = {}
    for image_id, names in categories.items():
        owners = set().union(*(task_of_category.get(name, set()) for name in names))
        if len(owners) == 1:
            assigned[image_id] = owners.pop()
    return assigned


def load_images(folder: Path, file_names: list[str], image_size: int) -> np.ndarray:
    """uint8 [n, 3, size, size]: each image converted to RGB and squashed to size×size (bicubic)."""
    images = np.empty((len(file_names), 3, image_size, image_size), dtype=np.uint8)
    for row, name in enumerate(file_names):
        path = folder / name
        try:
            with Image.open(path) as image:
                resized = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
        except OSError as error:
            raise UserError(f"cannot read COCO image {path}: {error}") from None
        images[row] = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)
    return images


@registry.register("task", "coco-captions")
class CocoCaptions:
    """COCO 2017 captions from a local copy (path or $COCO_ROOT), tasks split by category as in RATT."""

    def __init__(
        self,
        *,
        root: str = "",
        split_file: str = "",
        train_per_task: int = 0,
        test_per_task: int = 0,
        image_size: int = 32,
        patch_size: int = 8,
        min_word_count: int = 5,
        max_length: int = 20,
        data_seed: int = 0,
        epochs: int = 8,
    ) -> None:
        for name, value, low in (
            ("train_per_task", train_per_task, 0),
            ("test_per_task", test_per_task, 0),
            ("min_word_count", min_word_count, 1),
            ("data_seed", data_seed, 0),
            ("epochs", epochs, 1),
            ("max_length", max_length, 3),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size {image_size}, got {patch_size}")
        self.root = root
        self.split_file = split_file
        self.train_per_task = train_per_task
        self.test_per_task = test_per_task
        self.image_size = image_size
        self.patch_size = patch_size
        self.min_word_count = min_word_count
        self.max_length = max_length
        self.data_seed = data_seed
        self.epochs = epochs

    def coco_root(self) -> Path:
        root = self.root or os.environ.get(ENV_VAR, "")
        if not root:
            raise UserError(
                f"coco-captions needs a local COCO 2017: set [task_params.coco-captions] root or ${ENV_VAR}"
            )
        path = Path(root).expanduser()
        if not (path / "annotations").is_dir():
            raise UserError(f"no COCO annotations folder at {path / 'annotations'}")
        return path

    def tasks(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return read_split_file(Path(self.split_file).expanduser()) if self.split_file else RATT_TASKS

    def build(self) -> TaskStream:
        root = self.coco_root()
        tasks = self.tasks()
        splits = {split: read_coco_split(root, split) for split in SPLITS}
        chosen = {split: self._images_per_task(splits[split], tasks, split) for split in SPLITS}
        train_captions = [c for ids in chosen["train"] for i in ids for c in splits["train"].captions[i]]
        vocabulary = build_vocabulary(train_captions, self.min_word_count)
        category_ids = {name: i for i, name in enumerate(dict.fromkeys(c for _, cs in tasks for c in cs))}
        experiences = []
        for index in range(len(tasks)):
            train_ids, test_ids = chosen["train"][index], chosen["val"][index]
            if not train_ids or not test_ids:
                raise UserError(
                    f"COCO task {tasks[index][0]!r} has {len(train_ids)} train and {len(test_ids)} test "
                    "images after the split rule: both must be non-empty"
                )
            pick = np.random.default_rng([self.data_seed, index, 1])
            train_texts = []
            for image_id in train_ids:
                captions = splits["train"].captions[image_id]
                train_texts.append(captions[int(pick.integers(len(captions)))])
            test_references = tuple(tuple(splits["val"].captions[i]) for i in test_ids)
            # Per-class selection groups an image by the first of its task's categories it shows.
            own = tasks[index][1]
            train_categories = [
                category_ids[next(c for c in own if c in splits["train"].categories[i])] for i in train_ids
            ]
            experiences.append(
                Experience(
                    classes=(index,),
                    train_images=self._images(root, "train", splits["train"], train_ids),
                    train_labels=encode_captions(train_texts, vocabulary, self.max_length),
                    test_images=self._images(root, "val", splits["val"], test_ids),
                    test_labels=encode_captions(
                        [refs[0] for refs in test_references], vocabulary, self.max_length
                    ),
                    test_references=test_references,
                    train_categories=np.array(train_categories, dtype=np.int64),
                )
            )
        backbone = BackboneSpec(
            image_size=self.image_size, channels=3, patch_size=self.patch_size, pretrain_set="shapes-15"
        )
        return TaskStream(
            "coco-captions",
            tuple(experiences),
            len(vocabulary),
            backbone,
            has_masks=False,
            epochs=self.epochs,
            vocabulary=vocabulary,
            objective="captioning",
        )

    def _images_per_task(
        self, split: CocoSplit, tasks: tuple[tuple[str, tuple[str, ...]], ...], name: str
    ) -> list[list[int]]:
        """Sorted image ids of each task (captioned images only), capped by a seeded subset."""
        assigned = assign_tasks(split.categories, tasks)
        cap = self.train_per_task if name == "train" else self.test_per_task
        per_task: list[list[int]] = [[] for _ in tasks]
        for image_id in sorted(assigned):
            if split.captions.get(image_id) and image_id in split.file_names:
                per_task[assigned[image_id]].append(image_id)
        for index, ids in enumerate(per_task):
            if cap and len(ids) > cap:
                rng = np.random.default_rng([self.data_seed, index, 2 + SPLITS.index(name)])
                per_task[index] = sorted(ids[i] for i in rng.choice(len(ids), size=cap, replace=False))
        return per_task

    def _images(self, root: Path, split: str, coco: CocoSplit, ids: list[int]) -> np.ndarray:
        folder = root / f"{split}2017"
        if not folder.is_dir():
            raise UserError(f"no COCO image folder at {folder}")
        return load_images(folder, [coco.file_names[i] for i in ids], self.image_size)
