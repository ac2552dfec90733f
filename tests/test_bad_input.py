"""Bad input, table-driven through the CLI: one line `error: ...`, exit 2, no traceback,
and the finished record already in the results directory left byte for byte as it was.

The table calls the CLI's ``main`` in this process (what ``python -m benchmark`` runs: an
exception escaping it fails the test), which saves an interpreter start and the torch import
per case; tests/test_cli.py and the corrupt-record test below go through a real subprocess."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from benchmark.cli import main
from benchmark.grid import load_grid
from tests.conftest import GRIDS as GRIDS_DIR
from tests.test_cli import GOOD, run_cli

GOOD_NAMED = 'name = "bad"\n' + GOOD
EARLIER = {"config": {"task": "split-shapes"}, "config_hash": "0123456789abcdef", "status": "finished"}

# (grid text, extra `run` arguments, what the one-line message must say)
CASES = [
    (GOOD_NAMED.replace('"split-shapes"', '"split-shape"'), [], "did you mean 'split-shapes'"),
    (GOOD_NAMED.replace('["random"]', '["randm"]'), [], "unknown sample selector 'randm'"),
    (GOOD_NAMED.replace('["random"]', '["random+rolout"]'), [], "did you mean 'rollout'"),
    (GOOD_NAMED + "\n[train\n", [], "malformed grid"),
    (GOOD_NAMED.replace("retention = [0.1]", 'retention = "0.1"'), [], "'retention' must be a list"),
    (GOOD_NAMED + "[train]\nepochs = 'three'\n", [], "epochs must be int"),
    (GOOD_NAMED.replace("[0.1]", "[0]"), [], "retention 0 is outside (0, 1]"),
    (GOOD_NAMED.replace("[0.1]", "[1.5]"), [], "retention 1.5 is outside (0, 1]"),
    (
        GOOD_NAMED.replace('["random"]', '["random+random"]') + "token_fraction = [1.5]\n",
        [],
        "outside (0, 1]",
    ),
    (GOOD_NAMED.replace("seeds = [0]", "seeds = []"), [], "'seeds' is empty"),
    (GOOD_NAMED.replace('["random"]', '["random", "random"]'), [], "lists 'random' twice"),
    (GOOD_NAMED + "[train]\nreplay = 'fill'\n", [], "replay must be one of drop, mask, zero, got 'fill'"),
    (
        GOOD_NAMED.replace('["random"]', '["random+random"]') + "token_fraction = [0]\n",
        [],
        "token_fraction 0 is outside (0, 1]",
    ),
    (
        GOOD_NAMED.replace('["random"]', '["random+random"]') + 'token_fraction = ["automatic"]\n',
        [],
        'token_fraction values must be numbers or "auto"',
    ),
    (GOOD_NAMED + "[train]\npretrain_token_dropout = 1.0\n", [], "pretrain_token_dropout must be in [0, 1)"),
    (GOOD_NAMED + "[train]\npretrain_token_dropout = 0.3\n", [], "--token-dropout 0.3"),
    (GOOD_NAMED.replace("[0.1]", "[0.00001]"), [], "impossible budget"),
    (
        GOOD_NAMED + '\n[task_params.split-cifar100]\nroot = "/nonexistent"\n',
        [],
        "names no entry of this grid",
    ),
    (
        GOOD_NAMED.replace('["split-shapes"]', '["split-cifar100"]')
        + '\n[task_params.split-cifar100]\nroot = "/nonexistent"\n',
        [],
        "no CIFAR-100 python archive",
    ),
    (
        GOOD_NAMED.replace('["random"]', '["random+oracle"]').replace('"split-shapes"', '"split-digits"'),
        [],
        "needs ground-truth masks",
    ),
    # Bad geometry of the issue-21 tasks: a patch that does not tile the image, no relevant share.
    (
        GOOD_NAMED + "[task_params.split-shapes]\npatch_size = 5\n",
        [],
        "patch_size 5 does not divide image_size 32",
    ),
    (
        GOOD_NAMED.replace('"split-shapes"', '"split-shapes-distractors"')
        + "[task_params.split-shapes-distractors]\nrelevant_share = 0.0\n",
        [],
        "relevant_share must be in (0, 0.35], got 0",
    ),
    (
        GOOD_NAMED.replace('"split-shapes"', '"split-text"') + "[task_params.split-text]\nmin_length = 60\n",
        [],
        "min_length ≤ max_length",
    ),
    (GOOD_NAMED, ["--jobs", "0"], "--jobs must be at least 1"),
    (GOOD_NAMED, ["--threads", "0"], "--threads must be at least 1"),
    (GOOD_NAMED, ["--executor", "rey"], "unknown executor 'rey' (did you mean 'ray'?)"),
    (GOOD_NAMED, ["--executor", "ray", "--jobs", "2"], "--jobs sizes the local process pool"),
    (GOOD_NAMED, ["--gpus-per-cell", "1"], "are for --executor ray"),
    (GOOD_NAMED, ["--tracking-uri", "http://127.0.0.1:9/"], "cannot use MLflow tracking URI"),
    # Issue 23: names that would write outside --results and reports/, values that escaped the rule.
    (GOOD_NAMED.replace('name = "bad"', 'name = "../../etc"'), [], "'name' must be letters"),
    (GOOD_NAMED.replace('name = "bad"', 'name = ".."'), [], "'name' must be letters"),
    (GOOD_NAMED.replace('name = "bad"', 'name = "/tmp/elsewhere"'), [], "'name' must be letters"),
    (GOOD_NAMED.replace('name = "bad"', 'name = "b\\u0000d"'), [], "name holds a NUL character"),
    (GOOD_NAMED + "[train]\nlr = inf\n", [], "train.lr = inf is not a finite number"),
    (GOOD_NAMED + "[train]\nweight_decay = nan\n", [], "train.weight_decay = nan is not a finite number"),
    (GOOD_NAMED + "[train]\neval_batch_size = 0\n", [], "eval_batch_size must be at least 1"),
    (GOOD_NAMED + "[train]\nepochs = 100000\n", [], "epochs must be at most 1000"),
    (GOOD_NAMED.replace("seeds = [0]", "seeds = [-1]"), [], "seeds -1 is outside [0, 2**32)"),
    (GOOD_NAMED.replace("seeds = [0]", "seeds = [4294967296]"), [], "seeds 4294967296 is outside"),
    (
        GOOD_NAMED.replace("seeds = [0]", f"seeds = {list(range(100_001))}"),
        [],
        "100001 cells before exclusions, more than the 100000",
    ),
    (
        GOOD_NAMED + "[task_params.split-shapes]\npatch_size = 0\n",
        [],
        "image_size and patch_size must be positive, got 32 and 0",
    ),
    (
        GOOD_NAMED + "[task_params.split-shapes]\npatch_size = -8\n",
        [],
        "image_size and patch_size must be positive, got 32 and -8",
    ),
    (
        GOOD_NAMED + "[task_params.split-shapes]\ndata_seed = -1\n",
        [],
        "'data_seed': -1 is outside [0, 2**32)",
    ),
    (GOOD_NAMED + "[task_params.split-shapes]\nepochs = 0\n", [], "epochs must be in [1, 1000], got 0"),
    # A file where the grid's results directory should be (tests run as root: chmod 000 would not bite).
    (GOOD_NAMED.replace('name = "bad"', 'name = "taken"'), [], "is not a writable directory"),
]


@pytest.mark.parametrize(("grid_text", "extra", "message"), CASES, ids=[case[2][:40] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    tmp_path: Path, grid_text: str, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    earlier = results / "bad" / "cells" / "0123456789abcdef.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(json.dumps(EARLIER))
    (results / "taken").write_text("a file, not a directory\n")
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    grid = tmp_path / "bad.toml"
    grid.write_text(grid_text)
    tracking = [] if "--tracking-uri" in extra else ["--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"]
    started = time.monotonic()
    capsys.readouterr()
    status = main(["run", str(grid), "--results", str(results), "--no-progress", *tracking, *extra])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0]
    assert "Traceback" not in stderr
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    assert time.monotonic() - started < 60  # an unreachable store fails fast, not after retries


def test_a_corrupt_record_is_rerun_by_run_and_named_by_report_and_show(tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\n' + GOOD + "[train]\nepochs = 1\n[task_params.split-shapes]\ntrain_per_class = 8\n"
    )
    digest = load_grid(grid).cells[0].config_hash
    corrupt = tmp_path / "results" / "g" / "cells" / f"{digest}.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"status": "finished", "config": {')  # cut off mid-write by an old tool
    results = ["--results", str(tmp_path / "results")]
    for command in (["report", *results], ["show", digest[:6], *results]):
        done = run_cli(*command, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: corrupt cell result"), done.stderr
        assert str(corrupt) in lines[0]
    done = run_cli(
        "run", str(grid), *results, "--no-progress", "--no-report",
        "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 already done, 1 run" in done.stdout
    assert json.loads(corrupt.read_text())["status"] == "finished"


def test_no_pickle_is_loaded_from_results_or_weights() -> None:
    """torch.load only with weights_only=True; pickle only through the CIFAR loader's restricted unpickler."""
    root = Path(__file__).resolve().parent.parent
    sources = [p for d in ("benchmark", "methods", "tasks", "reports") for p in (root / d).rglob("*.py")]
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}:{number}"
            if "pickle.load" in line or ("pickle.Unpickler(" in line and "class " not in line):
                assert path.name == "split_cifar100.py", f"{path}:{number}"


