"""Grid files (TOML) → validated, resolved cells.

    name = "default"                       # optional; defaults to the file's stem
    tasks = ["split-shapes", "split-digits"]
    methods = ["none", "joint", "random", "gradmatch+gradlrp"]
    retention = [0.01, 0.05, 0.1]          # fractions in (0, 1]
    seeds = [0, 1, 2]
    token_fraction = [0.25]                # optional: t for core tokensets (an axis); "auto" picks t per task

    [train]                                # optional: benchmark.config.TrainConfig fields
    epochs = 3

    [task_params.split-shapes]             # optional: constructor parameters per entry
    object_scale = 0.35
    [sample_selector_params.gradmatch]
    ridge = 0.5
    [token_selector_params.atman]
    [method_params."gradmatch+gradlrp"]    # per method: its own token_fraction list
    token_fraction = [0.125, 0.25]

    equivalence_margin = 0.02              # optional: a report setting, in no cell (see below)

    [[exclude]]                            # optional: drop the cells that match every key given
    tasks = ["split-digits"]
    methods = ["gradmatch+gradlrp"]

    [[variant]]                            # optional: the grid again with these keys changed
    train = { replay = "mask" }            # tables merge key by key; lists and values replace
    methods = ["random+gradlrp"]

``equivalence_margin`` is the difference in final accuracy below which the report may call two
memories equivalent (a paired TOST; default ``DEFAULT_EQUIVALENCE_MARGIN``). It says how results
are read, not how they are made: no cell holds it, so it never changes a cell's hash.

A grid with variants is the union of the base grid and each variant (a star
design: sweep one axis at a time around a base regime, instead of the whole
product); a cell in several of them runs once.

TOML cannot hold both ``tasks = [...]`` and a table ``[tasks.<name>]``, so the
per-entry tables of the contract in docs/design.md are spelled ``[task_params.<name>]`` and
``[sample_selector_params.<name>]`` / ``[token_selector_params.<name>]``.
Every problem is a one-line ``UserError`` that names it.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchmark import registry
from benchmark.config import (
    AUTO,
    CURRENT_PROTOCOL,
    DEFAULT_EQUIVALENCE_MARGIN,
    PROTOCOLS,
    TUNABLE_TRAIN_FIELDS,
    CellConfig,
    TrainConfig,
)
from benchmark.contracts import selects_pairs
from benchmark.errors import UserError
from benchmark.registry import unknown_name_message

LIST_KEYS = ("tasks", "methods", "retention", "seeds")
TABLE_KEYS = ("train", "task_params", "sample_selector_params", "token_selector_params", "method_params")
OPTIONAL_KEYS = (
    "name",
    "token_fraction",
    "description",
    "exclude",
    "variant",
    "protocol",
    "stream_seeds",
    "tune",
    "equivalence_margin",
)
# Task parameters a cell's seed sets when ``stream_seeds = true`` (where the task takes them): which data
# is drawn and in which order its classes form the tasks.
STREAM_SEED_PARAMS = ("data_seed", "class_order_seed")
EXCLUDE_KEYS = ("tasks", "methods", "retention", "seeds")
DEFAULT_TOKEN_FRACTIONS = (0.25,)
# [train] settings whose default is None (meaning "decided per cell"): an example of the type they take.
NULLABLE_TRAIN_TYPES: dict[str, Any] = {"epochs": 1, "input_dropout": 0.5, "fused_optimizer": True}
# Bounds that keep a typo from spending hours or gigabytes before a cell runs (a million seeds).
MAX_CELLS = 100_000
MAX_EPOCHS = 1_000
SEED_LIMIT = 2**32  # seeds (and *seed parameters) lie in [0, 2**32): what numpy's and torch's generators take
# A grid's name names folders (results/<name>, reports/<name>) and the MLflow experiment.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    cells: tuple[CellConfig, ...]
    description: str = ""
    equivalence_margin: float = DEFAULT_EQUIVALENCE_MARGIN  # a report setting: in no cell


def load_grid(path: Path, overrides: Sequence[str] = ()) -> Grid:
    """Read, validate and expand a grid file; every problem is a one-line UserError.

    ``overrides`` are ``dotted.key=VALUE`` settings (VALUE in TOML syntax, or a bare
    string) applied to the file's table before validation, e.g.
    ``task_params.split-cifar100.root=/data/cifar`` or ``seeds=[0]``.
    """
    if not path.exists():
        raise UserError(f"grid file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"malformed grid {path}: {error}") from None
    except OSError as error:
        raise UserError(f"cannot read grid {path}: {error.strerror}") from None
    raw = apply_overrides(raw, overrides)
    check_values(raw, f"grid {path.name}")
    return expand_with_variants(raw, path)


def check_values(value: Any, where: str, key: str = "") -> None:
    """Every number of the grid finite and no string with a NUL character, wherever it sits."""
    if isinstance(value, dict):
        for inner_key, inner in value.items():
            check_values(str(inner_key), where, key)
            check_values(inner, where, f"{key}.{inner_key}" if key else str(inner_key))
    elif isinstance(value, list):
        for inner in value:
            check_values(inner, where, key)
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: {key} = {value} is not a finite number")
    elif isinstance(value, str) and "\0" in value:
        raise UserError(f"{where}: {key or 'a key'} holds a NUL character")


def expand_with_variants(raw: dict[str, Any], path: Path) -> Grid:
    """The base grid plus each ``[[variant]]`` (the base with the variant's keys merged in), cells unique."""
    variants = raw.get("variant", [])
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise UserError(f"grid {path.name}: 'variant' must be an array of tables ([[variant]])")
    base = {k: v for k, v in raw.items() if k != "variant"}
    grid = expand_grid(base, path)
    cells = {cell.config_hash: cell for cell in grid.cells}
    for number, variant in enumerate(variants, start=1):
        if {"name", "variant", "equivalence_margin"} & set(variant):
            raise UserError(
                f"grid {path.name}: variant {number} may not set 'name', 'variant' or 'equivalence_margin'"
            )
        merged = merge_tables(base, variant)
        try:
            extra = expand_grid(merged, path)
        except UserError as error:
            raise UserError(f"variant {number}: {error}") from None
        for cell in extra.cells:
            cells.setdefault(cell.config_hash, cell)
    return Grid(
        name=grid.name,
        path=path,
        cells=tuple(cells.values()),
        description=grid.description,
        equivalence_margin=grid.equivalence_margin,
    )


def merge_tables(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` applied: tables merge key by key (recursively), anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_tables(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=VALUE`` set (tables made as needed)."""
    result = copy.deepcopy(raw)
    for override in overrides:
        key, separator, text = override.partition("=")
        parts = key.strip().split(".")
        if not separator or not all(parts):
            raise UserError(f"override {override!r} must look like dotted.key=VALUE")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare string, e.g. a path
        table = result
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise UserError(f"override {override!r}: {part!r} is not a table")
        table[parts[-1]] = value
    return result


def expand_grid(raw: dict[str, Any], path: Path) -> Grid:
    where = f"grid {path.name}"
    known = (*LIST_KEYS, *TABLE_KEYS, *OPTIONAL_KEYS)
    for key in raw:
        if key not in known:
            raise UserError(f"{where}: {unknown_name_message('key', key, list(known))}")
    for key in LIST_KEYS:
        if key not in raw:
            raise UserError(f"{where}: missing key {key!r} (a list)")
        if not isinstance(raw[key], list):
            raise UserError(f"{where}: {key!r} must be a list, got {type(raw[key]).__name__}")
    planned = math.prod(len(raw[key]) for key in LIST_KEYS)
    if planned > MAX_CELLS:
        raise UserError(
            f"{where}: {planned} cells before exclusions, more than the {MAX_CELLS} a grid may have"
        )
    for key in LIST_KEYS:
        _check_list(raw[key], key, where)
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise UserError(
            f"{where}: 'name' must be letters, digits, spaces, '.', '_' or '-' (at most 100, starting with a "
            f"letter or digit; it names folders), got {name!r}"
        )
    tasks = [_check_type(t, str, "tasks", where) for t in raw["tasks"]]
    methods = [_check_type(m, str, "methods", where) for m in raw["methods"]]
    seeds = [_seed(s, "seeds", where) for s in raw["seeds"]]
    retentions = [_fraction(r, "retention", where) for r in raw["retention"]]
    token_fractions = _token_fractions(raw.get("token_fraction", list(DEFAULT_TOKEN_FRACTIONS)), where)
    tables = {key: _table(raw.get(key, {}), key, where) for key in TABLE_KEYS}
    train = _train_config(tables["train"], where)
    protocol = _protocol(raw.get("protocol", CURRENT_PROTOCOL), where)
    tune = _tune(raw.get("tune", {}), train, protocol, where)
    stream_seeds = raw.get("stream_seeds", True)
    if not isinstance(stream_seeds, bool):
        raise UserError(f"{where}: 'stream_seeds' must be true or false, got {stream_seeds!r}")
    for task in tasks:
        registry.get("task", task)
    task_params = {
        t: _resolve("task", t, _table(tables["task_params"].get(t, {}), t, where), where) for t in tasks
    }
    _check_unused(tables["task_params"], tasks, "task_params", where)
    seeded_params = {
        (task, seed): _stream_params(
            task, task_params[task], tables["task_params"].get(task, {}), seed, where
        )
        if stream_seeds
        else task_params[task]
        for task in tasks
        for seed in seeds
    }
    cells: list[CellConfig] = []
    used_samples, used_tokens = set(), set()
    for method in methods:
        sample_name, token_name = _split_method(method, where)
        used_samples.add(sample_name)
        selector = registry.get("sample_selector", sample_name)
        sample_params = _resolve(
            "sample_selector", sample_name, tables["sample_selector_params"].get(sample_name, {}), where
        )
        token_params: dict[str, Any] = {}
        if token_name is not None:
            used_tokens.add(token_name)
            token_params = _resolve(
                "token_selector", token_name, tables["token_selector_params"].get(token_name, {}), where
            )
            if not getattr(selector, "uses_memory", True):
                raise UserError(
                    f"{where}: method {method!r}: {sample_name!r} stores no memory to select tokens of"
                )
        method_table = _table(tables["method_params"].get(method, {}), method, where)
        for key in method_table:
            if key != "token_fraction":
                raise UserError(f"{where}: method_params.{method}: unknown key {key!r} (only token_fraction)")
        fractions = _token_fractions(method_table.get("token_fraction", token_fractions), where)
        if selects_pairs(selector) and token_name is not None:
            fractions = [1.0]  # single-stage selection: the byte budget, not t, sets tokens per sample
        for task in tasks:
            for seed in seeds:
                common = {
                    "grid": name,
                    "task": task,
                    "task_params": seeded_params[task, seed],
                    "method": method,
                    "sample_selector": sample_name,
                    "token_selector": token_name,
                    "selector_params": sample_params,
                    "token_selector_params": token_params,
                    "seed": seed,
                    "train": train,
                    "protocol": protocol,
                    "tune": tune,
                }
                if not getattr(selector, "uses_memory", True):
                    cells.append(CellConfig(retention=None, token_fraction=1.0, **common))
                    continue
                for retention in retentions:
                    for fraction in fractions if token_name is not None else [1.0]:
                        cells.append(CellConfig(retention=retention, token_fraction=fraction, **common))
    cells = _apply_excludes(cells, raw.get("exclude", []), {"tasks": tasks, "methods": methods}, where)
    _check_unused(tables["sample_selector_params"], sorted(used_samples), "sample_selector_params", where)
    _check_unused(tables["token_selector_params"], sorted(used_tokens), "token_selector_params", where)
    _check_unused(tables["method_params"], methods, "method_params", where)
    return Grid(
        name=name,
        path=path,
        cells=tuple(cells),
        description=str(raw.get("description", "")),
        equivalence_margin=_equivalence_margin(raw, where),
    )


def _apply_excludes(
    cells: list[CellConfig], excludes: Any, names: dict[str, list[str]], where: str
) -> list[CellConfig]:
    """Drop the cells that match every key of some ``[[exclude]]`` entry (like a CI matrix's)."""
    if not isinstance(excludes, list) or not all(isinstance(entry, dict) for entry in excludes):
        raise UserError(f"{where}: 'exclude' must be a list of tables ([[exclude]])")
    kept = cells
    for number, entry in enumerate(excludes, start=1):
        label = f"{where}: exclude #{number}"
        if not entry:
            raise UserError(f"{label} is empty")
        for key, values in entry.items():
            if key not in EXCLUDE_KEYS:
                raise UserError(f"{label}: {unknown_name_message('key', key, list(EXCLUDE_KEYS))}")
            _check_list(values, key, label)
            for value in values if key in names else []:
                if value not in names[key]:
                    raise UserError(
                        f"{label}: {unknown_name_message(key[:-1], value, names[key])} (of this grid)"
                    )

        def matches(cell: CellConfig, entry: dict[str, list[Any]] = entry) -> bool:
            fields_of = {
                "tasks": cell.task,
                "methods": cell.method,
                "retention": cell.retention,
                "seeds": cell.seed,
            }
            return all(fields_of[key] in values for key, values in entry.items())

        remaining = [cell for cell in kept if not matches(cell)]
        if len(remaining) == len(kept):
            raise UserError(f"{label} matches no cell")
        kept = remaining
    if not kept:
        raise UserError(f"{where}: 'exclude' leaves no cell")
    return kept


def _split_method(method: str, where: str) -> tuple[str, str | None]:
    parts = method.split("+")
    if len(parts) > 2 or not all(parts):
        raise UserError(
            f"{where}: method {method!r} must be <sample_selector> or <sample_selector>+<token_selector>"
        )
    registry.get("sample_selector", parts[0])
    if len(parts) == 2:
        registry.get("token_selector", parts[1])
        return parts[0], parts[1]
    return parts[0], None


def _resolve(kind: str, name: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    """The entry's full parameters: its defaults overridden by the grid's, checked by signature."""
    factory = registry.get(kind, name)
    signature = inspect.signature(factory)
    accepted = {p.name: p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD}
    for key in params:
        if key not in accepted:
            hint = unknown_name_message(f"parameter of {kind} {name!r}:", key, sorted(accepted))
            raise UserError(f"{where}: {hint}")
    resolved = {key: p.default for key, p in accepted.items() if p.default is not p.empty}
    for key, value in params.items():
        default = accepted[key].default
        if default is not accepted[key].empty and default is not None and not _same_type(value, default):
            raise UserError(
                f"{where}: {kind} {name!r} parameter {key!r} must be {type(default).__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        if key.endswith("seed") and isinstance(value, int):
            _seed(value, f"{kind} {name!r} parameter {key!r}:", where)
        resolved[key] = value
    try:
        factory(**resolved)  # constructors validate their values
    except (ValueError, TypeError) as error:
        raise UserError(f"{where}: {kind} {name!r}: {error}") from None
    except Exception as error:  # a constructor that trips on a value instead of checking it (patch_size = 0)
        raise UserError(f"{where}: {kind} {name!r}: {type(error).__name__}: {error}") from None
    return resolved


def _stream_params(
    task: str, resolved: dict[str, Any], given: dict[str, Any], seed: int, where: str
) -> dict[str, Any]:
    """``stream_seeds = true``: the task's parameters with its data and class order drawn by ``seed``."""
    drawn = [key for key in STREAM_SEED_PARAMS if key in resolved]
    for key in drawn:
        if key in given:
            raise UserError(
                f"{where}: [task_params.{task}] {key} is drawn from each cell's seed while stream_seeds = "
                "true; set stream_seeds = false to fix it"
            )
    params = {**resolved, **{key: seed for key in drawn}}
    try:
        registry.get("task", task)(**params)
    except (ValueError, TypeError) as error:
        raise UserError(f"{where}: task {task!r} at seed {seed}: {error}") from None
    return params


def _protocol(value: Any, where: str) -> int:
    if isinstance(value, bool) or value not in PROTOCOLS:
        raise UserError(f"{where}: 'protocol' must be one of {', '.join(map(str, PROTOCOLS))}, got {value!r}")
    return int(value)


def _tune(table: Any, train: TrainConfig, protocol: int, where: str) -> dict[str, list[Any]]:
    """``[tune]``: training settings → candidate values, each checked as a ``[train]`` value."""
    table = _table(table, "tune", where)
    if table and protocol < 2:
        raise UserError(f"{where}: [tune] needs protocol 2 (protocol 1 holds out no validation data)")
    tune: dict[str, list[Any]] = {}
    for key, values in table.items():
        if key not in TUNABLE_TRAIN_FIELDS:
            raise UserError(
                f"{where}: [tune]: {unknown_name_message('tunable setting', key, list(TUNABLE_TRAIN_FIELDS))}"
            )
        _check_list(values, f"tune.{key}", where)
        tune[key] = []
        for value in values:
            checked = _train_config({key: value}, f"{where} [tune]")
            tune[key].append(getattr(checked, key))
    return tune


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _train_config(table: dict[str, Any], where: str) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    defaults = TrainConfig()
    for key, value in table.items():
        if key not in known:
            raise UserError(f"{where}: [train]: {unknown_name_message('setting', key, sorted(known))}")
        expected = NULLABLE_TRAIN_TYPES.get(key) or getattr(defaults, key)
        if not _same_type(value, expected):
            raise UserError(f"{where}: [train] {key} must be {type(expected).__name__}, got {value!r}")
    try:
        train = TrainConfig(
            **{k: float(v) if isinstance(v, int) and _is_float(k, defaults) else v for k, v in table.items()}
        )
    except ValueError as error:
        raise UserError(f"{where}: [train]: {error}") from None
    if train.eval_batch_size < 1:
        raise UserError(f"{where}: [train]: eval_batch_size must be at least 1, got {train.eval_batch_size}")
    if train.epochs is not None and train.epochs > MAX_EPOCHS:
        raise UserError(f"{where}: [train]: epochs must be at most {MAX_EPOCHS}, got {train.epochs}")
    return train


def _is_float(key: str, defaults: TrainConfig) -> bool:
    return isinstance(NULLABLE_TRAIN_TYPES.get(key) or getattr(defaults, key), float) and not isinstance(
        getattr(defaults, key), bool
    )


def _equivalence_margin(raw: dict[str, Any], where: str) -> float:
    value = raw.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
        raise UserError(f"{where}: 'equivalence_margin' must be a number in (0, 1), got {value!r}")
    return float(value)


def declared_equivalence_margin(path: Path) -> float:
    """The ``equivalence_margin`` a grid file declares (the default where it declares none), read without
    expanding the grid; a one-line UserError when the file or the value is bad."""
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        raise UserError(f"cannot read grid {path}: {error}") from None
    return _equivalence_margin(raw, f"grid {path.name}")


def _check_list(value: Any, key: str, where: str) -> None:
    if not isinstance(value, list):
        raise UserError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    if not value:
        raise UserError(f"{where}: {key!r} is empty")
    seen = set()
    for item in value:
        marker = repr(item)
        if marker in seen:
            raise UserError(f"{where}: {key!r} lists {item!r} twice")
        seen.add(marker)


def _seed(value: Any, key: str, where: str) -> int:
    seed = _check_type(value, int, key, where)
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{where}: {key} {seed} is outside [0, 2**32)")
    return seed


def _check_type(value: Any, kind: type, key: str, where: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{where}: {key!r} entries must be {kind.__name__}, got {value!r}")
    return value


def _fraction(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: {key} values must be numbers, got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise UserError(f"{where}: {key} {value!r} is outside (0, 1]")
    return float(value)


def _fractions(value: Any, key: str, where: str) -> list[float]:
    _check_list(value, key, where)
    return [_fraction(v, key, where) for v in value]


def _token_fractions(value: Any, where: str) -> list[float | str]:
    """Token fractions in (0, 1], or "auto" (t picked per task on held-out training data)."""
    _check_list(value, "token_fraction", where)
    for v in value:
        if isinstance(v, str) and v != AUTO:
            raise UserError(f'{where}: token_fraction values must be numbers or "auto", got {v!r}')
    return [v if v == AUTO else _fraction(v, "token_fraction", where) for v in value]


def _table(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: {key!r} must be a table, got {type(value).__name__}")
    return value


def _check_unused(table: dict[str, Any], used: list[str], key: str, where: str) -> None:
    for name in table:
        if name not in used:
            close = difflib.get_close_matches(name, used, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: [{key}.{name}] names no entry of this grid{hint}")
