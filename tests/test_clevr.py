"""clevr: a fixture written here in the CLEVR v1.0 layout, read through the registry and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark import registry
from benchmark.cli import main
from benchmark.errors import UserError
from tasks.clevr import TASK_TYPES, UNKNOWN, words_of
from tests.test_cli import GOOD

# One solid colour per image, so that a sample's pixels say which file they came from.
IMAGE_COLOURS = {
    "train": [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)],
    "val": [(30, 200, 200), (200, 30, 200)],
}

# (question, answer, last program function or None for no program, expected task type)
TRAIN = [
    ("What color is the large cube?", "red", "query_color", "attribute"),
    ("What shape is the small rubber thing?", "cube", "query_shape", "attribute"),
    ("What is the material of the big sphere?", "rubber", "query_material", "attribute"),
    ("What size is the cube?", "large", None, "attribute"),
    ("How many spheres are there?", "2", "count", "counting"),
    ("What number of cubes are left of the red cylinder?", "0", "count", "counting"),
    ("How many things are purple?", "3", None, "counting"),
    ("Are there any cylinders?", "yes", "exist", "existence"),
    ("Is there a red sphere?", "no", "exist", "existence"),
    ("Is there a metal ball?", "no", None, "existence"),
    ("Is the number of cubes greater than the number of spheres?", "no", "greater_than", "comparison"),
    ("Does the cube have the same color as the sphere?", "yes", "equal_color", "comparison"),
    ("Are there an equal number of cubes and spheres?", "yes", "equal_integer", "comparison"),
    ("Are there more cubes than spheres?", "yes", None, "comparison"),
    ("Is it an unknown kind of question?", "yes", "frobnicate", None),
]
VAL = [
    ("What color is the gigantic cube?", "purple", "query_color", "attribute"),
    ("What shape is the small thing?", "sphere", "query_shape", "attribute"),
    ("How many cubes are there?", "2", "count", "counting"),
    ("Are there any spheres?", "no", "exist", "existence"),
    ("Is the cube the same size as the sphere?", "yes", "equal_size", "comparison"),
]


def program(function: str) -> list[dict[str, object]]:
    return [
        {"inputs": [], "function": "scene", "value_inputs": []},
        {"inputs": [0], "function": function, "value_inputs": []},
    ]


def write_clevr_fixture(root: Path) -> Path:
    for split, rows in (("train", TRAIN), ("val", VAL)):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        for index, colour in enumerate(IMAGE_COLOURS[split]):
            # 48×32 RGBA like the release's 480×320 images: the loader must drop alpha and squash.
            Image.new("RGBA", (48, 32), (*colour, 255)).save(folder / f"CLEVR_{split}_{index:06d}.png")
        records = []
        for number, (question, answer, function, _) in enumerate(rows):
            index = number % len(IMAGE_COLOURS[split])
            record = {
                "image_index": index,
                "image_filename": f"CLEVR_{split}_{index:06d}.png",
                "question": question,
                "answer": answer,
                "question_family_index": number,
                "split": split,
            }
            if function is not None:
                record["program"] = program(function)
            records.append(record)
        (root / "questions").mkdir(exist_ok=True)
        (root / "questions" / f"CLEVR_{split}_questions.json").write_text(json.dumps({"questions": records}))
    return root


def expected(rows: list[tuple[str, str, str | None, str | None]], split: str) -> dict[str, tuple]:
    """Question words → (answer, task type, image colour)."""
    colours = IMAGE_COLOURS[split]
    return {
        " ".join(words_of(question)): (answer, kind, colours[number % len(colours)])
        for number, (question, answer, _, kind) in enumerate(rows)
    }


def test_clevr_fixture_loads_split_by_question_type(tmp_path: Path) -> None:
    stream = registry.create("task", "clevr", root=str(write_clevr_fixture(tmp_path))).build()
    assert stream.name == "clevr" and not stream.has_masks and stream.tokens == 16
    assert stream.backbone.pretrain_set == "shapes-15" and stream.backbone.image_size == 32
    assert len(stream.experiences) == len(TASK_TYPES) == 4
    known_answers = sorted({answer for _, answer, _, kind in TRAIN if kind is not None})
    assert stream.answers == (*known_answers, UNKNOWN) and stream.num_classes == len(stream.answers)
    vocabulary = stream.vocabulary
    assert vocabulary[:2] == ("<pad>", UNKNOWN) and list(vocabulary[2:]) == sorted(vocabulary[2:])
    assert "?" in vocabulary and "frobnicate" not in vocabulary and "gigantic" not in vocabulary
    length = max(len(words_of(q)) for q, *_, kind in TRAIN if kind is not None)
    for split, rows in (("train", TRAIN), ("test", VAL)):
        truth = expected(rows, "train" if split == "train" else "val")
        seen = []
        for kind, experience in zip(TASK_TYPES, stream.experiences, strict=True):
            text, labels = getattr(experience, f"{split}_text"), getattr(experience, f"{split}_labels")
            images = getattr(experience, f"{split}_images")
            assert text.dtype == np.int64 and text.shape == (len(labels), length)
            assert images.shape == (len(labels), 3, 32, 32) and images.dtype == np.uint8
            for row, label, image in zip(text, labels, images, strict=True):
                words = [vocabulary[i] for i in row if i != 0]
                assert not row[len(words) :].any()  # padding only at the end
                key = " ".join(words).replace(UNKNOWN, "gigantic")
                answer, true_kind, colour = truth[key]
                assert true_kind == kind, key
                wanted = answer if answer in stream.answers else UNKNOWN
                assert stream.answers[label] == wanted
                np.testing.assert_allclose(image.reshape(3, -1).mean(axis=1), colour, atol=1)
                seen.append(key)
            if split == "train":
                assert experience.classes == tuple(sorted(set(labels.tolist())))
        assert sorted(seen) == sorted(key for key, (_, kind, _) in truth.items() if kind is not None)
    attribute_test = stream.experiences[0]
    unknown_id = stream.answers.index(UNKNOWN)
    assert unknown_id in attribute_test.test_labels  # "purple" never answers a training question
    assert unknown_id not in np.concatenate([e.train_labels for e in stream.experiences])
    assert vocabulary.index(UNKNOWN) in attribute_test.test_text  # "gigantic" is not a training word


def test_caps_choose_a_seeded_subset_and_question_length_cuts(tmp_path: Path) -> None:
    root = str(write_clevr_fixture(tmp_path))
    capped = registry.create("task", "clevr", root=root, max_questions_per_task=1, question_length=3).build()
    assert [len(e.train_labels) for e in capped.experiences] == [1, 1, 1, 1]
    assert all(e.train_text.shape[1] == 3 and e.train_text.all() for e in capped.experiences)
    again = registry.create("task", "clevr", root=root, max_questions_per_task=1, question_length=3).build()
    for a, b in zip(capped.experiences, again.experiences, strict=True):
        np.testing.assert_array_equal(a.train_text, b.train_text)
    seeds = {
        tuple(
            e.train_text[0].tobytes()
            for e in registry.create("task", "clevr", root=root, max_questions_per_task=1, data_seed=seed)
            .build()
            .experiences
        )
        for seed in range(6)
    }
    assert len(seeds) > 1


def test_the_environment_variable_names_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEVR_ROOT", str(write_clevr_fixture(tmp_path / "data")))
    stream = registry.create("task", "clevr").build()
    assert len(stream.experiences) == 4
    # The release's own folder name under the root is found too.
    monkeypatch.setenv("CLEVR_ROOT", str(tmp_path))
    (tmp_path / "data").rename(tmp_path / "CLEVR_v1.0")
    assert len(registry.create("task", "clevr").build().experiences) == 4


def test_missing_or_broken_data_is_a_one_line_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLEVR_ROOT", raising=False)
    with pytest.raises(UserError, match=r"clevr needs a local CLEVR v1\.0: set .* or \$CLEVR_ROOT"):
        registry.create("task", "clevr").build()
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=rf"no CLEVR v1\.0 .* at {re.escape(str(missing))}$"):
        registry.create("task", "clevr", root=str(missing)).build()
    root = write_clevr_fixture(tmp_path / "data")
    (root / "images" / "val" / "CLEVR_val_000001.png").unlink()
    with pytest.raises(UserError, match=r"cannot read CLEVR image .*CLEVR_val_000001\.png"):
        registry.create("task", "clevr", root=str(root)).build()
    val = root / "questions" / "CLEVR_val_questions.json"
    val.write_text('{"questions": [')
    with pytest.raises(UserError, match=f"cannot read CLEVR file {re.escape(str(val))}"):
        registry.create("task", "clevr", root=str(root)).build()
    val.write_text('{"answers": []}')
    with pytest.raises(UserError, match="is not a CLEVR questions file"):
        registry.create("task", "clevr", root=str(root)).build()


def test_the_cli_ends_a_missing_root_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLEVR_ROOT", raising=False)
    missing = tmp_path / "no-clevr-here"
    grid = tmp_path / "clevr.toml"
    grid.write_text(
        'name = "clevr"\n'
        + GOOD.replace('["split-shapes"]', '["clevr"]')
        + f'\n[task_params.clevr]\nroot = "{missing}"\n'
    )
    capsys.readouterr()
    tracking = ["--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"]
    status = main(["run", str(grid), "--results", str(tmp_path / "results"), "--no-progress", *tracking])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert stderr.strip().splitlines() == [
        f"error: no CLEVR v1.0 (questions/CLEVR_train_questions.json) at {missing}"
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"patch_size": 5}, "patch_size must divide image_size 32"),
        ({"max_questions_per_task": 0}, "must be at least 1"),
        ({"max_test_questions_per_task": 0}, "must be at least 1"),
        ({"question_length": -1}, "question_length must be at least 0"),
        ({"data_seed": -1}, "data_seed must be at least 0"),
        ({"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_invalid_parameters_are_one_line_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        registry.create("task", "clevr", **params)
    assert "\n" not in str(caught.value)
