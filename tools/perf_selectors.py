"""Speed and quality of the coreset selectors against their peers (a measurement, not a test).

Times every selector of ``methods.coresets``, exact and with its options for
large pools, against the peers that do the same job, in one process, one
thread each (BLAS limited by threadpoolctl), on seeded synthetic pools
(Gaussian mixtures: d = 64, 10 classes, budget 10% per class), and records
each one's objective next to the exact selector's, so that a faster
algorithm shows what it lost:

- craig: facility location F (higher is better), against apricot and
  submodlib on the same kernel (``tools.selector_peers``) and the naive greedy;
- kcenter: covering radius (lower), against the plain greedy from the same first centre;
- gradmatch: relative residual ||G - sum w g|| / ||G||, mean over classes (lower),
  against a plain NN-OMP that calls scipy's NNLS every step;
- herding: mean distance between class mean and selected mean (lower), against
  the rule written out;
- ocs: mean OCS score of the selection (higher), against the scores from the
  pairwise cosine matrix.

Each contender is warmed up on a small pool first (JIT compilation excluded:
ours are cached numba kernels, apricot's are memoised), then timed: CPU
seconds of this process (``time.process_time``, which a machine shared with
other jobs inflates far less than wall time; one thread, so CPU ~ wall on an
idle machine) and wall seconds, the fastest of ``repeats`` runs (one run above
50,000 samples or when a run takes over 20 CPU seconds). Contenders run only
up to the size where they finish in minutes and fit in memory (``max_n``); the
peers' dense kernels of a 20,000-member class (200,000 samples) would take
3.2 GB each.

    python -m tools.perf_selectors --sizes 10000 50000     # results/perf/selectors.{csv,md}
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import methods.coresets as coresets
from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from benchmark.results import write_text_atomic
from methods.base import per_class_budgets
from tools import selector_peers, selector_references

OUTPUT_DIR = Path("results/perf")
SIZES: tuple[int, ...] = (10_000, 50_000, 200_000, 1_000_000)
CLASSES = 10
FRACTION = 0.1
# The partitioned options split each set (a class; the pool for k-center) into cells of about this many
# samples: CRAIG's fit a dense similarity matrix; herding's and k-center's are larger, since their
# objectives lose more where a cell boundary cuts through a cluster.
CELL_SIZES = {"craig": 5_000, "herding": 20_000, "kcenter": 20_000}
RADIUS_SAMPLE = 50_000  # above this pool size the covering radius is measured on a sample (a lower bound)
REPEAT_MAX_N = 50_000  # above it, one timed run
REPEAT_MAX_SECONDS = 20.0  # a run slower than this is not repeated


def synthetic_pool(n: int, dim: int = 64, classes: int = CLASSES, seed: int = 0) -> SamplePool:
    """A Gaussian mixture: features and gradient proxies both [n, dim] float32, labels drawn uniformly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n).astype(np.int64)
    feature_means = rng.normal(scale=3.0, size=(classes, dim))
    grad_means = rng.normal(scale=1.0, size=(classes, dim))
    features = (feature_means[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    grads = (grad_means[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return SamplePool(features, grads, labels)


# --------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    name: str
    maximise: bool
    value: Callable[[SamplePool, Selection], float]


def _radius(pool: SamplePool, chosen: Selection) -> float:
    points = pool.features
    if len(points) > RADIUS_SAMPLE:
        points = points[np.random.default_rng(0).choice(len(points), RADIUS_SAMPLE, replace=False)]
        points = np.concatenate([points, pool.features[chosen.indices]])
        return coresets.kcenter_radius(points, np.arange(len(points) - len(chosen.indices), len(points)))
    return coresets.kcenter_radius(points, chosen.indices)


def _ocs_mean_score(pool: SamplePool, chosen: Selection) -> float:
    return float(coresets.ocs_scores(pool.grads, None, 0.0)[chosen.indices].mean())


OBJECTIVES: dict[str, Objective] = {
    "herding": Objective(
        "mean distance to class means",
        False,
        lambda pool, chosen: coresets.herding_mean_distance(pool.features, pool.labels, chosen.indices),
    ),
    "kcenter": Objective("covering radius", False, _radius),
    "craig": Objective(
        "facility location F",
        True,
        lambda pool, chosen: coresets.facility_location_value(pool.grads, chosen.indices, pool.labels),
    ),
    "gradmatch": Objective(
        "relative residual",
        False,
        lambda pool, chosen: coresets.gradmatch_residual(
            pool.grads, chosen.indices, chosen.weights, pool.labels
        ),
    ),
    "ocs": Objective("mean OCS score", True, _ocs_mean_score),
}


# --------------------------------------------------------------------------- contenders


# (pool, budget, seed) -> (the selection, CPU seconds spent building a kernel)
Select = Callable[[SamplePool, int, int], tuple[Selection, float]]


@dataclass(frozen=True)
class Contender:
    """One implementation of one selector family, with what it is and how far it runs."""

    family: str
    implementation: str  # "ours", "apricot", "submodlib", "plain"
    options: Callable[[int], dict]  # pool size -> selector parameters ({}: the exact selector)
    select: Select
    max_n: int
    exact: bool  # it computes the exact selector (its objective is the reference)

    def label(self, n: int) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.options(n).items())


def _cells(family: str, set_size: float) -> int:
    return max(2, round(set_size / CELL_SIZES[family]))


def _ours(family: str, options: Callable[[int], dict]) -> Select:
    def select(pool: SamplePool, budget: int, seed: int) -> tuple[Selection, float]:
        chosen = registry.create("sample_selector", family, **options(len(pool)))
        return chosen.select(pool, budget, np.random.default_rng(seed)), 0.0

    return select


def _plain(run: Callable[[SamplePool, int, int], Selection]) -> Select:
    return lambda pool, budget, seed: (run(pool, budget, seed), 0.0)


def _peer(run: selector_peers.PeerRun) -> Select:
    def select(pool: SamplePool, budget: int, seed: int) -> tuple[Selection, float]:
        indices, kernel_seconds = run(pool.grads, pool.labels, budget)
        return Selection.of(indices), kernel_seconds

    return select


def _plain_gradmatch(pool: SamplePool, budget: int, seed: int) -> Selection:
    indices, weights = selector_references.plain_gradmatch(
        pool.grads, pool.labels, budget, 0.5, np.random.default_rng(seed)
    )
    return Selection.of(indices, weights)


def _naive_facility_location(pool: SamplePool, budget: int, seed: int) -> Selection:
    return Selection.of(selector_references.naive_facility_location(pool.grads, pool.labels, budget))


def _plain_kcenter(pool: SamplePool, budget: int, seed: int) -> Selection:
    first = int(np.random.default_rng(seed).integers(len(pool)))  # the draw KCenter makes
    return Selection.of(selector_references.plain_kcenter(pool.features, budget, first))


def contenders(peers: dict[str, selector_peers.PeerRun]) -> list[Contender]:
    """Every implementation timed, exact ones of a family first."""
    exact: Callable[[int], dict] = lambda n: {}  # noqa: E731
    craig_cells: Callable[[int], dict] = lambda n: {"partitions": _cells("craig", n / CLASSES)}  # noqa: E731
    herding_cells: Callable[[int], dict] = lambda n: {"partitions": _cells("herding", n / CLASSES)}  # noqa: E731
    kcenter_cells: Callable[[int], dict] = lambda n: {"partitions": _cells("kcenter", n)}  # noqa: E731
    herding_wide: Callable[[int], dict] = lambda n: {"partitions": 2, "oversample": 8.0}  # noqa: E731
    dense: Callable[[int], dict] = lambda n: {"dense_max": 8192}  # noqa: E731
    found = [
        # exact herding grows as n k d: a million samples in minutes, its options measured against it there
        Contender("herding", "ours", exact, _ours("herding", exact), 1_000_000, True),
        Contender(
            "herding",
            "plain",
            exact,
            _plain(lambda p, b, s: Selection.of(selector_references.plain_herding(p.features, p.labels, b))),
            50_000,
            True,
        ),
        Contender("herding", "ours", herding_cells, _ours("herding", herding_cells), 1_000_000, False),
        # round 1 keeping 8 instead of 2 times each cell's share: the loss against time
        Contender("herding", "ours", herding_wide, _ours("herding", herding_wide), 50_000, False),
        Contender("kcenter", "ours", exact, _ours("kcenter", exact), 200_000, True),
        Contender("kcenter", "plain", exact, _plain(_plain_kcenter), 50_000, True),
        Contender("kcenter", "ours", kcenter_cells, _ours("kcenter", kcenter_cells), 1_000_000, False),
        # dense_max 8192: the 50,000-sample pool's classes of about 5,000 members stay dense (same choices;
        # the default 5000 keeps the committed cells' names)
        Contender("craig", "ours", dense, _ours("craig", dense), 200_000, True),
        *[Contender("craig", name, exact, _peer(run), 50_000, True) for name, run in peers.items()],
        Contender(
            "craig",
            "plain",
            exact,
            _plain(_naive_facility_location),
            10_000,
            True,
        ),
        Contender("craig", "ours", craig_cells, _ours("craig", craig_cells), 1_000_000, False),
        Contender(
            "craig",
            "ours",
            lambda n: {"optimizer": "stochastic"},
            _ours("craig", lambda n: {"optimizer": "stochastic"}),
            50_000,
            False,
        ),
        Contender("gradmatch", "ours", exact, _ours("gradmatch", exact), 200_000, True),
        Contender("gradmatch", "plain", exact, _plain(_plain_gradmatch), 50_000, True),
        Contender(
            "gradmatch",
            "ours",
            lambda n: {"batch_size": 32},
            _ours("gradmatch", lambda n: {"batch_size": 32}),
            1_000_000,
            False,
        ),
        Contender("ocs", "ours", exact, _ours("ocs", exact), 1_000_000, True),
        Contender(
            "ocs",
            "plain",
            exact,
            _plain(lambda p, b, s: Selection.of(selector_references.plain_ocs(p.grads, b))),
            50_000,
            True,
        ),
    ]
    return found


# --------------------------------------------------------------------------- the run


def _timed(contender: Contender, pool: SamplePool, budget: int, seed: int, repeats: int) -> dict:
    """The selection and the fastest of ``repeats`` runs (CPU and wall seconds, kernel CPU seconds).

    A run slower than ``REPEAT_MAX_SECONDS`` is not repeated (its noise is small against its time).
    """
    best: dict = {}
    for _ in range(repeats):
        if best and best["cpu_seconds"] > REPEAT_MAX_SECONDS:
            break
        cpu, wall = time.process_time(), time.perf_counter()
        chosen, kernel_seconds = contender.select(pool, budget, seed)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if not best or cpu < best["cpu_seconds"]:
            best = {"chosen": chosen, "cpu_seconds": cpu, "wall_seconds": wall}
            best["kernel_seconds"] = kernel_seconds
    return best


def _random_value(family: str, pool: SamplePool, budget: int, seed: int) -> float:
    """The objective of a uniform per-class random selection (weights n_c / k_c): the scale's other end."""
    rng = np.random.default_rng(seed)
    indices, weights = [], []
    for label, share in sorted(per_class_budgets(pool.labels, budget).items()):
        members = np.flatnonzero(pool.labels == label)
        indices.append(rng.choice(members, size=share, replace=False))
        weights.append(np.full(share, len(members) / max(share, 1)))
    chosen = Selection.of(np.concatenate(indices), np.concatenate(weights))
    return OBJECTIVES[family].value(pool, chosen)


def _gain_kept(value: float, exact: float, random: float) -> float:
    """How much of the exact selector's advantage over random selection a value keeps, in %."""
    if not all(math.isfinite(v) for v in (value, exact, random)) or exact == random:
        return float("nan")
    return 100.0 * (value - random) / (exact - random)


def _loss(objective: Objective, value: float, exact: float) -> float:
    """How much worse than the exact selector, in % of its objective (negative: better)."""
    if not (math.isfinite(value) and math.isfinite(exact)) or exact == 0:
        return float("nan")
    return 100.0 * ((exact - value) if objective.maximise else (value - exact)) / abs(exact)


def run_selector_perf(
    sizes: tuple[int, ...] = SIZES,
    repeats: int = 3,
    seed: int = 0,
    threads: int = 1,
    with_peers: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """Time every contender on a synthetic pool per size; compare each objective with the exact one."""
    peers = selector_peers.available_peers() if with_peers else {}
    everyone = contenders(peers)
    rows: list[dict] = []
    with threadpool_limits(threads):
        warm = synthetic_pool(2_000, seed=seed + 1)
        for contender in everyone:  # JIT compilation and first-call costs stay out of the timings
            contender.select(warm, 200, seed)
        for n in sizes:
            pool = synthetic_pool(n, seed=seed)
            budget = round(FRACTION * n)
            exact_values: dict[str, float] = {}
            random_values = {family: _random_value(family, pool, budget, seed) for family in OBJECTIVES}
            for contender in everyone:
                if n > contender.max_n:
                    continue
                objective = OBJECTIVES[contender.family]
                sampled = contender.family == "kcenter" and n > RADIUS_SAMPLE
                result = _timed(contender, pool, budget, seed, repeats if n <= REPEAT_MAX_N else 1)
                value = objective.value(pool, result["chosen"])
                if contender.exact:
                    exact_values.setdefault(contender.family, value)
                exact = exact_values.get(contender.family, float("nan"))
                row = {
                    "n": n,
                    "selector": contender.family,
                    "implementation": contender.implementation,
                    "options": contender.label(n),
                    "exact": contender.exact,
                    "cpu_seconds": round(result["cpu_seconds"], 4),
                    "wall_seconds": round(result["wall_seconds"], 4),
                    "kernel_seconds": round(result["kernel_seconds"], 4),
                    "objective": objective.name + (" (on a sample)" if sampled else ""),
                    "value": value,
                    "exact_value": exact,
                    "loss_vs_exact_pct": _loss(objective, value, exact),
                    "random_value": random_values[contender.family],
                    "gain_kept_pct": _gain_kept(value, exact, random_values[contender.family]),
                }
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- tables


def peer_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per size and selector: our exact selector against the fastest peer (CPU s, kernels included)."""
    rows = []
    exact = table[table["exact"]]
    for (n, family), group in exact.groupby(["n", "selector"], sort=False):
        ours = group[group["implementation"] == "ours"]
        others = group[group["implementation"] != "ours"]
        if ours.empty or others.empty:
            continue
        fastest = others.loc[others["cpu_seconds"].idxmin()]
        mine = ours.iloc[0]
        rows.append(
            {
                "n": n,
                "selector": family,
                "ours_cpu_s": mine["cpu_seconds"],
                "fastest_peer": fastest["implementation"],
                "peer_cpu_s": fastest["cpu_seconds"],
                "peer_kernel_s": fastest["kernel_seconds"],
                "speedup": round(fastest["cpu_seconds"] / mine["cpu_seconds"], 2),
                "speedup_without_kernel": round(
                    (fastest["cpu_seconds"] - fastest["kernel_seconds"]) / mine["cpu_seconds"], 2
                ),
                "objective_vs_peer_pct": round(_loss(OBJECTIVES[family], mine["value"], fastest["value"]), 4),
            }
        )
    return pd.DataFrame(rows)


def option_table(table: pd.DataFrame) -> pd.DataFrame:
    """The scalable options: seconds, objective, the exact selector's objective and the loss against it."""
    options = table[~table["exact"]]
    columns = ["n", "selector", "options", "cpu_seconds", "wall_seconds", "value", "exact_value"]
    return options[[*columns, "loss_vs_exact_pct", "random_value", "gain_kept_pct"]].reset_index(drop=True)


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, tablefmt="pipe", floatfmt=".6g")


def write_results(
    table: pd.DataFrame, directory: Path, repeats: int, threads: int, left_out: tuple[str, ...] = ()
) -> None:
    """``selectors.csv`` (every row) and ``selectors.md`` (the two summaries, then every row);
    ``left_out``: peers that were not installed, named in the header so that no reader takes the
    fastest peer shown for the fastest there is."""
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "selectors.csv", table.to_csv(index=False))
    header = (
        "# Sample selector speed and objectives\n\n"
        f"Synthetic Gaussian-mixture pools (d = 64, {CLASSES} classes), budget = {FRACTION:.0%} of n; "
        f"seconds of `select` on {threads} thread ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}), fastest of {repeats} up to n = {REPEAT_MAX_N:,} (one run above, or "
        f"when a run takes over {REPEAT_MAX_SECONDS:g} CPU s); "
        "`cpu` = CPU seconds of the process, `wall` = elapsed. Peers' times include building their "
        "kernel (`kernel_s`). `loss` = how much worse than the exact selector's objective, in %; "
        "`gain_kept` = how much of the exact selector's advantage over a uniform random selection (per "
        "class, weights n/k: `random_value`) an option keeps, in %.\n\n"
    )
    if left_out:
        header += (
            f"**Not installed, so left out: {', '.join(left_out)}** (`pip install -e '.[perf]'`); "
            "the fastest peer below is the fastest of those that ran.\n\n"
        )
    write_text_atomic(
        directory / "selectors.md",
        header
        + "## Exact selectors against the fastest peer\n\n"
        + _markdown(peer_table(table))
        + "\n\n## Options for large pools\n\n"
        + _markdown(option_table(table))
        + "\n\n## Every run\n\n"
        + _markdown(table)
        + "\n",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="leave out apricot and submodlib")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    args = parser.parse_args(argv)

    def show(row: dict) -> None:
        print(
            f"n={row['n']:>8} {row['selector']:<9} {row['implementation']:<9} {row['options']:<22} "
            f"cpu {row['cpu_seconds']:9.3f} s  wall {row['wall_seconds']:9.3f} s  "
            f"{row['objective']} {row['value']:.6g} (loss {row['loss_vs_exact_pct']:.3g}%)",
            flush=True,
        )

    left_out = () if args.no_peers else tuple(selector_peers.missing_peers())
    if left_out:
        print(
            f"warning: {', '.join(left_out)} not installed: left out of the comparison "
            "(pip install -e '.[perf]', or nox -s perf)",
            file=sys.stderr,
            flush=True,
        )
    table = run_selector_perf(
        tuple(args.sizes), args.repeats, args.seed, args.threads, not args.no_peers, on_row=show
    )
    write_results(table, args.out, args.repeats, args.threads, left_out)


if __name__ == "__main__":
    main()
