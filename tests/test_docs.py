"""The docs live in the repository and say what the code does: every link resolves inside the
checkout, and the examples in docs/design.md register and build."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", DOCS, ids=lambda path: path.name)
def test_every_relative_link_points_to_a_file_of_the_checkout(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(REPO_ROOT), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_readme_links_the_design_and_the_method_definitions() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "](docs/design.md)" in readme and "](docs/methods.md)" in readme
    assert "../shared" not in readme


def test_the_design_examples_register_and_the_task_builds(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "docs" / "design.md").read_text(), re.S)
    assert len(blocks) == 2
    check = """
from benchmark import registry
from benchmark.pretrain import default_recipe, weights_path

stream = registry.create("task", "two-blobs").build()
assert [len(e.train_labels) for e in stream.experiences] == [200, 200]
assert weights_path(default_recipe(stream.backbone)).exists()  # split-digits' committed backbone
assert "farthest-first" in registry.names("sample_selector")
print("ok")
"""
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks) + check)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)},
        timeout=300,
    )
    assert done.stdout.strip() == "ok", done.stderr[-3000:]
