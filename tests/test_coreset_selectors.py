"""Tests of the coreset selectors in ``methods.coresets``: the selection contract, then each
algorithm against a brute-force or textbook reference on small inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import nnls
from scipy.spatial.distance import cdist

import methods.coresets as coresets  # importing registers the five selectors
from benchmark import registry
from benchmark.contracts import SamplePool
from benchmark.errors import UserError
from methods import facility_location, partitions
from methods.base import per_class_budgets
from tools.selector_references import naive_greedy

NAMES = ("herding", "kcenter", "craig", "gradmatch", "ocs")
PER_CLASS = ("herding", "craig", "gradmatch")
NEEDS_GRADS = ("craig", "gradmatch", "ocs")
CITED = {
    "herding": "Welling",
    "kcenter": "Sener",
    "craig": "Mirzasoleiman",
    "gradmatch": "Killamsetty",
    "ocs": "Yoon",
}
SEEDS = st.integers(0, 2**32 - 1)


def selector(name: str, **params: object):
    return registry.create("sample_selector", name, **params)


def gaussian_pool(seed: int, n: int, dim: int, classes: int = 1, grads_dim: int | None = None) -> SamplePool:
    """Generic (tie-free) continuous data: a Gaussian per class."""
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(classes, size=n)).astype(np.int64)
    centres = rng.normal(size=(classes, dim)) * 2
    features = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    grads = (0.5 * centres[labels][:, : grads_dim or dim] + rng.normal(size=(n, grads_dim or dim))).astype(
        np.float32
    )
    return SamplePool(features, grads, labels)


@st.composite
def pools(draw: st.DrawFn) -> SamplePool:
    """Small pools with all the degenerate cases hypothesis finds: zeros, duplicates, empty classes."""
    n = draw(st.integers(0, 60))
    dim = draw(st.integers(1, 8))
    grads_dim = draw(st.integers(1, 8))
    classes = draw(st.integers(1, 4))
    values = st.floats(-8, 8, width=32, allow_subnormal=False)
    features = draw(arrays(np.float32, (n, dim), elements=values))
    grads = draw(arrays(np.float32, (n, grads_dim), elements=values))
    labels = draw(arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    memory = draw(
        st.none() | arrays(np.float32, st.tuples(st.integers(0, 5), st.just(grads_dim)), elements=values)
    )
    return SamplePool(features, grads, labels, memory)


# --------------------------------------------------------------------------- registry and contract


def test_registered_with_citation_and_capabilities() -> None:
    assert set(NAMES) <= set(registry.names("sample_selector"))
    for name in NAMES:
        assert CITED[name] in registry.describe("sample_selector", name)
        assert selector(name).needs_grads == (name in NEEDS_GRADS)


def test_parameters_are_keyword_only_and_checked() -> None:
    assert selector("gradmatch").ridge == 0.5
    # every scalable option defaults to the exact selector
    assert selector("gradmatch").batch_size == 1
    assert selector("craig").optimizer == "lazy"
    assert (
        selector("craig").partitions == selector("kcenter").partitions == selector("herding").partitions == 1
    )
    assert selector("ocs").tau == 1000.0
    assert selector("gradmatch", ridge=0.0).ridge == 0.0
    with pytest.raises(UserError):
        selector("gradmatch", lam=0.5)
    with pytest.raises(TypeError):
        registry.get("sample_selector", "ocs")(5.0)
    with pytest.raises(ValueError):
        selector("gradmatch", ridge=-1.0)
    with pytest.raises(ValueError):
        selector("craig", dense_max=-1)
    for name, bad in [
        ("craig", {"optimizer": "naive"}),
        ("craig", {"epsilon": 0.0}),
        ("craig", {"partitions": 0}),
        ("kcenter", {"oversample": 0.5}),
        ("herding", {"parallel": "threads"}),
        ("gradmatch", {"batch_size": 0}),
    ]:
        with pytest.raises(ValueError):
            selector(name, **bad)


@pytest.mark.parametrize("name", NEEDS_GRADS)
def test_missing_grads_is_a_clear_error(name: str) -> None:
    pool = gaussian_pool(0, 10, 3)
    without = SamplePool(pool.features, None, pool.labels)
    with pytest.raises(ValueError, match="grads"):
        selector(name).select(without, 3, np.random.default_rng(0))


@pytest.mark.parametrize("name", ("herding", "kcenter"))
def test_feature_selectors_need_no_grads(name: str) -> None:
    pool = gaussian_pool(0, 10, 3)
    chosen = selector(name).select(SamplePool(pool.features, None, pool.labels), 4, np.random.default_rng(0))
    assert len(chosen.indices) == 4


SCALABLE = [
    ("craig", {"optimizer": "stochastic"}),
    ("craig", {"partitions": 3}),
    ("craig", {"partitions": 2, "optimizer": "stochastic", "oversample": 1.5, "dense_max": 3}),
    ("kcenter", {"partitions": 3}),
    ("kcenter", {"partitions": 4, "oversample": 1.0}),
    ("herding", {"partitions": 3}),
    ("gradmatch", {"batch_size": 4}),
    ("gradmatch", {"batch_size": 7, "ridge": 0.0}),
]


@pytest.mark.parametrize(
    ("name", "params"),
    [(name, {}) for name in NAMES] + [("craig", {"dense_max": 2}), ("gradmatch", {"ridge": 0.0})] + SCALABLE,
    ids=str,
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool=pools(), budget=st.integers(0, 70), seed=SEEDS)
def test_selection_contract(name: str, params: dict, pool: SamplePool, budget: int, seed: int) -> None:
    first = selector(name, **params).select(pool, budget, np.random.default_rng(seed))
    again = selector(name, **params).select(pool, budget, np.random.default_rng(seed))
    n = len(pool)
    assert first.indices.dtype == np.int64 and first.weights.dtype == np.float32
    assert len(first.indices) == min(budget, n) == len(first.weights)
    assert len(np.unique(first.indices)) == len(first.indices)
    assert np.all((first.indices >= 0) & (first.indices < n))
    assert np.all(np.isfinite(first.weights)) and np.all(first.weights >= 0)
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.weights, again.weights)
    if name in PER_CLASS:
        chosen_labels = pool.labels[first.indices]
        for label, share in per_class_budgets(pool.labels, budget).items():
            assert int(np.sum(chosen_labels == label)) == share


@pytest.mark.parametrize("name", NAMES)
def test_empty_pool_and_zero_budget(name: str) -> None:
    empty = SamplePool(np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    assert len(selector(name).select(empty, 5, np.random.default_rng(0)).indices) == 0
    pool = gaussian_pool(1, 12, 4, classes=2)
    chosen = selector(name).select(pool, 0, np.random.default_rng(0))
    assert len(chosen.indices) == 0 and len(chosen.weights) == 0


# --------------------------------------------------------------------------- herding


def unit(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float64)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def assert_herding_steps(features: np.ndarray, order: list[int]) -> None:
    """iCaRL's rule written out: step t takes an unchosen i minimising ||mu - (sum_S h + h_i) / t||.

    Checked step by step along the selector's own order, so that exact ties (a class of two
    is symmetric about its mean) may go either way up to rounding.
    """
    h = unit(features)
    mu = h.mean(axis=0)
    for t in range(1, len(order) + 1):
        before = order[: t - 1]
        distances = np.linalg.norm(mu - (h[before].sum(axis=0) + h) / t, axis=1)
        distances[before] = np.inf
        assert order[t - 1] not in before
        assert distances[order[t - 1]] <= distances.min() + 1e-12


def class_order(indices: np.ndarray, labels: np.ndarray, label: int) -> list[int]:
    """The selection's indices of one class, in the order chosen."""
    return [int(i) for i in indices if labels[i] == label]


