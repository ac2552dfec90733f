from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.grid import expand_grid, load_grid
from tests.conftest import GRIDS

BASE = {
    "tasks": ["split-shapes"],
    "methods": ["none", "random", "random+random"],
    "retention": [0.05, 0.1],
    "seeds": [0, 1],
    "token_fraction": [0.25, 0.5],
}


def expand(**changes: object) -> list:
    raw = {**BASE, **changes}
    return list(expand_grid(raw, Path("test.toml")).cells)


def test_cell_count_follows_the_axes() -> None:
    cells = expand()
    # none: one cell per seed; random: per retention; random+random: per retention × token fraction.
    assert len(cells) == 2 * (1 + 2 + 2 * 2)
    assert len({c.config_hash for c in cells}) == len(cells)


def test_hash_is_stable_and_changes_with_the_config() -> None:
    first = {c.label: c.config_hash for c in expand()}
    again = {c.label: c.config_hash for c in expand()}
    assert first == again
    changed = {c.label: c.config_hash for c in expand(train={"epochs": 4})}
    assert set(changed) == set(first)
    assert all(changed[label] != first[label] for label in first)
    params = {c.label: c.config_hash for c in expand(task_params={"split-shapes": {"object_scale": 0.5}})}
    assert all(params[label] != first[label] for label in first)


def test_grid_name_does_not_change_the_hash() -> None:
    first = [c.config_hash for c in expand()]
    renamed = [c.config_hash for c in expand(name="other")]
    assert first == renamed


def test_resolved_config_holds_every_default() -> None:
    cell = expand()[0]
    assert cell.task_params["object_scale"] == 0.35
    assert cell.task_params["train_per_class"] == 150


