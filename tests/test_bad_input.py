"""Bad input, table-driven through the CLI: one line `error: ...`, exit 2, no traceback,
and the finished record already in the results directory left byte for byte as it was.

The table calls the CLI's ``main`` in this process (what ``python -m benchmark`` runs: an
exception escaping it fails the test), which saves an interpreter start and the torch import
per case; tests/test_cli.py and the corrupt-record test below go through a real subprocess."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.grid import load_grid
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
    (GOOD_NAMED, ["--jobs", "0"], "--jobs must be at least 1"),
    (GOOD_NAMED, ["--threads", "0"], "--threads must be at least 1"),
    (GOOD_NAMED, ["--executor", "rey"], "unknown executor 'rey' (did you mean 'ray'?)"),
    (GOOD_NAMED, ["--executor", "ray", "--jobs", "2"], "--jobs sizes the local process pool"),
    (GOOD_NAMED, ["--gpus-per-cell", "1"], "are for --executor ray"),
    (GOOD_NAMED, ["--tracking-uri", "http://127.0.0.1:9/"], "cannot use MLflow tracking URI"),
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