@settings(max_examples=30, deadline=None)
@given(
    seed=SEEDS,
    n=st.integers(2, 40),
    dim=st.integers(2, 6),
    classes=st.integers(1, 3),
    fraction=st.floats(0.05, 1),
)
def test_herding_matches_the_explicit_rule(
    seed: int, n: int, dim: int, classes: int, fraction: float
) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    budget = max(1, round(fraction * n))
    chosen = selector("herding").select(pool, budget, np.random.default_rng(0))
    for label, share in per_class_budgets(pool.labels, budget).items():
        members = np.flatnonzero(pool.labels == label)
        order = class_order(chosen.indices, pool.labels, label)
        assert len(order) == share
        assert_herding_steps(pool.features[members], np.searchsorted(members, order).tolist())
    np.testing.assert_array_equal(chosen.weights, 1.0)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 40), dim=st.integers(1, 6), classes=st.integers(1, 3))
def test_herding_first_pick_is_nearest_to_class_mean(seed: int, n: int, dim: int, classes: int) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    budget = len(np.unique(pool.labels))  # one per class
    chosen = selector("herding").select(pool, budget, np.random.default_rng(0))
    h = unit(pool.features)
    for label, share in per_class_budgets(pool.labels, budget).items():
        if share == 0:
            continue
        members = np.flatnonzero(pool.labels == label)
        gaps = np.linalg.norm(h[members] - h[members].mean(axis=0), axis=1)
        pick = class_order(chosen.indices, pool.labels, label)[0]
        assert np.linalg.norm(h[pick] - h[members].mean(axis=0)) <= gaps.min() + 1e-12


def test_herding_normalises_features() -> None:
    pool = gaussian_pool(3, 50, 5, classes=2)
    scales = np.random.default_rng(4).uniform(0.1, 10, size=(50, 1)).astype(np.float32)
    rescaled = SamplePool(pool.features * scales, None, pool.labels)
    a = selector("herding").select(pool, 12, np.random.default_rng(0))
    b = selector("herding").select(rescaled, 12, np.random.default_rng(0))
    np.testing.assert_array_equal(a.indices, b.indices)


def test_herding_mean_distance_matches_direct_computation() -> None:
    pool = gaussian_pool(5, 40, 4, classes=3)
    indices = np.array([0, 5, 17, 30, 39])
    h = unit(pool.features)
    gaps = []
    for label in np.unique(pool.labels):
        members = np.flatnonzero(pool.labels == label)
        picked = np.intersect1d(members, indices)
        if len(picked):
            gaps.append(np.linalg.norm(h[members].mean(axis=0) - h[picked].mean(axis=0)))
    assert coresets.herding_mean_distance(pool.features, pool.labels, indices) == pytest.approx(np.mean(gaps))
    assert coresets.herding_mean_distance(pool.features, pool.labels, np.arange(40)) == pytest.approx(
        0, abs=1e-12
    )


# --------------------------------------------------------------------------- k-center


def reference_kcenter(features: np.ndarray, k: int, first: int) -> list[int]:
    """Sener & Savarese's Algorithm 1 without pruning: full distance pass each step."""
    x = features.astype(np.float64)
    chosen = [first]
    nearest = np.linalg.norm(x - x[first], axis=1)
    while len(chosen) < k:
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(x - x[chosen[-1]], axis=1))
    return chosen


@settings(max_examples=25, deadline=None)
@given(
    seed=SEEDS, n=st.integers(1, 300), dim=st.integers(1, 8), classes=st.integers(1, 6), k=st.integers(1, 80)
)
def test_kcenter_equals_plain_greedy_from_the_generators_first_centre(
    seed: int, n: int, dim: int, classes: int, k: int
) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    k = min(k, n)
    chosen = selector("kcenter").select(pool, k, np.random.default_rng(seed))
    first = int(np.random.default_rng(seed).integers(n))
    assert chosen.indices.tolist() == reference_kcenter(pool.features, k, first)
    np.testing.assert_array_equal(chosen.weights, 1.0)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 10), dim=st.integers(1, 3), k=st.integers(1, 4))
def test_kcenter_radius_within_twice_optimal(seed: int, n: int, dim: int, k: int) -> None:
    pool = gaussian_pool(seed, n, dim, classes=2)
    k = min(k, n)
    chosen = selector("kcenter").select(pool, k, np.random.default_rng(seed))
    optimal = min(
        coresets.kcenter_radius(pool.features, list(s)) for s in itertools.combinations(range(n), k)
    )
    assert coresets.kcenter_radius(pool.features, chosen.indices) <= 2 * optimal + 1e-9


def test_kcenter_radius_is_the_covering_radius() -> None:
    features = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    assert coresets.kcenter_radius(features, [0]) == pytest.approx(10.0)
    assert coresets.kcenter_radius(features, [0, 3]) == pytest.approx(5.0)
    assert coresets.kcenter_radius(features, [0, 1, 3]) == pytest.approx(0.0 + 1.0)


# --------------------------------------------------------------------------- CRAIG