TINY_GRID = 'name = "g"\n' + GOOD + "[train]\nepochs = 1\n[task_params.split-shapes]\ntrain_per_class = 8\n"


def tiny_run_args(tmp_path: Path) -> list[str]:
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID)
    return [
        "run", str(grid), "--results", str(tmp_path / "results"), "--no-progress", "--no-report",
        "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}", "--threads", "1",
    ]  # fmt: skip


def impostor_records(cell: Any) -> dict[str, dict]:
    """Records that must not count as ``cell``'s: filed under its hash, each wrong in one way."""
    from tests.conftest import finished_record

    other = finished_record(load_grid(GRIDS_DIR / "smoke.toml").cells[0])
    digest = cell.config_hash
    return {
        "status only": {"status": "finished"},
        "empty config": {"status": "finished", "config": {}, "config_hash": digest},
        "another cell's record": other,
        "another cell's record, renamed": {**other, "config_hash": digest},
        "finished without a matrix": {**finished_record(cell), "accuracy_matrix": []},
    }


def test_record_problem_names_what_makes_a_record_not_its_cells() -> None:
    from benchmark.results import record_problem
    from tests.conftest import finished_record

    cell = load_grid(GRIDS_DIR / "smoke.toml").cells[1]
    assert record_problem(finished_record(cell), cell.config_hash) is None
    problems = {kind: record_problem(r, cell.config_hash) for kind, r in impostor_records(cell).items()}
    assert problems == {
        "status only": "no config",
        "empty config": problems["empty config"],
        "another cell's record": problems["another cell's record"],
        "another cell's record, renamed": problems["another cell's record"],
        "finished without a matrix": "finished without a square accuracy matrix of numbers",
    }
    assert problems["empty config"].startswith("not a whole cell config")
    assert problems["another cell's record"].endswith(f"but it is filed as {cell.config_hash}")


