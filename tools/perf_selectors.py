"""Speed and quality benchmark of the coreset selectors (a measurement, not a test).

Times every selector of ``methods.coresets`` (and ``random`` when registered)
on seeded synthetic pools, and records each one's objective next to a plain
reference implementation's, so that a faster algorithm shows it lost nothing:

- craig: facility-location value F, against the naive greedy (every gain, every step);
- kcenter: covering radius, against a plain numpy greedy from the same first centre;
- gradmatch: relative residual ||G - sum w g|| / ||G|| (mean over classes), against a
  plain NN-OMP that calls ``scipy.optimize.nnls`` on the tall ridge-augmented system;
- herding: mean distance between each class mean and its selected samples' mean.

References run only up to ``reference_max_n`` samples (NaN above).

    python -m tools.perf_selectors            # writes results/perf/selectors.{csv,md}
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

import methods.coresets as coresets  # registers the five selectors
from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from benchmark.errors import UserError
from methods.base import SelectorBase, per_class_budgets

SELECTORS: tuple[str, ...] = ("herding", "kcenter", "craig", "gradmatch", "ocs")
OUTPUT_DIR = Path("results/perf")


def synthetic_pool(n: int, dim: int = 64, classes: int = 10, seed: int = 0) -> SamplePool:
    """A Gaussian mixture: features and gradient proxies both [n, dim] float32, labels drawn uniformly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n).astype(np.int64)
    feature_means = rng.normal(scale=3.0, size=(classes, dim))
    grad_means = rng.normal(scale=1.0, size=(classes, dim))
    features = (feature_means[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    grads = (grad_means[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return SamplePool(features, grads, labels)


# --------------------------------------------------------------------------- plain references


def naive_facility_location(grads: np.ndarray, labels: np.ndarray, budget: int) -> np.ndarray:
    """Per-class naive greedy facility location: all marginal gains recomputed every step."""
    chosen: list[int] = []
    for label, share in sorted(per_class_budgets(labels, budget).items()):
        members = np.flatnonzero(labels == label)
        picked = naive_greedy(coresets.facility_similarity(grads[members]), share)
        chosen.extend(members[picked].tolist())
    return np.asarray(chosen, dtype=np.int64)


def naive_greedy(similarity: np.ndarray, k: int) -> list[int]:
    """Facility location by plain greedy: every step, every gain; ties to the lowest index (argmax)."""
    covered = np.zeros(len(similarity))
    chosen: list[int] = []
    for _ in range(k):
        gains = np.maximum(similarity - covered, 0.0).sum(axis=1)
        gains[chosen] = -np.inf
        chosen.append(int(np.argmax(gains)))
        covered = np.maximum(covered, similarity[chosen[-1]])
    return chosen


def plain_kcenter(features: np.ndarray, k: int, first: int) -> np.ndarray:
    """Sener & Savarese's greedy without pruning: a full distance pass over the pool every step."""
    points = features.astype(np.float64)
    chosen = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    while len(chosen) < k:
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.asarray(chosen, dtype=np.int64)


def plain_gradmatch(
    grads: np.ndarray, labels: np.ndarray, budget: int, ridge: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class NN-OMP as CORDS writes it: scipy NNLS on [A; sqrt(ridge) I] w = [G; 0] at every step."""
    indices: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for label, share in sorted(per_class_budgets(labels, budget).items()):
        if share == 0:
            continue
        members = np.flatnonzero(labels == label)
        g = grads[members].astype(np.float64)
        target = g.sum(axis=0)
        scale = np.linalg.norm(target) * np.linalg.norm(g, axis=1).max()
        picked: list[int] = []
        w = np.zeros(0)
        residual = target
        for _ in range(share):
            correlation = g @ residual
            correlation[picked] = -np.inf
            j = int(np.argmax(correlation))
            if correlation[j] <= 1e-12 * scale:
                break
            picked.append(j)
            system = np.vstack([g[picked].T, np.sqrt(ridge) * np.eye(len(picked))])
            w = nnls(system, np.concatenate([target, np.zeros(len(picked))]), maxiter=50 * len(picked))[0]
            residual = target - w @ g[picked]
        missing = share - len(picked)
        if missing:
            fill = rng.choice(np.setdiff1d(np.arange(len(members)), picked), size=missing, replace=False)
            picked.extend(fill.tolist())
            w = np.concatenate([w, np.ones(missing)])
        indices.append(members[picked])
        weights.append(w)
    return np.concatenate(indices), np.concatenate(weights)


# --------------------------------------------------------------------------- the run


def _timed_select(
    selector: SelectorBase, pool: SamplePool, budget: int, seed: int, repeats: int
) -> tuple[Selection, float]:
    """The selection and the fastest of ``repeats`` timings.

    The machine is shared, so the minimum is the least disturbed run; every run
    starts from the same generator state and makes the same selection.
    """
    timings = []
    for _ in range(repeats):
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        chosen = selector.select(pool, budget, rng)
        timings.append(time.perf_counter() - start)
    return chosen, min(timings)


def _optional_random() -> SelectorBase | None:
    try:
        return registry.create("sample_selector", "random")
    except (UserError, ImportError):  # not registered (yet), or the registry's packages do not import
        return None


def _row(
    n: int, name: str, budget: int, seconds: float, objective: str, value: float, reference: float
) -> dict:
    ratio = value / reference if np.isfinite(reference) and reference != 0 else float("nan")
    return {
        "n": n,
        "selector": name,
        "budget": budget,
        "seconds": round(seconds, 4),
        "objective": objective,
        "value": value,
        "reference": reference,
        "ratio": ratio,
    }


def run_selector_perf(
    sizes: tuple[int, ...] = (1000, 10000, 50000),
    dim: int = 64,
    classes: int = 10,
    fraction: float = 0.1,
    seed: int = 0,
    reference_max_n: int = 10000,
    repeats: int = 3,
) -> pd.DataFrame:
    """Time each selector on a synthetic pool per size; compare its objective with a plain reference."""
    rows: list[dict] = []
    random_selector = _optional_random()
    for n in sizes:
        pool = synthetic_pool(n, dim, classes, seed)
        budget = round(fraction * n)
        with_reference = n <= reference_max_n
        nan = float("nan")
        for name in SELECTORS:
            chosen, seconds = _timed_select(
                registry.create("sample_selector", name), pool, budget, seed, repeats
            )
            if name == "herding":
                value = coresets.herding_mean_distance(pool.features, pool.labels, chosen.indices)
                rows.append(_row(n, name, budget, seconds, "mean distance to class means", value, nan))
            elif name == "kcenter":
                value = coresets.kcenter_radius(pool.features, chosen.indices)
                first = int(np.random.default_rng(seed).integers(n))
                reference = coresets.kcenter_radius(
                    pool.features, plain_kcenter(pool.features, budget, first)
                )
                rows.append(_row(n, name, budget, seconds, "covering radius", value, reference))
            elif name == "craig":
                value = coresets.facility_location_value(pool.grads, chosen.indices, pool.labels)
                reference = nan
                if with_reference:
                    naive = naive_facility_location(pool.grads, pool.labels, budget)
                    reference = coresets.facility_location_value(pool.grads, naive, pool.labels)
                rows.append(_row(n, name, budget, seconds, "facility location F", value, reference))
            elif name == "gradmatch":
                value = coresets.gradmatch_residual(pool.grads, chosen.indices, chosen.weights, pool.labels)
                reference = nan
                if with_reference:
                    ref_indices, ref_weights = plain_gradmatch(
                        pool.grads, pool.labels, budget, 0.5, np.random.default_rng(seed)
                    )
                    reference = coresets.gradmatch_residual(pool.grads, ref_indices, ref_weights, pool.labels)
                rows.append(_row(n, name, budget, seconds, "relative residual", value, reference))
            else:
                rows.append(_row(n, name, budget, seconds, "", nan, nan))
        if random_selector is not None:
            _, seconds = _timed_select(random_selector, pool, budget, seed, repeats)
            rows.append(_row(n, "random", budget, seconds, "", nan, nan))
    return pd.DataFrame(rows)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; results are shared files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_results(table: pd.DataFrame, directory: Path = OUTPUT_DIR, repeats: int = 3) -> None:
    """``selectors.csv`` and ``selectors.md`` (pipe table) under ``directory``, each written atomically."""
    fraction = table["budget"].iloc[0] / table["n"].iloc[0]
    _write_atomically(directory / "selectors.csv", table.to_csv(index=False))
    header = (
        f"# Sample selector speed and objectives\n\n"
        f"Synthetic Gaussian-mixture pools, budget = {fraction:.0%} of n; "
        f"seconds of `select` (time.perf_counter, fastest of {repeats}) on {os.cpu_count()} CPUs "
        f"({platform.machine()}, numpy {np.__version__}). `reference` is the plain implementation's "
        f"objective (NaN: not run), `ratio` = value / reference.\n\n"
    )
    _write_atomically(
        directory / "selectors.md", header + table.to_markdown(index=False, tablefmt="pipe") + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    args = parser.parse_args(argv)
    table = run_selector_perf(sizes=tuple(args.sizes), seed=args.seed, repeats=args.repeats)
    write_results(table, args.out, args.repeats)
    print(table.to_markdown(index=False, tablefmt="pipe"))


if __name__ == "__main__":
    main()