def test_craig_similarity_is_offset_minus_distance() -> None:
    grads = gaussian_pool(7, 30, 5).grads
    similarity = coresets.facility_similarity(grads)
    distances = cdist(grads.astype(np.float64), grads.astype(np.float64))
    offset = similarity[0, 0]
    assert offset >= distances.max()
    np.testing.assert_allclose(similarity, offset - distances, atol=1e-9 * offset)


@pytest.mark.parametrize("dense_max", [5000, 0, 7])  # dense, matrix-free, matrix-free with a small cache
@settings(max_examples=25, deadline=None)
@given(
    seed=SEEDS, n=st.integers(1, 60), dim=st.integers(1, 6), classes=st.integers(1, 3), rounded=st.booleans()
)
def test_craig_lazy_greedy_equals_naive_greedy(
    dense_max: int, seed: int, n: int, dim: int, classes: int, rounded: bool
) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    if rounded:  # integer gradients: many exactly equal gains, so the tie rule is exercised
        pool = SamplePool(pool.features, np.round(pool.grads), pool.labels)
    budget = max(1, n // 2)
    chosen = selector("craig", dense_max=dense_max).select(pool, budget, np.random.default_rng(0))
    for label, share in per_class_budgets(pool.labels, budget).items():
        members = np.flatnonzero(pool.labels == label)
        expected = naive_greedy(coresets.facility_similarity(pool.grads[members]), share)
        assert class_order(chosen.indices, pool.labels, label) == [int(members[i]) for i in expected]


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 40), dim=st.integers(1, 5), classes=st.integers(1, 3))
def test_craig_first_pick_is_the_medoid(seed: int, n: int, dim: int, classes: int) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    budget = len(np.unique(pool.labels))
    chosen = selector("craig").select(pool, budget, np.random.default_rng(0))
    for label, share in per_class_budgets(pool.labels, budget).items():
        if share == 0:
            continue
        members = np.flatnonzero(pool.labels == label)
        g = pool.grads[members].astype(np.float64)
        pick = class_order(chosen.indices, pool.labels, label)[0]
        distance_sums = cdist(g, g).sum(axis=1)
        # a medoid: in 1-D every point between the two middle ones has the same sum, so ties are exact
        # in theory and differ in the last bits in floating point
        assert distance_sums[members == pick][0] <= distance_sums.min() * (1 + 1e-9) + 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 10), dim=st.integers(1, 3), k=st.integers(1, 4))
def test_craig_within_one_minus_one_over_e_of_optimal(seed: int, n: int, dim: int, k: int) -> None:
    pool = gaussian_pool(seed, n, dim)
    k = min(k, n)
    chosen = selector("craig").select(pool, k, np.random.default_rng(0))
    optimal = max(
        coresets.facility_location_value(pool.grads, list(s)) for s in itertools.combinations(range(n), k)
    )
    assert coresets.facility_location_value(pool.grads, chosen.indices) >= (1 - 1 / math.e) * optimal - 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 60), dim=st.integers(1, 6), classes=st.integers(1, 4))
def test_craig_weights_are_cluster_sizes(seed: int, n: int, dim: int, classes: int) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    budget = max(1, n // 3)
    chosen = selector("craig").select(pool, budget, np.random.default_rng(0))
    for label in np.unique(pool.labels):
        members = np.flatnonzero(pool.labels == label)
        mine = np.isin(chosen.indices, members)
        picked = chosen.indices[mine]
        if len(picked) == 0:  # a small class can get no share of the budget
            continue
        assert chosen.weights[mine].sum() == len(members)
        g = pool.grads.astype(np.float64)
        nearest = picked[np.argmin(cdist(g[members], g[picked]), axis=1)]
        np.testing.assert_array_equal(chosen.weights[mine], [np.sum(nearest == j) for j in picked])


def test_craig_weights_with_duplicates_count_each_chosen_copy() -> None:
    # Every member chosen: each is its own nearest, duplicates included, so every weight is 1.
    grads = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0], [2.0, 0.0], [5.0, 5.0]], dtype=np.float32)
    pool = SamplePool(np.zeros((5, 1), np.float32), grads, np.zeros(5, np.int64))
    chosen = selector("craig").select(pool, 5, np.random.default_rng(0))
    assert sorted(chosen.indices.tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(chosen.weights, 1.0)


def test_facility_location_value_matches_direct_computation() -> None:
    pool = gaussian_pool(9, 30, 4, classes=2)
    indices = np.array([1, 4, 20, 28])
    total = 0.0
    for label in np.unique(pool.labels):
        members = np.flatnonzero(pool.labels == label)
        g = pool.grads[members].astype(np.float64)
        offset = coresets.facility_similarity(g)[0, 0]
        picked = np.flatnonzero(np.isin(members, indices))
        if len(picked):
            total += np.sum(offset - cdist(g, g[picked]).min(axis=1))
    assert coresets.facility_location_value(pool.grads, indices, pool.labels) == pytest.approx(total)


# --------------------------------------------------------------------------- GradMatch


def regularised_objective(grads: np.ndarray, chosen: np.ndarray, weights: np.ndarray, ridge: float) -> float:
    g = grads.astype(np.float64)
    return float(np.sum((g.sum(axis=0) - weights @ g[chosen]) ** 2) + ridge * np.sum(weights**2))


def reference_weights(grads: np.ndarray, chosen: list[int], ridge: float) -> np.ndarray:
    """CORDS's step: NNLS on the ridge-augmented tall system [A; sqrt(ridge) I] w = [G; 0]."""
    g = grads.astype(np.float64)
    system = np.vstack([g[chosen].T, np.sqrt(ridge) * np.eye(len(chosen))])
    target = np.concatenate([g.sum(axis=0), np.zeros(len(chosen))])
    return nnls(system, target, maxiter=100 * len(chosen))[0]


@pytest.mark.parametrize("ridge", [0.5, 0.0, 3.0])
@settings(max_examples=40, deadline=None)
@given(
    seed=SEEDS,
    n=st.integers(1, 40),
    dim=st.integers(1, 8),
    fraction=st.floats(0.05, 1),
    zero_mean=st.booleans(),
)
def test_gradmatch_omp_steps_match_a_reference_omp(
    ridge: float, seed: int, n: int, dim: int, fraction: float, zero_mean: bool
) -> None:
    # zero-mean gradients make NNLS drop chosen samples now and then (a positive-mean class rarely does)
    grads = gaussian_pool(seed, n, dim).grads.astype(np.float64)
    if zero_mean:
        grads = np.random.default_rng(seed).normal(size=(n, dim))
    k = max(1, round(fraction * n))
    chosen, weights = coresets.gradmatch_omp(grads, k, ridge)
    target = grads.sum(axis=0)
    scale = np.linalg.norm(target) * np.linalg.norm(grads, axis=1).max() + 1e-300
    for step in range(len(chosen) + 1):
        prefix = chosen[:step].tolist()
        w = reference_weights(grads, prefix, ridge) if prefix else np.zeros(0)
        correlation = grads @ (target - w @ grads[prefix])
        correlation[prefix] = -np.inf
        if step < len(chosen):  # each pick maximises <g_j, r> over the unchosen
            assert correlation[chosen[step]] >= correlation.max() - 1e-9 * scale
            assert correlation[chosen[step]] > -1e-9 * scale
        elif len(chosen) < k:  # it stopped early only where no correlation was positive
            assert correlation.max() <= 1e-9 * scale
    reference = reference_weights(grads, chosen.tolist(), ridge) if len(chosen) else np.zeros(0)
    ours = regularised_objective(grads, chosen, weights, ridge)
    best = regularised_objective(grads, chosen, reference, ridge)
    assert np.all(weights >= 0)
    assert ours <= best + 1e-9 * (best + target @ target)
    if ridge > 0:  # strictly convex: the minimiser is unique
        np.testing.assert_allclose(weights, reference, atol=1e-7 * (1 + np.abs(reference).max()))


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 8))
def test_gradmatch_residual_shrinks_to_zero_without_ridge(seed: int, n: int) -> None:
    # With ridge 0 and n <= d independent gradients, G = sum g_i is matched exactly (w = 1) only when
    # all n are chosen, and NNLS over a growing nested set can only lower the residual. With the
    # ridge (CORDS: 0.5) the optimum shrinks w below 1, so the residual at k = n stays > 0.
    pool = gaussian_pool(seed, n, 8)
    residuals = []
    for k in range(1, n + 1):
        chosen = selector("gradmatch", ridge=0.0).select(pool, k, np.random.default_rng(0))
        residuals.append(coresets.gradmatch_residual(pool.grads, chosen.indices, chosen.weights))
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(residuals))
    assert residuals[-1] < 1e-9
    np.testing.assert_allclose(chosen.weights, 1.0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 40), dim=st.integers(1, 8))
