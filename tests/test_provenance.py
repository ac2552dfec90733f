from __future__ import annotations

from benchmark.provenance import CODE_PATHS, REPO_ROOT, suite_commit


def test_commit_is_the_checkout_and_names_code_paths_that_exist() -> None:
    commit = suite_commit()
    assert commit != "unknown"
    assert len(commit.removesuffix("+dirty")) == 40
    for path in CODE_PATHS:
        assert (REPO_ROOT / path).exists(), path
