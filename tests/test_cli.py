"""The CLI's contract: bad input → one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

GOOD = """
tasks = ["split-shapes"]
methods = ["random"]
retention = [0.1]
seeds = [0]
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg", "HOME": str(cwd)},
    )


@pytest.mark.parametrize(
    ("grid_text", "message"),
    [
        (GOOD.replace('"split-shapes"', '"split-shape"'), "did you mean 'split-shapes'"),
        (GOOD.replace('["random"]', '["randm"]'), "unknown sample selector 'randm'"),
        (GOOD.replace("[0.1]", "[0]"), "retention 0 is outside (0, 1]"),
        (GOOD.replace("[0.1]", "[1.5]"), "retention 1.5 is outside (0, 1]"),
        (GOOD.replace("seeds = [0]", "seeds = []"), "'seeds' is empty"),
        (GOOD + "\n[train\n", "malformed grid"),
        (GOOD.replace("[0.1]", "[0.00001]"), "impossible budget"),
        (GOOD + '\n[task_params.split-cifar100]\nroot = "/nonexistent"\n', "names no entry of this grid"),
        (
            GOOD.replace('["split-shapes"]', '["split-cifar100"]')
            + '\n[task_params.split-cifar100]\nroot = "/nonexistent"\n',
            "no CIFAR-100 python archive",
        ),
        (
            GOOD.replace('["random"]', '["random+oracle"]').replace('"split-shapes"', '"split-digits"'),
            "needs ground-truth masks",
        ),
    ],
)
def test_bad_grid_is_one_line_and_exit_2(tmp_path: Path, grid_text: str, message: str) -> None:
    grid = tmp_path / "bad.toml"
    grid.write_text(grid_text)
    done = run_cli(
        "run",
        str(grid),
        "--results",
        str(tmp_path / "results"),
        "--no-progress",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'ml.db'}",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_grid_name_suggests(tmp_path: Path) -> None:
    done = run_cli("run", "smok", cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean 'smoke'" in done.stderr


def test_list_prints_every_entry_with_a_description(tmp_path: Path) -> None:
    from benchmark import registry

    done = run_cli("list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for kind in ("task", "sample_selector", "token_selector"):
        for name in registry.names(kind):
            wanted = " ".join(f"{name} {registry.describe(kind, name)}".split())
            assert any(" ".join(line.split()) == wanted for line in done.stdout.splitlines())


def test_show_and_report_on_missing_results(tmp_path: Path) -> None:
    shown = run_cli("show", "abc", "--results", str(tmp_path / "nothing"), cwd=tmp_path)
    assert shown.returncode == 2 and "no cell record matches" in shown.stderr
    reported = run_cli("report", "--results", str(tmp_path / "nothing"), cwd=tmp_path)
    assert reported.returncode == 2 and "does not exist" in reported.stderr