def test_gradmatch_regularised_objective_is_non_increasing(seed: int, n: int, dim: int) -> None:
    grads = gaussian_pool(seed, n, dim).grads
    previous = regularised_objective(grads, np.zeros(0, np.int64), np.zeros(0), 0.5)
    for k in range(1, n + 1):
        chosen, weights = coresets.gradmatch_omp(grads, k, 0.5)
        if len(chosen) < k:  # stopped early: the rest is a random fill, not OMP
            break
        current = regularised_objective(grads, chosen, weights, 0.5)
        assert current <= previous * (1 + 1e-12) + 1e-12
        previous = current


def test_gradmatch_with_ridge_matches_closed_form_at_full_budget() -> None:
    # All weights of the unconstrained ridge solution are positive here, so NNLS must return it.
    pool = gaussian_pool(11, 5, 8)
    g = pool.grads.astype(np.float64)
    closed = np.linalg.solve(g @ g.T + 0.5 * np.eye(5), g @ g.sum(axis=0))
    assert np.all(closed > 0)
    chosen = selector("gradmatch").select(pool, 5, np.random.default_rng(0))
    order = np.argsort(chosen.indices)
    np.testing.assert_allclose(chosen.weights[order], closed, rtol=1e-5)
    expected = np.linalg.norm(g.sum(axis=0) - closed @ g) / np.linalg.norm(g.sum(axis=0))
    assert coresets.gradmatch_residual(pool.grads, chosen.indices, chosen.weights) == pytest.approx(
        expected, rel=1e-5
    )
    assert expected > 1e-3  # the ridge keeps it from zero


def test_gradmatch_fills_randomly_with_weight_one_after_an_early_stop() -> None:
    grads = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    pool = SamplePool(np.zeros((4, 1), np.float32), grads, np.zeros(4, np.int64))
    omp, weights = coresets.gradmatch_omp(grads, 3, ridge=0.0)
    assert omp.tolist() == [0] and weights.tolist() == [1.0]  # r = 0 after one pick: nothing correlates
    chosen = selector("gradmatch", ridge=0.0).select(pool, 3, np.random.default_rng(42))
    expected_fill = np.random.default_rng(42).choice(np.array([1, 2, 3]), size=2, replace=False)
    assert chosen.indices.tolist() == [0, *expected_fill.tolist()]
    np.testing.assert_array_equal(chosen.weights, 1.0)


def test_gradmatch_keeps_a_sample_whose_nnls_weight_drops_to_zero() -> None:
    # G = (1, 0). OMP takes a = (1, .5) first (largest <g, G>), then b = (.9, .18) (largest <g, r>);
    # the unconstrained fit G = -0.67 a + 1.85 b is infeasible, so NNLS sets w_a = 0: a stays, weight 0.
    grads = np.array([[1.0, 0.5], [0.9, 0.18], [-0.9, -0.68]], dtype=np.float32)
    pool = SamplePool(np.zeros((3, 1), np.float32), grads, np.zeros(3, np.int64))
    chosen = selector("gradmatch", ridge=0.0).select(pool, 2, np.random.default_rng(0))
    assert chosen.indices.tolist() == [0, 1]
    b = grads[1].astype(np.float64)
    np.testing.assert_allclose(chosen.weights, [0.0, b[0] / (b @ b)], rtol=1e-6)


def test_gradmatch_residual_matches_direct_computation() -> None:
    pool = gaussian_pool(13, 30, 4, classes=2)
    indices, weights = np.array([2, 3, 25]), np.array([3.0, 0.5, 7.0])
    g = pool.grads.astype(np.float64)
    per_class = []
    for label in np.unique(pool.labels):
        members = np.flatnonzero(pool.labels == label)
        inside = np.isin(indices, members)
        target = g[members].sum(axis=0)
        per_class.append(
            np.linalg.norm(target - weights[inside] @ g[indices[inside]]) / np.linalg.norm(target)
        )
    assert coresets.gradmatch_residual(pool.grads, indices, weights, pool.labels) == pytest.approx(
        np.mean(per_class)
    )
    single = np.linalg.norm(g.sum(axis=0) - weights @ g[indices]) / np.linalg.norm(g.sum(axis=0))
    assert coresets.gradmatch_residual(pool.grads, indices, weights) == pytest.approx(single)


