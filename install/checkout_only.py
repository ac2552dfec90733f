"""Build backend of the suite: setuptools' own, except that a wheel is refused with one sentence.

The suite runs from a checkout, as Mammoth does: its grids, backbone weights and committed
reference records live in the repository, and a record's provenance names the checkout's git
commit. ``pip install -e .`` (PEP 660, ``build_editable``) works as with plain setuptools;
``pip install .``, ``pip wheel .`` and ``python -m build`` need ``build_wheel`` and stop here.
"""

from __future__ import annotations

from typing import Any

from setuptools.build_meta import (
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
]

REFUSAL = (
    "core-tokenset-bench runs from a checkout, as Mammoth does: clone the repository and run "
    "`pip install -e .` there (a wheel would leave behind the grids, the backbone weights and the "
    "committed results, and a record's provenance names the checkout's git commit)"
)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    raise SystemExit(f"error: {REFUSAL}")


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    raise SystemExit(f"error: {REFUSAL}")