def test_method_specific_token_fractions() -> None:
    cells = expand(method_params={"random+random": {"token_fraction": [0.125]}})
    assert {c.token_fraction for c in cells if c.token_selector} == {0.125}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks": ["split-shape"]}, "did you mean 'split-shapes'"),
        ({"methods": ["randon"]}, "unknown sample selector 'randon'"),
        ({"methods": ["random+gradlrpp"]}, "unknown token selector"),
        ({"methods": ["a+b+c"]}, "must be <sample_selector>"),
        ({"retention": [0.0]}, "outside (0, 1]"),
        ({"retention": [1.5]}, "outside (0, 1]"),
        ({"retention": ["x"]}, "must be numbers"),
        ({"seeds": []}, "'seeds' is empty"),
        ({"seeds": [0, 0]}, "twice"),
        ({"seeds": "0"}, "must be a list"),
        ({"token_fraction": [0.0]}, "outside (0, 1]"),
        ({"retentions": [0.1]}, "did you mean 'retention'"),
        ({"train": {"epoch": 3}}, "did you mean 'epochs'"),
        ({"train": {"epochs": "three"}}, "epochs must be int"),
        ({"train": {"epochs": 0}}, "epochs must be at least 1"),
        ({"task_params": {"split-shapes": {"object_size": 0.3}}}, "did you mean 'object_scale'"),
        ({"task_params": {"split-shapes": {"object_scale": 2.0}}}, "object_scale must be in"),
        ({"task_params": {"split-digits": {}}}, "names no entry of this grid"),
        ({"methods": ["none+random"]}, "stores no memory"),
    ],
)
def test_bad_grids_are_one_line_errors(changes: dict, message: str) -> None:
    with pytest.raises(UserError) as caught:
        expand(**changes)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_key_and_malformed_toml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing key 'seeds'"):
        expand_grid({k: v for k, v in BASE.items() if k != "seeds"}, Path("g.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("tasks = [\n")
    with pytest.raises(UserError, match="malformed grid"):
        load_grid(broken)


@pytest.mark.parametrize(
    "name",
    [
        "smoke",
        "default",
        "captions",
        "regimes",
        "regimes_protocol1",
        "regimes_share",
        "regimes_tokens",
        "vqa",
    ],
)
def test_committed_grids_load(name: str) -> None:
    grid = load_grid(GRIDS / f"{name}.toml")
    assert grid.cells
    assert grid.name == name


def test_exclude_drops_matching_cells_only() -> None:
    every = expand(tasks=["split-shapes", "split-digits"])
    kept = expand(
        tasks=["split-shapes", "split-digits"],
        exclude=[{"tasks": ["split-digits"], "methods": ["random+random"]}],
    )
    dropped = {c.config_hash for c in every} - {c.config_hash for c in kept}
    assert len(dropped) == 2 * 2 * 2  # seeds × retentions × token fractions
    assert all(
        c.task == "split-digits" and c.method == "random+random" for c in every if c.config_hash in dropped
    )


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        ([{"task": ["split-shapes"]}], "did you mean 'tasks'"),
        ([{"methods": ["kcenter"]}], "unknown method 'kcenter'"),
        ([{"tasks": ["split-shapes"], "seeds": [7]}], "matches no cell"),
        ([{"tasks": ["split-shapes"]}], "leaves no cell"),
        ({"tasks": ["split-shapes"]}, "must be a list of tables"),
        ([{}], "is empty"),
    ],
)
def test_bad_excludes(exclude: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        expand(exclude=exclude)


def test_overrides_set_dotted_keys_before_validation(tmp_path: Path) -> None:
    grid_file = tmp_path / "g.toml"
    grid_file.write_text('tasks = ["split-shapes"]\nmethods = ["random"]\nretention = [0.1]\nseeds = [0]\n')
    grid = load_grid(grid_file, ["seeds=[5]", "task_params.split-shapes.object_scale=0.5", "train.lr=1e-3"])
    assert [c.seed for c in grid.cells] == [5]
    assert grid.cells[0].task_params["object_scale"] == 0.5 and grid.cells[0].train.lr == 1e-3
    assert load_grid(grid_file, ["name=bare string"]).name == "bare string"
    with pytest.raises(UserError, match=r"must look like dotted\.key=VALUE"):
        load_grid(grid_file, ["seeds"])
    with pytest.raises(UserError, match="outside"):
        load_grid(grid_file, ["retention=[2.0]"])


def test_variants_add_the_base_grid_with_their_keys_changed(tmp_path: Path) -> None:
    path = tmp_path / "star.toml"
    path.write_text(
        'tasks = ["split-shapes"]\nmethods = ["random", "random+random"]\nretention = [0.1]\nseeds = [0]\n'
        "token_fraction = [0.25]\n"
        '[[variant]]\ntrain = { replay = "mask" }\nmethods = ["random+random"]\n'
        '[[variant]]\ntask_params = { "split-shapes" = { object_scale = 0.2 } }\n'
        '[[variant]]\nmethods = ["random"]\n'  # adds nothing new: every cell is already in the base
    )
    cells = load_grid(path).cells
    assert len(cells) == 2 + 1 + 2
    assert len({c.config_hash for c in cells}) == len(cells)
    masked = [c for c in cells if c.train.replay == "mask"]
    assert [c.method for c in masked] == ["random+random"]
    small = [c for c in cells if c.task_params["object_scale"] == 0.2]
    assert sorted(c.method for c in small) == ["random", "random+random"]
    assert all(c.train.replay == "drop" for c in small)  # a variant changes only what it names


def test_a_bad_variant_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'tasks = ["split-shapes"]\nmethods = ["random"]\nretention = [0.1]\nseeds = [0]\n'
        '[[variant]]\ntrain = { replay = "fill" }\n'
    )
    with pytest.raises(UserError, match=r"variant 1: .*replay must be one of drop, mask, zero"):
        load_grid(path)


def test_auto_is_a_token_fraction_and_tokengreedy_ignores_t(tmp_path: Path) -> None:
    path = tmp_path / "auto.toml"
    path.write_text(
        'tasks = ["split-shapes"]\nmethods = ["random+rollout", "tokengreedy+rollout"]\nretention = [0.1]\n'
        'seeds = [0]\ntoken_fraction = [0.25, "auto"]\n'
    )
    fractions = sorted((c.method, str(c.token_fraction)) for c in load_grid(path).cells)
    assert fractions == [
        ("random+rollout", "0.25"),
        ("random+rollout", "auto"),
        ("tokengreedy+rollout", "1.0"),
    ]