# --------------------------------------------------------------------------- OCS


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def direct_ocs_scores(grads: np.ndarray, memory: np.ndarray | None, tau: float) -> np.ndarray:
    """Yoon et al.'s three terms with an explicit n x n cosine matrix."""
    g = grads.astype(np.float64)
    n = len(g)
    pairwise = np.array([[cosine(g[i], g[j]) for j in range(n)] for i in range(n)])
    similarity = np.array([cosine(g[i], g.mean(axis=0)) for i in range(n)])
    diversity = np.array(
        [-(pairwise[i].sum() - pairwise[i, i]) / (n - 1) if n > 1 else 0.0 for i in range(n)]
    )
    if memory is None or len(memory) == 0:
        affinity = np.zeros(n)
    else:
        affinity = np.array([cosine(g[i], memory.astype(np.float64).mean(axis=0)) for i in range(n)])
    return similarity + diversity + tau * affinity


@settings(max_examples=40, deadline=None)
@given(pool=pools(), tau=st.sampled_from([0.0, 1.0, 1000.0]))
def test_ocs_scores_equal_the_formula(pool: SamplePool, tau: float) -> None:
    expected = direct_ocs_scores(pool.grads, pool.memory_grads, tau)
    np.testing.assert_allclose(
        coresets.ocs_scores(pool.grads, pool.memory_grads, tau), expected, atol=1e-9 * (1 + tau)
    )


@settings(max_examples=40, deadline=None)
@given(pool=pools(), budget=st.integers(0, 70), tau=st.sampled_from([0.0, 1000.0]))
def test_ocs_keeps_the_top_scores_ties_to_lower_index(pool: SamplePool, budget: int, tau: float) -> None:
    scores = coresets.ocs_scores(pool.grads, pool.memory_grads, tau)
    ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    chosen = selector("ocs", tau=tau).select(pool, budget, np.random.default_rng(0))
    assert chosen.indices.tolist() == ranking[:budget]
    np.testing.assert_array_equal(chosen.weights, 1.0)


def test_ocs_memory_affinity_steers_the_choice() -> None:
    rng = np.random.default_rng(17)
    grads = rng.normal(size=(40, 6)).astype(np.float32)
    memory = np.tile(grads[23], (3, 1)) * 2
    pool = SamplePool(np.zeros((40, 1), np.float32), grads, np.zeros(40, np.int64), memory)
    assert selector("ocs").select(pool, 1, np.random.default_rng(0)).indices.tolist() == [23]
    without = SamplePool(pool.features, grads, pool.labels, None)
    empty = SamplePool(pool.features, grads, pool.labels, np.zeros((0, 6), np.float32))
    np.testing.assert_array_equal(
        selector("ocs").select(without, 10, np.random.default_rng(0)).indices,
        selector("ocs").select(empty, 10, np.random.default_rng(0)).indices,
    )
    np.testing.assert_array_equal(
        selector("ocs").select(without, 10, np.random.default_rng(0)).indices,
        selector("ocs", tau=0.0).select(pool, 10, np.random.default_rng(0)).indices,
    )


# --------------------------------------------------------------------------- facility location kernels


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 3),
    n=st.integers(1, 3000) | st.integers(3000, 40000),
    seed=SEEDS,
)
def test_compiled_gains_are_numpys_sums_bit_for_bit(rows: int, n: int, seed: int) -> None:
    # the lazy greedy's exactness (and the choices of every committed cell) rests on this
    rng = np.random.default_rng(seed)
    block = rng.normal(size=(rows, n)) * 10 ** rng.uniform(-3, 3, size=(rows, n))
    covered = rng.normal(size=n)
    out = np.empty(rows)
    facility_location._excess_sums(block, covered, out)
    np.testing.assert_array_equal(out, np.maximum(block - covered, 0.0).sum(axis=1))


@pytest.mark.parametrize("n", [1, 7, 8, 130, 1044, 5064])
def test_dense_similarity_matches_the_matrix_free_rows(n: int) -> None:
    grads = gaussian_pool(n, n, 6).grads.astype(np.float64)
    similarity, sums = facility_location.dense_similarity(grads)
    rows = facility_location.FacilityRows(grads, dense_max=n)
    np.testing.assert_array_equal(similarity, rows.rows(np.arange(n), count=False))
    np.testing.assert_array_equal(sums, similarity.sum(axis=1))


# --------------------------------------------------------------------------- stochastic greedy


def test_stochastic_sample_size_is_n_over_k_log_one_over_epsilon() -> None:
    assert facility_location.stochastic_sample_size(1000, 100, 0.01) == math.ceil(10 * math.log(100))
    assert facility_location.stochastic_sample_size(1000, 1, 0.01) == 1000  # at most n
    assert facility_location.stochastic_sample_size(10, 0, 0.5) == 10


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 50), dim=st.integers(1, 6), classes=st.integers(1, 3))
def test_stochastic_greedy_samples_everyone_when_epsilon_is_tiny(
    seed: int, n: int, dim: int, classes: int
) -> None:
    # ln(1/eps) = 690 >= k: each sample holds every unchosen element, so it is the plain greedy
    pool = gaussian_pool(seed, n, dim, classes)
    budget = max(1, n // 2)
    chosen = selector("craig", optimizer="stochastic", epsilon=1e-300).select(
        pool, budget, np.random.default_rng(seed)
    )
    for label, share in per_class_budgets(pool.labels, budget).items():
        members = np.flatnonzero(pool.labels == label)
        expected = naive_greedy(coresets.facility_similarity(pool.grads[members]), share)
        assert class_order(chosen.indices, pool.labels, label) == [int(members[i]) for i in expected]


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, n=st.integers(5, 9), dim=st.integers(1, 3), k=st.integers(1, 3))
def test_stochastic_greedy_within_one_minus_one_over_e_minus_epsilon_on_average(
    seed: int, n: int, dim: int, k: int
) -> None:
    # Mirzasoleiman et al. 2015, Theorem 1: E[F(S)] >= (1 - 1/e - eps) F(OPT); the mean of 20 draws
    pool = gaussian_pool(seed, n, dim)
    epsilon = 0.3
    optimal = max(
        coresets.facility_location_value(pool.grads, list(s)) for s in itertools.combinations(range(n), k)
    )
    values = [
        coresets.facility_location_value(
            pool.grads,
            selector("craig", optimizer="stochastic", epsilon=epsilon)
            .select(pool, k, np.random.default_rng([seed, draw]))
            .indices,
        )
        for draw in range(20)
    ]
    assert np.mean(values) >= (1 - 1 / math.e - epsilon) * optimal - 1e-9


