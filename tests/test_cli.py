"""The CLI's contract: bad input → one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

GOOD = """
tasks = ["split-shapes"]
methods = ["random"]
retention = [0.1]
seeds = [0]
"""


def run_cli(*args: str, cwd: Path, path_before: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m benchmark ARGS`` in a clean environment; ``path_before`` goes first on PYTHONPATH."""
    python_path = str(REPO_ROOT) if path_before is None else f"{path_before}:{REPO_ROOT}"
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": python_path, "MPLBACKEND": "Agg", "HOME": str(cwd)},
    )


# The bad-input table (bad grids and options, each through `run`) is in tests/test_bad_input.py.


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