def test_a_record_that_is_not_its_cells_does_not_count_as_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23: another cell's record saved under this cell's hash counted as finished (exit 0),
    and ``report`` showed the wrong cell; so did a record with an empty config or none."""
    kind = "another cell's record, renamed"
    args = tiny_run_args(tmp_path)
    cell = load_grid(tmp_path / "g.toml").cells[0]
    digest = cell.config_hash
    path = tmp_path / "results" / "g" / "cells" / f"{digest}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(impostor_records(cell)[kind]))
    assert main(["report", "--results", str(tmp_path / "results" / "g"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: corrupt cell result {path}: "), err
    assert main(args) == 0
    assert "0 already done, 1 run" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["config_hash"] == digest and record["status"] == "finished" and record["accuracy_matrix"]


def test_a_directory_where_a_record_belongs_is_refused_before_any_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_run_args(tmp_path)
    digest = load_grid(tmp_path / "g.toml").cells[0].config_hash
    (tmp_path / "results" / "g" / "cells" / f"{digest}.json").mkdir(parents=True)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is where a cell record belongs but is not a file" in lines[0]


def test_a_full_disk_ends_the_run_with_one_line_and_leaves_no_lock_or_running_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from mlflow.tracking import MlflowClient

    import benchmark.runner

    def no_space(results_dir: Path, result: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(benchmark.runner, "save_result", no_space)
    assert main(tiny_run_args(tmp_path)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "rerun" in lines[0], lines
    cells = tmp_path / "results" / "g" / "cells"
    assert [p.name for p in cells.iterdir()] == []  # no record, no lock, no temporary file
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}")
    runs = client.search_runs([client.get_experiment_by_name("g").experiment_id])
    assert [(r.data.tags.get("benchmark.kind"), r.info.status) for r in runs] == [("grid", "FAILED")]


def weights_copy(tmp_path: Path, change: str) -> Path:
    """The weights folder, with split-shapes' file truncated, tampered or from another recipe."""
    import shutil

    import torch

    from benchmark import registry
    from benchmark.pretrain import WEIGHTS_DIR, default_recipe, weights_path

    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, folder)
    path = weights_path(default_recipe(registry.create("task", "split-shapes").build().backbone), folder)
    if change == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif change == "tampered":  # a pickle that runs code when loaded without weights_only
        path.write_bytes(b"\x80\x04cos\nsystem\nX\x04\x00\x00\x00echo\x85R.")
    elif change == "another recipe":
        payload = torch.load(path, weights_only=True)
        torch.save({**payload, "recipe_hash": "0" * 12}, path)
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("truncated", "cannot read pretrained backbone"),
        ("tampered", "cannot read pretrained backbone"),
        ("another recipe", "was made by another recipe"),
    ],
)
def test_bad_weights_are_refused_before_any_cell(tmp_path: Path, change: str, message: str) -> None:
    from benchmark.errors import UserError
    from benchmark.runner import run_grid
    from benchmark.track import MlflowTracker

    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID)
    tracker = MlflowTracker("g", f"sqlite:///{tmp_path / 'ml.db'}")
    with pytest.raises(UserError, match=message) as refused:
        run_grid(load_grid(grid), tmp_path / "results", tracker, weights_copy(tmp_path, change), False)
    assert "\n" not in str(refused.value) and "pretrain" in str(refused.value)
    assert not (tmp_path / "results").exists()
