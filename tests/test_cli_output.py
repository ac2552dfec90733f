"""What the command line says: plain help text that names the real defaults, and every message
through ``logging`` (``-q`` keeps warnings and errors, ``-v`` adds each cell's state)."""

from __future__ import annotations

import pytest

from benchmark.cli import build_parser, main
from benchmark.track import default_tracking_uri
from tests.conftest import GRIDS


def help_text(*command: str) -> str:
    parser = build_parser()
    if command:
        action = next(a for a in parser._actions if a.dest == "command")
        parser = action.choices[command[0]]
    return parser.format_help()


def test_help_is_plain_text_and_lists_every_command() -> None:
    text = help_text()
    assert "``" not in text and ":class:" not in text
    for command in ("list", "run", "reproduce", "report", "show", "pretrain"):
        assert command in text


def test_run_help_names_the_tracking_store_it_really_uses(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    text = " ".join(help_text("run").split())
    assert "$MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db under the working directory" in text


def test_quiet_keeps_errors_and_verbose_adds_each_cells_state(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--tasks", "split-shapes"]) == 0
    assert "split-shapes:" in capsys.readouterr().out  # an info line
    assert main(["-q", "pretrain", "--tasks", "split-shapes"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["pretrain", "--tasks", "split-shapes", "-q"]) == 0  # after the command too
    assert capsys.readouterr().out == ""

    assert main(["-q", "run", "no-such-grid"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: unknown grid 'no-such-grid'")

    dry = ["run", str(GRIDS / "smoke.toml"), "--results", str(tmp_path), "--dry-run", "--only", "method=none"]
    assert main([*dry, "-v"]) == 0
    verbose = capsys.readouterr().out
    assert any(line.startswith("to run: ") and "split-shapes none" in line for line in verbose.splitlines())
    assert main(dry) == 0
    assert "to run: " not in capsys.readouterr().out
