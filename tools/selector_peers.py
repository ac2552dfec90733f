"""The coreset libraries ``tools.perf_selectors`` times the suite against: apricot and submodlib.

Both maximise facility location with a lazy greedy on a dense similarity
kernel; each is given CRAIG's kernel s_ij = c - ||g_i - g_j|| (c the class's
largest distance; any c at least that gives the same greedy choices), built
per class with scikit-learn's ``pairwise_distances`` (what apricot itself calls
for a data matrix), and that kernel's time is counted separately.

apricot (apricot-select) builds its numba kernels inside every ``fit``;
``warm_apricot`` memoises the two kernel factories, so that, as the benchmark
asks, JIT compilation is excluded once each peer has been warmed up.
submodlib (submodlib-py) is C++ behind pybind11, copying the kernel into a
list of lists on every call (part of its time).

Both are optional (``pip install core-tokenset-bench[perf]``);
``available_peers`` lists those that import.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from methods.base import per_class_budgets

PeerRun = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, float]]


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence a C++ extension's own progress prints (they bypass sys.stdout)."""
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def facility_kernel(grads: np.ndarray) -> np.ndarray:
    """c - D for one class: D by scikit-learn, c = the largest distance."""
    from sklearn.metrics import pairwise_distances

    distances = pairwise_distances(grads.astype(np.float64), metric="euclidean")
    return np.subtract(distances.max(), distances, out=distances)


def warm_apricot() -> None:
    """Memoise apricot's numba kernel factories (it compiles them inside every fit otherwise)."""
    import apricot.functions.facilityLocation as facility

    for name in ("calculate_gains", "calculate_gains_sparse", "calculate_gains_sieve"):
        factory = getattr(facility, name)
        if not hasattr(factory, "cache_info"):
            setattr(facility, name, functools.cache(factory))


def _apricot(kernel: np.ndarray, k: int) -> np.ndarray:
    from apricot import FacilityLocationSelection

    selector = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy", verbose=False)
    return np.asarray(selector.fit(kernel).ranking)


def _submodlib(kernel: np.ndarray, k: int) -> np.ndarray:
    from submodlib import FacilityLocationFunction

    function = FacilityLocationFunction(n=len(kernel), mode="dense", sijs=kernel, separate_rep=False)
    with _quiet_stdout():
        chosen = function.maximize(
            budget=k,
            optimizer="LazyGreedy",
            stopIfZeroGain=False,
            stopIfNegativeGain=False,
            verbose=False,
            show_progress=False,
        )
    return np.asarray([index for index, _ in chosen], dtype=np.int64)


def _per_class(optimize: Callable[[np.ndarray, int], np.ndarray]) -> PeerRun:
    def run(grads: np.ndarray, labels: np.ndarray, budget: int) -> tuple[np.ndarray, float]:
        """The per-class selection and the CPU seconds spent building kernels."""
        chosen = []
        kernel_seconds = 0.0
        for label, share in sorted(per_class_budgets(labels, budget).items()):
            if share == 0:
                continue
            members = np.flatnonzero(labels == label)
            started = time.process_time()
            kernel = facility_kernel(grads[members])
            kernel_seconds += time.process_time() - started
            chosen.append(members[optimize(kernel, share)])
        return np.concatenate(chosen), kernel_seconds

    return run


PEERS: dict[str, tuple[str, PeerRun]] = {
    "apricot": ("apricot", _per_class(_apricot)),
    "submodlib": ("submodlib", _per_class(_submodlib)),
}


def missing_peers() -> list[str]:
    """The facility-location peers that do not import here (``pip install -e '.[perf]'`` adds them)."""
    missing = []
    for name, (module, _) in PEERS.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(name)
    return missing


def available_peers() -> dict[str, PeerRun]:
    """The facility-location peers that import here (apricot warmed)."""
    missing = set(missing_peers())
    found = {}
    for name, (_, run) in PEERS.items():
        if name in missing:
            continue
        if name == "apricot":
            warm_apricot()
        found[name] = run
    return found
