"""One registry for everything pluggable: tasks, selectors, pretraining sets, objectives.

Shaped like timm's model registry (``@register_model`` / ``list_models`` /
``create_model``) but a duplicate name is an error, not a silent overwrite.

    from benchmark import registry

    @registry.register("sample_selector", "kcenter")
    class KCenter: ...

    registry.names("sample_selector", filter="grad*")
    selector = registry.create("sample_selector", "kcenter", **params)

Outside packages add entries through the entry-point group
``core_tokenset_bench.plugins``: each entry point names a module (or callable)
that registers its entries when loaded.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from benchmark.errors import UserError

KINDS: tuple[str, ...] = ("task", "sample_selector", "token_selector", "pretrain_set", "objective")
ENTRY_POINT_GROUP = "core_tokenset_bench.plugins"
_BUILTIN_MODULES: tuple[str, ...] = ("tasks", "methods", "benchmark.objectives")


@dataclass
class Registry:
    """Name → factory per kind. Entries are filled by the ``register`` decorator."""

    entries: dict[str, dict[str, Callable[..., Any]]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    loaded: bool = False

    def register(self, kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        self._check_kind(kind)

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            table = self.entries[kind]
            if name in table:
                raise ValueError(
                    f"duplicate {kind} name {name!r}: already registered by "
                    f"{_origin(table[name])}, again by {_origin(factory)}"
                )
            table[name] = factory
            return factory

        return decorator

    def names(self, kind: str, filter: str | None = None) -> list[str]:
        self._check_kind(kind)
        self.load()
        found = sorted(self.entries[kind])
        return [n for n in found if fnmatch.fnmatchcase(n, filter)] if filter else found

    def get(self, kind: str, name: str) -> Callable[..., Any]:
        self._check_kind(kind)
        self.load()
        table = self.entries[kind]
        if name not in table:
            raise UserError(unknown_name_message(kind.replace("_", " "), name, sorted(table)))
        return table[name]

    def create(self, kind: str, name: str, **params: Any) -> Any:
        factory = self.get(kind, name)
        try:
            inspect.signature(factory).bind(**params)
        except TypeError as error:
            raise UserError(f"bad parameters for {kind} {name!r}: {error}") from None
        return factory(**params)

    def describe(self, kind: str, name: str) -> str:
        """The first line of the entry's docstring."""
        doc = inspect.getdoc(self.get(kind, name)) or ""
        return doc.splitlines()[0] if doc else ""

    def load(self) -> None:
        """Import the built-in modules and the plugins once, so that their decorators run."""
        if self.loaded:
            return
        self.loaded = True  # first, because the imported modules call back into this registry
        try:
            for module in _BUILTIN_MODULES:
                importlib.import_module(module)
            for entry in entry_points(group=ENTRY_POINT_GROUP):
                loaded = entry.load()
                if callable(loaded) and not inspect.isclass(loaded) and not inspect.ismodule(loaded):
                    loaded()
        except BaseException:
            self.loaded = False  # a failed import must not leave a silently partial registry
            raise

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise UserError(unknown_name_message("registry kind", kind, list(KINDS)))


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    """``unknown task 'split-shape' (did you mean 'split-shapes'?); known: ...``."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = ", ".join(known) if known else "none"
    return f"unknown {what} {name!r}{hint}; known: {listing}"


def _origin(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', '?')}"


_REGISTRY = Registry()
register = _REGISTRY.register
names = _REGISTRY.names
get = _REGISTRY.get
create = _REGISTRY.create
describe = _REGISTRY.describe
load = _REGISTRY.load
