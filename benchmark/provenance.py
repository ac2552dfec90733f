"""Where a number came from: suite commit, package versions, device, and the code that computed it."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import io
import platform
import subprocess
import tokenize
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmark import registry
from benchmark.config import CellConfig, canonical_json

if TYPE_CHECKING:
    from benchmark.contracts import TaskStream
    from benchmark.results import CellResult

PACKAGES = ("torch", "timm", "numpy", "scikit-learn", "mlflow", "pandas")
# What decides a cell's numbers; an edited README or report does not make a record "+dirty".
CODE_PATHS = ("benchmark", "methods", "tasks", "grids", "weights", "pyproject.toml")
REPO_ROOT = Path(__file__).resolve().parent.parent


def suite_commit() -> str:
    """The checkout's commit hash, ``+dirty`` if a tracked file of ``CODE_PATHS`` differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def provenance(device: torch.device, commit: str) -> dict[str, Any]:
    return {"commit": commit, "versions": package_versions(), "device": device_name(device)}


# ------------------------------------------------------------------------------- code fingerprints
#
# A cell's record holds the fingerprint of the code that computed it (``provenance["code"]``):
#
# - per registry entry the cell uses (its task, sample selector, token selector and the task's
#   objective): ``src:<hash>`` of the entry's module and of every module of the same top-level
#   package that it imports, directly or not (``methods.coresets`` with ``methods.base``); for an
#   entry from an outside plugin distribution, ``dist:<name>==<version>``;
# - ``engine``: ``src:<hash>`` of the engine modules on the cell's path: ``benchmark.cell`` and every
#   ``benchmark`` module it or the cell's entries import, directly or not, except the bookkeeping
#   modules below, which write and name records but compute no number;
# - ``weights``: the hash of the backbone weights file the cell loads (none when trained from scratch).
#
# Sources are hashed after dropping comments, docstrings and layout, so reformatting or a comment
# leaves a fingerprint alone; any other edit changes it. ``fingerprint`` hashes all of the above.

CODE_KINDS = ("task", "sample_selector", "token_selector", "objective")
IN_TREE_PACKAGES = frozenset({"benchmark", "methods", "tasks"})
ENGINE_ROOT = "benchmark.cell"
BOOKKEEPING_MODULES = frozenset(
    {"benchmark.errors", "benchmark.provenance", "benchmark.registry", "benchmark.results"}
)
_SKIPPED_TOKENS = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER})


def normalized_source(source: str) -> str:
    """The module's tokens without comments, docstrings and layout: one logical line a line.

    Tokens that touch in the source are joined as they were, others by one space; indentation
    is kept as a depth. Two sources that differ only in comments, docstrings, blank lines or
    line breaks inside brackets give the same text.
    """
    docstrings = _docstring_spans(ast.parse(source))
    lines: list[str] = []
    line: list[str] = []
    depth, last_end = 0, (0, 0)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _SKIPPED_TOKENS:
            continue
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NEWLINE:
            if line:
                lines.append("    " * depth + "".join(line))
            line = []
        elif token.type != tokenize.STRING or not any(
            start <= token.start and token.end <= end for start, end in docstrings
        ):
            line.append(token.string if not line or token.start == last_end else " " + token.string)
            last_end = token.end
    return "\n".join(lines)


def _docstring_spans(tree: ast.AST) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every module, class and function docstring."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
                and first.end_lineno is not None
                and first.end_col_offset is not None
            ):
                spans.append(((first.lineno, first.col_offset), (first.end_lineno, first.end_col_offset)))
    return spans


def module_file(name: str) -> Path | None:
    """The source file of module ``name``, or None when it has none (or does not exist)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def imported_modules(name: str, path: Path) -> set[str]:
    """The modules that ``name`` (source ``path``) imports anywhere in its body, resolved to names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            found.add(origin)
            # ``from package import module`` imports a module, ``from module import name`` does not
            # (looked up only inside the suite's and the importer's own packages).
            if origin.split(".")[0] in IN_TREE_PACKAGES | {name.split(".")[0]}:
                found.update(
                    f"{origin}.{alias.name}"
                    for alias in node.names
                    if module_file(f"{origin}.{alias.name}") is not None
                )
    return {module for module in found if module}