# --------------------------------------------------------------------------- partitioned selection


def clustered(seed: int, n: int, dim: int, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters: points [n, dim] float32 and each one's cluster."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(clusters, size=n)
    centres = rng.normal(size=(clusters, dim)) * 40
    return (centres[cluster] + rng.normal(size=(n, dim))).astype(np.float32), cluster


def clustered_pool(seed: int, n: int, dim: int, clusters: int, classes: int = 1) -> SamplePool:
    """A pool whose features and gradients are the same clustered points (k-means finds the clusters)."""
    points, _ = clustered(seed, n, dim, clusters)
    labels = np.sort(np.random.default_rng(seed + 1).integers(classes, size=n)).astype(np.int64)
    return SamplePool(points, points.copy(), labels)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(0, 300), dim=st.integers(1, 5), cells=st.integers(1, 8))
def test_kmeans_cells_partition_the_rows(seed: int, n: int, dim: int, cells: int) -> None:
    points = np.random.default_rng(seed).normal(size=(n, dim))
    found = partitions.kmeans_cells(points, cells, np.random.default_rng(seed))
    assert 1 <= len(found) <= max(1, min(cells, n))
    assert all(len(cell) > 0 for cell in found) or n == 0
    assert all(np.all(np.diff(cell) > 0) for cell in found)
    np.testing.assert_array_equal(np.sort(np.concatenate(found)), np.arange(n))
    again = partitions.kmeans_cells(points, cells, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(found, again, strict=True))


def test_kmeans_cells_find_separated_clusters() -> None:
    points, cluster = clustered(3, 400, 4, clusters=4)
    found = partitions.kmeans_cells(points, 4, np.random.default_rng(0))
    assert len(found) == 4
    assert sorted(len(np.unique(cluster[cell])) for cell in found) == [1, 1, 1, 1]


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(
        st.lists(st.floats(0, 100, allow_nan=False), min_size=0, max_size=12), min_size=1, max_size=5
    ),
    k=st.integers(0, 70),
)
def test_merge_by_value_takes_a_prefix_of_every_cell(values: list[list[float]], k: int) -> None:
    descending = [np.sort(np.asarray(v))[::-1] for v in values]
    indices = np.split(np.arange(sum(len(v) for v in values)), np.cumsum([len(v) for v in values])[:-1])
    cell, position = partitions.merge_by_value(descending, k, indices)
    assert len(cell) == min(k, sum(len(v) for v in values))
    for c in range(len(values)):  # a prefix of each cell
        assert sorted(position[cell == c].tolist()) == list(range(int(np.sum(cell == c))))
    taken = np.array([descending[c][p] for c, p in zip(cell, position, strict=True)])
    left = [v for c, d in enumerate(descending) for v in d[int(np.sum(cell == c)) :]]
    assert np.all(np.diff(taken) <= 0)
    assert not left or not len(taken) or taken.min() >= max(left)


def test_cell_candidates_are_proportional_and_oversampled() -> None:
    found = [np.arange(60), np.arange(30), np.arange(10)]
    assert partitions.cell_budgets(found, 10, 2.0) == [12, 6, 2]
    assert partitions.cell_budgets(found, 10, 100.0) == [60, 30, 10]  # at most the cell
    assert partitions.cell_budgets(found, 3, 1.0) == [2, 1, 1]  # ceil: at least the budget in all
    assert partitions.cell_budgets([np.arange(50)], 7, 3.0) == [7]  # one cell: the selection itself


def class_cells(pool: SamplePool, points: np.ndarray, count: int, seed: int) -> list[tuple[np.ndarray, list]]:
    """The cells each class is split into, drawn as the partitioned selectors draw them (class by class)."""
    rng = np.random.default_rng(seed)
    out = []
    for label in sorted(np.unique(pool.labels)):
        members = np.flatnonzero(pool.labels == label)
        out.append((members, partitions.kmeans_cells(points[members], count, rng)))
    return out


