"""Results follow the code: a record holds the fingerprint of the code that computed it, an edit of
an entry's code (not of its comments) makes its cells stale, and ``--only`` / ``--dry-run`` pick and
show cells without running any."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.grid import load_grid
from benchmark.learner import TaskCache
from benchmark.plan import DONE, FAILED_STATE, STALE, TO_RUN, UNKNOWN, plan_grid, record_state, select_cells
from benchmark.provenance import CodeFingerprints, changed_code, normalized_source
from benchmark.results import cell_path
from tests.conftest import GRIDS, REPO_ROOT

MODULE = '''
"""A module docstring."""
import math  # a comment


def area(radius):
    """A function docstring."""
    return math.pi * radius ** 2


class Shape:
    """A class docstring."""

    sides = (1,
             2)
'''


def test_comments_docstrings_and_layout_leave_the_source_fingerprint_alone() -> None:
    reformatted = (
        "import math\n\n\n\n"
        "def area(radius):\n    '''Another docstring.'''\n    # why\n    return math.pi * radius ** 2\n"
        "class Shape:\n    sides = (1, 2)  # two\n"
    )
    assert normalized_source(reformatted) == normalized_source(MODULE)
    assert normalized_source(MODULE.replace("** 2", "** 3")) != normalized_source(MODULE)
    assert normalized_source(MODULE.replace("(1,", "(0,")) != normalized_source(MODULE)
    # Indentation is code: moving a statement out of a block changes the fingerprint.
    assert normalized_source("if x:\n    a()\n    b()\n") != normalized_source("if x:\n    a()\nb()\n")


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_a_comment_at_the_end_of_any_line_of_a_real_module_changes_nothing(data: st.DataObject) -> None:
    source = (REPO_ROOT / "methods" / "baselines.py").read_text()
    lines = source.splitlines()
    picked = data.draw(st.sets(st.sampled_from(range(len(lines))), max_size=5))
    commented = "\n".join(f"{line}  # note" if i in picked else line for i, line in enumerate(lines))
    try:
        compile(commented, "probe", "exec")
    except SyntaxError:
        assume(False)  # after a line continuation
    # Inside a docstring the "comment" is docstring text, which is left out too.
    assert normalized_source(commented) == normalized_source(source)


@pytest.fixture
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package outside the suite, importable but not installed: ``probe_pkg.entry`` imports a helper."""
    package = tmp_path / "probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("def scale(x):\n    return 2 * x\n")
    (package / "unused.py").write_text("VALUE = 1\n")
    (package / "entry.py").write_text(
        "from probe_pkg.helper import scale\nfrom benchmark.contracts import Selection\n\n"
        "def pick(n):\n    return scale(n)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def test_an_entry_is_hashed_with_the_modules_of_its_package_it_imports(plugin_package: Path) -> None:
    before = CodeFingerprints().entry("probe_pkg.entry")
    assert before.startswith("src:")
    (plugin_package / "unused.py").write_text("VALUE = 2\n")
    assert CodeFingerprints().entry("probe_pkg.entry") == before  # not imported: not its code
    (plugin_package / "helper.py").write_text("def scale(x):\n    # a comment only\n    return 2 * x\n")
    assert CodeFingerprints().entry("probe_pkg.entry") == before
    (plugin_package / "helper.py").write_text("def scale(x):\n    return 3 * x\n")
    assert CodeFingerprints().entry("probe_pkg.entry") != before


def test_an_in_tree_selector_hashes_its_module_and_its_package_helpers() -> None:
    fingerprints = CodeFingerprints()
    closure = fingerprints._closure({"methods.coresets"})
    assert {"methods.coresets", "methods.base"} <= closure
    assert "methods.baselines" not in closure
    engine = fingerprints._engine({"benchmark.cell"})
    assert {"benchmark.cell", "benchmark.train", "benchmark.memory"} <= engine
    assert "benchmark.results" not in engine and "benchmark.provenance" not in engine  # bookkeeping


def smoke_cells(*methods: str):
    grid = load_grid(GRIDS / "smoke.toml")
    return [
        c
        for c in grid.cells
        if c.method in methods and c.train.replay == "drop" and c.token_fraction != "auto"
    ]


def test_a_cell_is_stale_when_its_entry_or_the_engine_changed_and_unknown_without_a_fingerprint() -> None:
    cell = smoke_cells("random+gradlrp")[0]
    code = CodeFingerprints().for_cell(cell, TaskCache().get(cell.task, cell.task_params))
    assert set(code["entries"]) == {
        "task/split-shapes",
        "sample_selector/random",
        "token_selector/gradlrp",
        "objective/classification",
    }
    finished = {"status": "finished", "provenance": {"code": code}}
    assert record_state(finished, code) == (DONE, ())
    assert record_state(None, code) == (TO_RUN, ())
    assert record_state({"status": "finished", "provenance": {}}, code) == (UNKNOWN, ())
    assert record_state({"status": "failed", "provenance": {"code": code}}, code) == (FAILED_STATE, ())
    edited = json.loads(json.dumps(code))
    edited["entries"]["token_selector/gradlrp"] = "src:0000"
    edited["fingerprint"] = "0000"
    assert record_state({"status": "finished", "provenance": {"code": edited}}, code) == (
        STALE,
        ("token_selector/gradlrp",),
    )
    # A failed cell whose code changed since is stale too: the change may be its fix.
    assert record_state({"status": "failed", "provenance": {"code": edited}}, code)[0] == STALE
    engine_changed = {**code, "engine": "src:1111", "fingerprint": "1111"}
    assert changed_code(engine_changed, code) == ["engine"]


def test_only_picks_cells_by_any_setting_and_refuses_what_no_cell_has() -> None:
    cells = load_grid(GRIDS / "smoke.toml").cells
    picked = select_cells(cells, ["method=random+rollout", "train.replay=mask"])
    assert [(c.method, c.train.replay) for c in picked] == [("random+rollout", "mask")]
    either = select_cells(cells, ["method=random", "method=herding", "seed=0", "retention=0.1"])
    assert sorted(c.method for c in either) == ["herding", "random"]
    assert len(select_cells(cells, ["token_fraction=auto"])) == 1
    assert {c.method for c in select_cells(cells, ["retention=none"])} == {"none", "joint"}
    with pytest.raises(UserError, match="did you mean 'method'"):
        select_cells(cells, ["methd=random"])
    with pytest.raises(UserError, match="did you mean 'herding'"):
        select_cells(cells, ["method=hearding"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        select_cells(cells, ["random"])
    with pytest.raises(UserError, match="select no cell"):
        select_cells(cells, ["method=random", "token_fraction=0.5"])  # each value exists, not together


def test_dry_run_lists_every_cell_with_its_state_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    cells = smoke_cells("random", "herding", "none")
    done, stale = cells[0], cells[1]
    cache, fingerprints = TaskCache(), CodeFingerprints()
    for cell, code in ((done, None), (stale, "old")):
        now = fingerprints.for_cell(cell, cache.get(cell.task, cell.task_params))
        record_code = now if code is None else {**now, "engine": "src:old", "fingerprint": "old"}
        path = cell_path(results / "smoke", cell.config_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"status": "finished", "config": cell.to_dict(), "provenance": {"code": record_code}})
        )
    before = sorted(p.name for p in (results / "smoke" / "cells").iterdir())
    argv = ["run", str(GRIDS / "smoke.toml"), "--results", str(results), "--dry-run"]
    only = [f"--only=method={c.method}" for c in cells]
    status = main([*argv, *only, "--tracking-uri", f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"])
    out = capsys.readouterr().out
    assert status == 0
    states = {}
    for line in out.splitlines():
        found = re.match(r"^(\D+?)\s+([0-9a-f]{16})\s", line)
        if found:
            states[found.group(2)] = found.group(1)
    assert states == {done.config_hash: DONE, stale.config_hash: STALE, cells[2].config_hash: TO_RUN}
    assert "dry run: nothing was run" in out
    assert sorted(p.name for p in (results / "smoke" / "cells").iterdir()) == before
    assert not (tmp_path / "db").exists()  # no MLflow store was opened
    assert plan_grid(cells, results / "smoke", cache, fingerprints).to_run() == [stale, cells[2]]