@dataclass
class CodeFingerprints:
    """Fingerprints of the code cells run; each module is read and hashed once per instance."""

    weights_dir: Path | None = None
    _sources: dict[str, str] = field(default_factory=dict)  # module → hash of its normalized source
    _imports: dict[str, set[str]] = field(default_factory=dict)
    _files: dict[Path, str] = field(default_factory=dict)  # weights file → its hash
    _module_files: dict[str, Path | None] = field(default_factory=dict)
    _closures: dict[tuple[str, ...], set[str]] = field(default_factory=dict)

    def for_cell(self, config: CellConfig, stream: TaskStream) -> dict[str, Any]:
        """The code fingerprint of ``config`` (``stream``: its task's built stream, for the objective)."""
        used = [
            ("task", config.task),
            ("sample_selector", config.sample_selector),
            ("token_selector", config.token_selector),
            ("objective", stream.objective),
        ]
        entries: dict[str, str] = {}
        engine_roots = {ENGINE_ROOT}
        for kind, name in used:
            if name is None:
                continue
            module = registry.get(kind, name).__module__
            entries[f"{kind}/{name}"] = self.entry(module)
            if module.split(".")[0] in IN_TREE_PACKAGES:
                engine_roots |= {m for m in self._closure({module}) if m.split(".")[0] == "benchmark"}
        code: dict[str, Any] = {"entries": entries, "engine": self.modules_hash(self._engine(engine_roots))}
        weights = self._weights_file(config, stream)
        if weights is not None:
            code["weights"] = self.file_hash(weights)
        code["fingerprint"] = _digest(canonical_json(code))
        return code

    def entry(self, module: str) -> str:
        """``src:<hash>`` of an in-tree entry's module and its package's modules it imports, or
        ``dist:<name>==<version>`` for a module of an installed plugin distribution."""
        top = module.split(".")[0]
        if top not in IN_TREE_PACKAGES:
            distribution = plugin_distribution(top)
            if distribution is not None:
                return distribution
        return self.modules_hash({m for m in self._closure({module}) if m.split(".")[0] == top})

    def modules_hash(self, modules: set[str]) -> str:
        parts = [f"{name}\n{self._source_hash(name)}" for name in sorted(modules)]
        return "src:" + _digest("\n".join(parts))

    def file_hash(self, path: Path) -> str:
        if path not in self._files:
            self._files[path] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return self._files[path]

    def _engine(self, roots: set[str]) -> set[str]:
        engine = {m for m in self._closure(roots) if m.split(".")[0] == "benchmark"}
        return engine - BOOKKEEPING_MODULES

    def _closure(self, roots: set[str]) -> set[str]:
        """``roots`` and every module they import, transitively, that has a source file and lies in
        the same top-level package as the module importing it or in the engine."""
        key = tuple(sorted(roots))
        if key not in self._closures:
            self._closures[key] = self._walk(roots)
        return self._closures[key]

    def _walk(self, roots: set[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            name = stack.pop()
            if name in seen or self._file(name) is None:
                continue
            seen.add(name)
            top = name.split(".")[0]
            stack.extend(
                m for m in self._imported(name) if m.split(".")[0] in {top, "benchmark"} and m not in seen
            )
        return seen

    def _file(self, name: str) -> Path | None:
        if name not in self._module_files:
            self._module_files[name] = module_file(name)
        return self._module_files[name]

    def _imported(self, name: str) -> set[str]:
        if name not in self._imports:
            path = self._file(name)
            self._imports[name] = set() if path is None else imported_modules(name, path)
        return self._imports[name]

    def _source_hash(self, name: str) -> str:
        if name not in self._sources:
            path = self._file(name)
            text = "" if path is None else normalized_source(path.read_text())
            self._sources[name] = _digest(text)
        return self._sources[name]

    def _weights_file(self, config: CellConfig, stream: TaskStream) -> Path | None:
        if config.train.backbone_weights:
            return Path(config.train.backbone_weights).expanduser()
        if not config.train.pretrained:
            return None
        from benchmark.pretrain import WEIGHTS_DIR, default_recipe, weights_path

        recipe = default_recipe(stream.backbone, config.train.pretrain_token_dropout)
        path = weights_path(recipe, self.weights_dir or WEIGHTS_DIR)
        return path if path.exists() else None


def plugin_distribution(top_level: str) -> str | None:
    """``dist:<name>==<version>`` of the installed distribution that provides module ``top_level``:
    the one whose ``core_tokenset_bench.plugins`` entry point names it, else the one that ships it."""
    for entry in entry_points(group=registry.ENTRY_POINT_GROUP):
        if entry.module.split(".")[0] == top_level and entry.dist is not None:
            return f"dist:{entry.dist.name}=={entry.dist.version}"
    for name in packages_distributions().get(top_level, []):
        return f"dist:{name}=={version(name)}"
    return None


def changed_code(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str] | None:
    """What changed between a record's code fingerprint and the current one: ``[]`` when nothing,
    ``None`` when the record has none (made before fingerprints existed), else the parts that
    differ (``engine``, ``weights``, ``sample_selector/gradmatch``, ...)."""
    if not isinstance(recorded, dict) or "fingerprint" not in recorded:
        return None
    if recorded["fingerprint"] == current["fingerprint"]:
        return []
    changed = [part for part in ("engine", "weights") if recorded.get(part) != current.get(part)]
    before, now = recorded.get("entries") or {}, current["entries"]
    changed += [entry for entry in sorted({*before, *now}) if before.get(entry) != now.get(entry)]
    return changed or ["fingerprint"]


def with_code(result: CellResult, code: dict[str, Any]) -> CellResult:
    """``result`` with the code fingerprint in its provenance."""
    return dataclasses.replace(result, provenance={**result.provenance, "code": code})


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
