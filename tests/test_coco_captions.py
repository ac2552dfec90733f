"""coco-captions reads a local COCO 2017 layout (written here in miniature) and splits it as RATT does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark import registry
from benchmark.contracts import UNK, decode_ids
from benchmark.errors import UserError
from tasks.coco_captions import RATT_TASKS, assign_tasks

CATEGORIES = {1: "car", 2: "bus", 3: "horse", 4: "pizza", 5: "person"}
# image id → categories of its instances; which task (in a car+bus / horse / pizza split) it belongs to
TRAIN_IMAGES = {
    1: ["car"],  # vehicles
    2: ["bus", "car", "person"],  # vehicles (person is in no task)
    3: ["horse"],  # animals
    4: ["horse", "car"],  # in two tasks: dropped
    5: ["person"],  # in no task: dropped
    6: ["pizza"],  # food
    7: ["horse", "person"],  # animals
    8: ["car"],  # vehicles
}
VAL_IMAGES = {101: ["car"], 102: ["horse"], 103: ["pizza", "person"], 104: ["pizza", "bus"]}
SPLIT = {
    "tasks": [
        {"name": "vehicles", "categories": ["car", "bus"]},
        {"name": "animals", "categories": ["horse"]},
    ]
}


def captions_for(image_id: int, names: list[str]) -> list[str]:
    main = names[0]
    return [f"A {main} on a street.", f"there is a {main} here", f"photo {image_id} of a {main}"]


def write_coco_fixture(root: Path) -> Path:
    """A miniature COCO 2017: captions and instances JSON, small JPEG/PNG images, a split file."""
    (root / "annotations").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, images in (("train", TRAIN_IMAGES), ("val", VAL_IMAGES)):
        folder = root / f"{split}2017"
        folder.mkdir()
        entries, caption_notes, instance_notes = [], [], []
        for image_id, names in images.items():
            suffix = "jpg" if image_id % 2 else "png"
            file_name = f"{image_id:012d}.{suffix}"
            pixels = rng.integers(0, 256, size=(24 + image_id % 5, 40, 3), dtype=np.uint8)
            mode = "L" if image_id == 3 else "RGB"  # a grey image must come out RGB
            Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(folder / file_name)
            entries.append({"id": image_id, "file_name": file_name, "height": pixels.shape[0], "width": 40})
            for text in captions_for(image_id, names):
                caption_notes.append({"image_id": image_id, "id": len(caption_notes) + 1, "caption": text})
            for name in names:
                category = next(k for k, v in CATEGORIES.items() if v == name)
                instance_notes.append(
                    {"image_id": image_id, "id": len(instance_notes) + 1, "category_id": category}
                )
        categories = [{"id": k, "name": v, "supercategory": "x"} for k, v in CATEGORIES.items()]
        (root / "annotations" / f"captions_{split}2017.json").write_text(
            json.dumps({"images": entries, "annotations": caption_notes})
        )
        (root / "annotations" / f"instances_{split}2017.json").write_text(
            json.dumps({"images": entries, "annotations": instance_notes, "categories": categories})
        )
    split_file = root / "split.json"
    split_file.write_text(json.dumps(SPLIT))
    return split_file


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "coco"
    return root, write_coco_fixture(root)


def test_images_go_to_the_one_task_of_their_categories(coco: tuple[Path, Path]) -> None:
    root, split_file = coco
    stream = registry.create(
        "task", "coco-captions", root=str(root), split_file=str(split_file), min_word_count=2
    ).build()
    assert len(stream.experiences) == 2 and not stream.has_masks
    vehicles, animals = stream.experiences
    assert len(vehicles.train_images) == 3 and len(animals.train_images) == 2  # images 1, 2, 8 and 3, 7
    # per-class selection: the first of the task's categories (car, bus | horse) an image shows
    assert stream.objective == "captioning"
    assert vehicles.categories.tolist() == [0, 0, 0] and animals.categories.tolist() == [2, 2]
    # 103 names no task's category; 104's pizza is in no task of this split, so its bus makes it a vehicle
    assert len(vehicles.test_images) == 2 and len(animals.test_images) == 1
    assert vehicles.test_images.shape == (2, 3, 32, 32) and vehicles.test_images.dtype == np.uint8
    assert vehicles.test_references == tuple(tuple(captions_for(i, VAL_IMAGES[i])) for i in (101, 104))
    assert animals.test_references == (tuple(captions_for(102, ["horse"])),)
    assert stream.vocabulary[:4] == ("<pad>", "<bos>", "<eos>", UNK) and stream.num_classes == len(
        stream.vocabulary
    )
    assert "photo" in stream.vocabulary and "7" not in stream.vocabulary  # seen once: below min_word_count
    texts = [decode_ids(row.tolist(), stream.vocabulary) for row in animals.train_labels]
    allowed = [
        {re.sub(r"\d+", UNK, c.lower().rstrip(".")) for c in captions_for(i, TRAIN_IMAGES[i])} for i in (3, 7)
    ]
    assert all(text in options for text, options in zip(texts, allowed, strict=True))
    again = registry.create(
        "task", "coco-captions", root=str(root), split_file=str(split_file), min_word_count=2
    ).build()
    np.testing.assert_array_equal(again.experiences[0].train_labels, vehicles.train_labels)
    np.testing.assert_array_equal(again.experiences[0].train_images, vehicles.train_images)


def test_root_from_the_environment_default_split_and_caps(coco: tuple[Path, Path], monkeypatch) -> None:
    root, split_file = coco
    monkeypatch.setenv("COCO_ROOT", str(root))
    capped = registry.create("task", "coco-captions", split_file=str(split_file), train_per_task=2).build()
    assert [len(e.train_images) for e in capped.experiences] == [2, 2]
    with pytest.raises(UserError, match="'sports' has 0 train"):
        registry.create("task", "coco-captions").build()  # RATT's five tasks: the miniature has no sports
    assert [name for name, _ in RATT_TASKS] == ["transport", "animals", "sports", "food", "interior"]
    assert assign_tasks({1: {"car", "person"}, 2: {"dog"}, 3: {"cat", "bed"}}, RATT_TASKS) == {1: 0, 3: 4}


def test_missing_data_is_a_one_line_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("COCO_ROOT", raising=False)
    with pytest.raises(UserError, match=r"\$COCO_ROOT"):
        registry.create("task", "coco-captions").build()
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=re.escape(str(missing))) as caught:
        registry.create("task", "coco-captions", root=str(missing)).build()
    assert "\n" not in str(caught.value)
    root = tmp_path / "coco"
    write_coco_fixture(root)
    (root / "annotations" / "captions_val2017.json").unlink()
    with pytest.raises(UserError, match=re.escape("captions_val2017.json")):
        registry.create("task", "coco-captions", root=str(root)).build()
    with pytest.raises(UserError, match=re.escape("split.json")):
        registry.create(
            "task", "coco-captions", root=str(root), split_file=str(tmp_path / "split.json")
        ).build()
    with pytest.raises(ValueError, match="train_per_task"):
        registry.create("task", "coco-captions", train_per_task=-1)
