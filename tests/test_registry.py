from __future__ import annotations

import pytest

from benchmark import registry
from benchmark.errors import UserError
from benchmark.registry import Registry


def test_duplicate_name_is_an_error_at_registration() -> None:
    table = Registry()

    @table.register("sample_selector", "mine")
    class First:
        """first"""

    with pytest.raises(ValueError, match="duplicate sample_selector name 'mine'"):

        @table.register("sample_selector", "mine")
        class Second:
            """second"""


def test_unknown_name_lists_known_names_and_suggests_the_closest() -> None:
    with pytest.raises(UserError) as caught:
        registry.create("task", "split-shape")
    message = str(caught.value)
    assert "did you mean 'split-shapes'" in message
    for name in registry.names("task"):
        assert name in message
    assert "\n" not in message


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(UserError, match="unknown registry kind 'selector'"):
        registry.names("selector")


def test_names_filter_uses_shell_wildcards() -> None:
    assert registry.names("task", filter="split-*") == [
        "split-cifar100",
        "split-digits",
        "split-shapes",
        "split-shapes-distractors",
        "split-text",
    ]
    assert registry.names("sample_selector", filter="res*") == ["reservoir"]


def test_create_checks_parameters() -> None:
    with pytest.raises(UserError, match="bad parameters for task 'split-shapes'"):
        registry.create("task", "split-shapes", no_such_parameter=1)


def test_builtin_entries_have_descriptions() -> None:
    for kind in ("task", "sample_selector", "token_selector"):
        for name in registry.names(kind):
            assert registry.describe(kind, name), f"{kind} {name} has no one-line description"