@pytest.mark.parametrize("cell_count", [1, 3])
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 120), classes=st.integers(1, 2), fraction=st.floats(0.05, 0.6))
def test_partitioned_craig_is_the_greedy_on_the_cell_restricted_objective(
    cell_count: int, seed: int, n: int, classes: int, fraction: float
) -> None:
    # With every member a candidate (huge oversample), round 2 must be the naive greedy on
    # F_cells(S) = sum_i max over chosen j of i's own cell of s_ij (c of the class); one cell: exact CRAIG.
    pool = clustered_pool(seed, n, 3, clusters=4, classes=classes)
    budget = max(1, round(fraction * n))
    chosen = selector("craig", partitions=cell_count, oversample=1e9).select(
        pool, budget, np.random.default_rng(seed)
    )
    shares = per_class_budgets(pool.labels, budget)
    for members, found in class_cells(pool, pool.grads, cell_count, seed):
        g = pool.grads[members].astype(np.float64)
        offset = facility_location.similarity_offset(g - g.mean(axis=0))
        block = np.zeros((len(members), len(members)))
        for cell in found:
            block[np.ix_(cell, cell)] = facility_location.dense_similarity(g[cell], offset)[0]
        expected = naive_greedy(block, shares[int(pool.labels[members[0]])])
        assert class_order(chosen.indices, pool.labels, pool.labels[members[0]]) == members[expected].tolist()
        if cell_count == 1:
            exact = naive_greedy(coresets.facility_similarity(g), len(expected))
            assert expected == exact


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 200), cell_count=st.integers(2, 5), fraction=st.floats(0.02, 0.5))
def test_partitioned_craig_weights_count_members_for_their_nearest_chosen_in_their_cell(
    seed: int, n: int, cell_count: int, fraction: float
) -> None:
    pool = clustered_pool(seed, n, 3, clusters=4)
    budget = max(1, round(fraction * n))
    chosen = selector("craig", partitions=cell_count).select(pool, budget, np.random.default_rng(seed))
    assert chosen.weights.sum() == n
    ((_, found),) = class_cells(pool, pool.grads, cell_count, seed)
    g = pool.grads.astype(np.float64)
    expected = np.zeros(len(chosen.indices))
    for cell in found:
        mine = np.flatnonzero(np.isin(chosen.indices, cell))
        pool_of = mine if len(mine) else np.arange(len(chosen.indices))  # a cell left without: anywhere
        closest = pool_of[np.argmin(cdist(g[cell], g[chosen.indices[pool_of]]), axis=1)]
        closest[np.isin(cell, chosen.indices)] = [
            int(np.flatnonzero(chosen.indices == i)[0]) for i in cell[np.isin(cell, chosen.indices)]
        ]
        expected += np.bincount(closest, minlength=len(chosen.indices))
    np.testing.assert_array_equal(chosen.weights, expected)


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 150), cell_count=st.integers(1, 4), fraction=st.floats(0.02, 0.5))
def test_partitioned_kcenter_is_the_greedy_with_cell_restricted_coverage(
    seed: int, n: int, cell_count: int, fraction: float
) -> None:
    pool = clustered_pool(seed, n, 3, clusters=3)
    k = max(1, round(fraction * n))
    chosen = selector("kcenter", partitions=cell_count, oversample=1e9).select(
        pool, k, np.random.default_rng(seed)
    )
    # the reference: each cell starts from its drawn centre; then the farthest sample from the
    # nearest centre of its own cell, over all cells
    rng = np.random.default_rng(seed)
    found = partitions.kmeans_cells(pool.features, cell_count, rng)
    firsts = [int(cell[rng.integers(len(cell))]) for cell in found]
    cell_of = np.empty(n, dtype=np.int64)
    for c, cell in enumerate(found):
        cell_of[cell] = c
    x = pool.features.astype(np.float64)
    order = sorted(firsts)[:k]  # every cell's first centre is infinitely far: lowest index first
    while len(order) < k:
        reach = np.full(n, -1.0)
        for i in range(n):
            own = [j for j in order if cell_of[j] == cell_of[i]]
            reach[i] = np.inf if not own else np.linalg.norm(x[own] - x[i], axis=1).min()
        reach[order] = -1.0
        order.append(int(np.argmax(reach)))
    assert chosen.indices.tolist() == order
    if cell_count == 1:
        first = int(np.random.default_rng(seed).integers(n))
        assert order == reference_kcenter(pool.features, k, first)


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, n=st.integers(2, 200), cell_count=st.integers(2, 5), fraction=st.floats(0.02, 0.5))
def test_partitioned_kcenter_radius_is_at_most_the_cell_restricted_one(
    seed: int, n: int, cell_count: int, fraction: float
) -> None:
    pool = gaussian_pool(seed, n, 3)
    k = max(1, round(fraction * n))
    chosen = selector("kcenter", partitions=cell_count).select(pool, k, np.random.default_rng(seed))
    found = partitions.kmeans_cells(pool.features, cell_count, np.random.default_rng(seed))
    restricted = max(
        coresets.kcenter_radius(pool.features[cell], np.flatnonzero(np.isin(cell, chosen.indices)))
        for cell in found
    )
    assert coresets.kcenter_radius(pool.features, chosen.indices) <= restricted + 1e-9


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 80), dim=st.integers(2, 5), classes=st.integers(1, 3))
def test_partitioned_herding_with_one_cell_is_herding(seed: int, n: int, dim: int, classes: int) -> None:
    pool = gaussian_pool(seed, n, dim, classes)
    budget = max(1, n // 3)
    exact = selector("herding").select(pool, budget, np.random.default_rng(0))
    one_cell = selector("herding", partitions=1, oversample=5.0).select(
        pool, budget, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(exact.indices, one_cell.indices)


def test_partitioned_herding_round_two_herds_the_candidates_towards_the_class_mean() -> None:
    pool = clustered_pool(5, 300, 4, clusters=3)
    budget = 30
    chosen = selector("herding", partitions=3).select(pool, budget, np.random.default_rng(1))
    found = partitions.kmeans_cells(
        coresets.unit_rows(pool.features.astype(np.float64)), 3, np.random.default_rng(1)
    )
    h = unit(pool.features)
    counts = partitions.cell_budgets(found, budget, 2.0)
    candidates = np.concatenate(
        [cell[coresets.herding_order(h[cell], kappa)] for cell, kappa in zip(found, counts, strict=True)]
    )
    assert set(chosen.indices) <= set(candidates.tolist())
    order = np.searchsorted(np.sort(candidates), chosen.indices)
    # herding over the candidates towards the mean of every member
    target = h.mean(axis=0)
    sub = h[np.sort(candidates)]
    running = np.zeros(h.shape[1])
    for t, pick in enumerate(order, start=1):
        distances = np.linalg.norm(target - (running + sub) / t, axis=1)
        distances[order[: t - 1]] = np.inf
        assert distances[pick] <= distances.min() + 1e-12
        running += sub[pick]


@pytest.mark.parametrize("name", ["craig", "kcenter", "herding"])
def test_parallel_ray_without_a_session_is_a_clear_error(name: str) -> None:
    pool = gaussian_pool(0, 40, 3, classes=2)
    with pytest.raises(UserError, match="Ray session"):
        selector(name, partitions=2, parallel="ray").select(pool, 6, np.random.default_rng(0))


@pytest.mark.slow
def test_cells_on_ray_select_what_they_select_in_process() -> None:
    ray = pytest.importorskip("ray")
    pool = gaussian_pool(4, 3000, 8, classes=3)
    cases = [
        ("craig", {"partitions": 3}),
        ("craig", {"partitions": 2, "optimizer": "stochastic"}),
        ("kcenter", {"partitions": 3}),
        ("herding", {"partitions": 3}),
    ]
    local = [selector(n, parallel="local", **p).select(pool, 300, np.random.default_rng(9)) for n, p in cases]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        remote = [selector(n, **p).select(pool, 300, np.random.default_rng(9)) for n, p in cases]  # "auto"
    finally:
        ray.shutdown()
    for a, b in zip(local, remote, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)


# --------------------------------------------------------------------------- per-batch GradMatch


@settings(max_examples=30, deadline=None)
@given(
    seed=SEEDS,
    n=st.integers(1, 60),
    dim=st.integers(1, 6),
    batch=st.integers(1, 9),
    fraction=st.floats(0.05, 1),
)
def test_per_batch_gradmatch_is_omp_over_batch_means(
    seed: int, n: int, dim: int, batch: int, fraction: float
) -> None:
    # CORDS's per-batch variant: consecutive batches of the members, OMP on their mean gradients
    # (target: the sum of the means), batches added until they hold the budget, the last one cut; then
    # the batch weights solved again (tall ridge NNLS, scipy) with the cut batch as the mean of what it
    # keeps, each member weighted by its batch's weight x size / kept.
    grads = gaussian_pool(seed, n, dim).grads.astype(np.float64)
    k = max(1, round(fraction * n))
    positions, weights = coresets.gradmatch_per_batch(grads, k, batch, 0.5)
    starts = np.arange(0, n, batch)
    means = np.stack([grads[s : s + batch].mean(axis=0) for s in starts])
    picked, _ = coresets.gradmatch_omp(means, len(starts), 0.5)
    sizes = np.array([len(grads[s : s + batch]) for s in starts])
    used = int(np.searchsorted(np.cumsum(sizes[picked]), k)) + 1 if len(picked) else 0
    used = min(used, len(picked))
    prefix = picked[:used].tolist()
    expected = np.concatenate([np.arange(starts[b], starts[b] + sizes[b]) for b in prefix] or [np.zeros(0)])
    np.testing.assert_array_equal(positions, expected[:k])
    if prefix:
        kept = np.clip(k - (np.cumsum(sizes[prefix]) - sizes[prefix]), 0, sizes[prefix])
        prefix, kept = [b for b, m in zip(prefix, kept, strict=True) if m > 0], kept[kept > 0]
        columns = np.stack(
            [grads[starts[b] : starts[b] + m].mean(axis=0) for b, m in zip(prefix, kept, strict=True)]
        )
        system = np.vstack([columns.T, np.sqrt(0.5) * np.eye(len(prefix))])
        target = np.concatenate([means.sum(axis=0), np.zeros(len(prefix))])
        batch_weights = nnls(system, target, maxiter=100 * len(prefix))[0]
        if batch == 1:  # no re-solve: exactly gradmatch_omp's weights
            batch_weights = reference_weights(means, prefix, 0.5)
        expected_weights = np.repeat(batch_weights * sizes[prefix] / kept, kept)
        np.testing.assert_allclose(weights, expected_weights, atol=1e-7 * (1 + expected_weights.max()))


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, count=st.integers(2, 15), batch=st.integers(2, 9), fraction=st.floats(0.05, 0.6))
def test_per_batch_gradmatch_resolve_is_optimal_over_the_kept_members(
    seed: int, count: int, batch: int, fraction: float
) -> None:
    # Cutting the last batch must not leave the weights matched to members that were dropped. In the
    # batch problem (target T: the sum of batch means; a kept group g stands for its batch with the
    # mean c_g of its kept members, v_g = member weight x kept / size), the re-solved weights are the
    # ridge NNLS optimum, so no other non-negative weights fit better: not the batch weights repeated
    # and cut (what the variant did before), nor a perturbation of the optimum.
    n = count * batch
    grads = gaussian_pool(seed, n, 4).grads.astype(np.float64)
    k = max(1, round(fraction * n))
    positions, weights = coresets.gradmatch_per_batch(grads, k, batch, 0.5)
    assert np.all(weights >= 0) and len(positions) <= k
    means = grads.reshape(count, batch, -1).mean(axis=1)
    target = means.sum(axis=0)
    order = positions // batch
    picked = list(dict.fromkeys(order.tolist()))
    kept = np.array([int(np.sum(order == b)) for b in picked])
    columns = np.stack([grads[positions[order == b]].mean(axis=0) for b in picked])
    first = np.array([int(np.flatnonzero(order == b)[0]) for b in picked])

    def objective(group_weights: np.ndarray) -> float:
        return float(np.sum((target - group_weights @ columns) ** 2) + 0.5 * np.sum(group_weights**2))

    resolved = weights[first] * kept / batch
    batch_weights = reference_weights(means, picked, 0.5) * kept / batch
    best = objective(resolved)
    assert best <= objective(batch_weights) * (1 + 1e-9) + 1e-12
    rng = np.random.default_rng(seed)
    for _ in range(5):
        other = np.maximum(resolved + rng.normal(scale=0.05, size=len(picked)), 0)
        assert best <= objective(other) * (1 + 1e-9) + 1e-12


def test_per_batch_gradmatch_with_batches_of_one_is_gradmatch() -> None:
    pool = gaussian_pool(21, 300, 6, classes=3)
    exact = selector("gradmatch").select(pool, 40, np.random.default_rng(3))
    per_sample = coresets.gradmatch_omp(pool.grads[pool.labels == 0], 5, 0.5)
    one = coresets.gradmatch_per_batch(pool.grads[pool.labels == 0], 5, 1, 0.5)
    np.testing.assert_array_equal(per_sample[0], one[0])
    np.testing.assert_array_equal(per_sample[1], one[1])
    np.testing.assert_array_equal(
        exact.indices, selector("gradmatch", batch_size=1).select(pool, 40, np.random.default_rng(3)).indices
    )


def test_per_batch_gradmatch_gives_each_member_its_batch_weight() -> None:
    pool = gaussian_pool(8, 400, 5, classes=2)
    chosen = selector("gradmatch", batch_size=8).select(pool, 64, np.random.default_rng(0))
    for label in (0, 1):
        members = np.flatnonzero(pool.labels == label)
        mine = chosen.indices[np.isin(chosen.indices, members)]
        batches = np.searchsorted(members, mine) // 8
        for b in np.unique(batches):
            assert len(np.unique(chosen.weights[np.isin(chosen.indices, mine[batches == b])])) == 1


# --------------------------------------------------------------------------- grids


@pytest.mark.parametrize("name", ["herding", "kcenter", "craig", "gradmatch"])
def test_the_options_at_their_exact_values_keep_the_cell_names(name: str) -> None:
    # A grid resolves every constructor default into selector_params; the options added for large
    # pools must not rename the committed cells of the exact selectors (benchmark.config, LATER_*).
    from benchmark.config import LATER_SELECTOR_PARAMS, CellConfig

    spelled = {key: value for key, value in vars(selector(name)).items()}
    assert set(LATER_SELECTOR_PARAMS) & set(spelled)
    before = {key: value for key, value in spelled.items() if key not in LATER_SELECTOR_PARAMS}
    for key in set(LATER_SELECTOR_PARAMS) & set(spelled):
        assert spelled[key] == LATER_SELECTOR_PARAMS[key]  # the exact selector's value

    def cell(params: dict) -> CellConfig:
        return CellConfig("g", "split-shapes", {}, name, name, None, params, {}, 0.05, 1.0, 0)

    assert cell(spelled).config_hash == cell(before).config_hash
    changed = {**spelled, "partitions": 4} if "partitions" in spelled else {**spelled, "batch_size": 32}
    assert cell(changed).config_hash != cell(before).config_hash
