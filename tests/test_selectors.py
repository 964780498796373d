"""The selector library: hand-made embeddings whose right answer is known, and the contract.

Contract for every registered selector: exactly K unique indices for K = 1, K = N and in
between, also class-balanced with exact largest-remainder quotas; the same seed gives the
same indices; K out of range and NaN/inf embeddings are refused with a clear message.
The greedy optimisers are checked step by step against their objectives evaluated naively.
"""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
import torch

from toolkit.errors import SampleSiftError
from toolkit.selectors import SELECTORS, activation, available, class_quotas, dimensions, get_selector
from toolkit.selectors.cluster import kmeans, kmeans_plus_plus
from toolkit.selectors.distances import knn
from toolkit.selectors.submodular import (
    CONCAVE,
    facility_location_greedy,
    facility_location_value,
    feature_based_greedy,
    feature_based_value,
    knn_similarity_graph,
    minmax_features,
)

NAMES = [
    "random",
    "random-balanced",
    "topk-activation",
    "topk-activation-pca",
    "topk-pairs",
    "topk-penalized",
    "stratified-dimension",
    "moderate",
    "k-center",
    "max-sum",
    "k-means",
    "facility-location",
    "feature-based",
    "herding",
    "prototype-easy",
    "prototype-hard",
    "uniqueness",
    "typiclust",
    "probcover",
    "ccs",
]


@pytest.fixture(scope="module")
def mixed() -> tuple[np.ndarray, np.ndarray]:
    """60 samples x 40 dims (more than k-center's 32-d projection) in 3 uneven classes (30/18/12)."""
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1, 2], [30, 18, 12])
    x = rng.normal(size=(60, 40)).astype(np.float32) + labels[:, None]
    return x, labels


def columns_for(name: str, n: int) -> dict[str, np.ndarray] | None:
    """Synthetic per-sample score columns for the rules that read them (ccs); None for the rest."""
    selector = get_selector(name)
    if not selector.needs_sample_scores:
        return None
    rng = np.random.default_rng(n)
    return {column: rng.random(n) for column in selector.score_columns()}


def blobs(clusters: int, per: int, dim: int = 12, spread: float = 0.05, seed: int = 0) -> np.ndarray:
    """Well-separated clusters: centres 10 apart on distinct axes, tiny spread."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((clusters, dim), np.float32)
    centres[np.arange(clusters), np.arange(clusters) % dim] = 10.0 * (1 + np.arange(clusters) // dim)
    return (np.repeat(centres, per, axis=0) + spread * rng.normal(size=(clusters * per, dim))).astype(np.float32)


def test_registry_has_every_method_documented() -> None:
    assert available() == NAMES
    for name, cls in SELECTORS.items():
        assert cls.name == name
        assert cls.source and cls.score_meaning, name
        assert len((cls.__doc__ or "").split()) > 20, f"{name} needs a real docstring"


@pytest.mark.parametrize("name", NAMES)
def test_exactly_k_unique_indices_for_any_budget(name: str, mixed: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = mixed
    for k in (1, 23, len(x)):
        result = get_selector(name).select(x, k, labels=labels, seed=1, sample_scores=columns_for(name, len(x)))
        assert len(result.indices) == k and len(np.unique(result.indices)) == k
        assert result.indices.min() >= 0 and result.indices.max() < len(x)
        assert result.scores.shape == (len(x),) and np.isfinite(result.scores).all()
        assert result.picked_by.shape == (k,)
        json.dumps(result.info)  # manifests store it


@pytest.mark.parametrize("name", NAMES)
def test_balanced_quotas_are_exact(name: str, mixed: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = mixed
    # 30/18/12 of 60 at k = 17: exact shares 8.5 / 5.1 / 3.4 -> floors 8/5/3, one left for the largest remainder
    assert class_quotas(labels, 17) == {0: 9, 1: 5, 2: 3}
    columns = columns_for(name, len(x))
    result = get_selector(name).select(x, 17, labels=labels, seed=2, balanced=True, sample_scores=columns)
    assert np.bincount(labels[result.indices], minlength=3).tolist() == [9, 5, 3]
    assert result.balanced and result.info["quotas"] == {"0": 9, "1": 5, "2": 3}
    assert len(np.unique(result.indices)) == 17


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_indices(name: str, mixed: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = mixed
    columns = columns_for(name, len(x))
    first = get_selector(name).select(x, 20, labels=labels, seed=5, sample_scores=columns)
    again = get_selector(name).select(torch.from_numpy(x), 20, labels=labels, seed=5, sample_scores=columns)  # tensor
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_allclose(first.scores, again.scores)


@pytest.mark.parametrize(
    "name", ["random", "k-center", "k-means", "stratified-dimension", "topk-pairs", "typiclust", "ccs"]
)
def test_seeded_rules_change_with_the_seed(name: str, mixed: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = mixed
    columns = columns_for(name, len(x))
    picks = {
        tuple(get_selector(name).select(x, 20, labels=labels, seed=s, sample_scores=columns).indices) for s in range(4)
    }
    assert len(picks) > 1


@pytest.mark.parametrize("name", NAMES)
def test_bad_budget_and_non_finite_embeddings_are_refused(name: str, mixed: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = mixed
    selector = get_selector(name)
    columns = columns_for(name, len(x))
    for k in (0, len(x) + 1):
        with pytest.raises(SampleSiftError, match=r"out of range: choose 1 <= K <= 60"):
            selector.select(x, k, labels=labels, sample_scores=columns)
    for bad in (np.nan, np.inf):
        broken = x.copy()
        broken[3, 4] = bad
        with pytest.raises(SampleSiftError, match=r"NaN or infinite values in 1 row"):
            selector.select(broken, 5, labels=labels, sample_scores=columns)


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(SampleSiftError, match="has no parameter"):
        get_selector("k-center", radius=3)


@pytest.mark.parametrize("dim", [32, None])
def test_k_center_picks_the_far_points(dim: int | None) -> None:
    rng = np.random.default_rng(1)
    core = 0.1 * rng.normal(size=(60, 40))
    far = np.zeros((4, 40))
    far[[0, 1, 2, 3], [0, 5, 9, 20]] = [30.0, -25.0, 20.0, 35.0]
    x = np.vstack([core, far]).astype(np.float32)
    result = get_selector("k-center", dim=dim).select(x, 5, seed=0)
    assert set(range(60, 64)) <= set(result.indices.tolist())
    assert result.indices[0] == 63  # the farthest from the mean comes first
    assert len(set(result.indices.tolist()) & set(range(60))) == 1
    # the k highest scores are the selection
    assert set(np.argsort(-result.scores, kind="stable")[:5]) == set(result.indices)


@pytest.mark.parametrize("name", ["facility-location", "k-means", "k-center", "typiclust"])
def test_well_separated_clusters_get_one_pick_each(name: str) -> None:
    x = blobs(clusters=6, per=25)
    cluster = np.repeat(np.arange(6), 25)
    for seed in range(3):
        result = get_selector(name).select(x, 6, seed=seed)
        assert sorted(cluster[result.indices]) == list(range(6)), f"{name} seed {seed}"


def test_k_means_picks_the_member_nearest_each_centroid() -> None:
    x = blobs(clusters=4, per=20, spread=0.3)
    result = get_selector("k-means").select(x, 4, seed=0)
    cluster = np.repeat(np.arange(4), 20)
    for pick in result.indices:
        members = np.flatnonzero(cluster == cluster[pick])
        centre = x[members].mean(axis=0)
        assert pick == members[np.argmin(((x[members] - centre) ** 2).sum(axis=1))]


def test_k_means_over_candidates_matches_plain_lloyd() -> None:
    x = torch.from_numpy(blobs(clusters=8, per=40, spread=2.0, dim=16, seed=3))
    restricted = kmeans(x, 40, candidates=4, iterations=15, seed=0)
    plain = kmeans(x, 40, candidates=40, iterations=15, seed=0)
    assert restricted.inertia == pytest.approx(plain.inertia, rel=0.02)
    # every sample ends at its truly nearest centroid
    squared = torch.cdist(x, restricted.centroids) ** 2
    torch.testing.assert_close(squared.min(dim=1).values, restricted.distance**2, rtol=1e-4, atol=1e-4)


def test_herding_mean_error_falls_as_k_grows() -> None:
    x = np.random.default_rng(3).normal(size=(400, 16)).astype(np.float32) + 2.0
    errors = []
    for k in (1, 4, 16, 64, 256):
        picks = get_selector("herding").select(x, k).indices
        errors.append(float(np.linalg.norm(x.mean(axis=0) - x[picks].mean(axis=0))))
    assert all(later < earlier for earlier, later in pairwise(errors)), errors
    assert errors[-1] < 0.05 * errors[0]
    random_error = np.linalg.norm(x.mean(axis=0) - x[np.random.default_rng(0).choice(400, 16)].mean(axis=0))
    assert errors[2] < random_error  # herding beats a random subset of the same size at matching the mean


def test_max_sum_is_the_eq3_greedy_and_near_the_optimum() -> None:
    from itertools import combinations

    x = np.random.default_rng(2).normal(size=(14, 3)).astype(np.float32)
    distance = np.linalg.norm(x[:, None] - x[None], axis=2).astype(np.float64)
    picks = get_selector("max-sum").select(x, 4).indices.tolist()
    greedy = [int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))]  # Eq. 3 greedy, by hand
    while len(greedy) < 4:
        total = distance[:, greedy].sum(axis=1)
        total[greedy] = -np.inf
        greedy.append(int(np.argmax(total)))
    assert picks == greedy

    def eq3(subset: list[int] | tuple[int, ...]) -> float:
        return float(distance[np.ix_(subset, subset)].sum() / 2)

    optimum = max(eq3(c) for c in combinations(range(14), 4))
    assert eq3(picks) >= 0.9 * optimum


def test_topk_pca_takes_both_tails_of_every_component() -> None:
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(200, 2)) * [5.0, 1.0]
    angle = 0.6
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    x = (raw @ rotation.T).astype(np.float32)
    result = get_selector("topk-activation-pca").select(x, 4)
    centred = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(centred.T))
    scores = centred @ vectors[:, ::-1]  # principal components, largest first
    expected = {scores[:, 0].argmax(), scores[:, 0].argmin(), scores[:, 1].argmax(), scores[:, 1].argmin()}
    assert set(result.indices.tolist()) == expected


def test_rows_shuffled_block_by_block_equal_the_plain_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.from_numpy(np.random.default_rng(7).normal(size=(100, 6)).astype(np.float32))
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(activation, "SHUFFLE_BLOCK_ROWS", 7)  # 15 blocks, the last one short
    shuffled = activation._shuffled_by_column(values, order)
    assert shuffled.is_contiguous() and torch.equal(shuffled, values[order].T)


def test_pca_in_row_blocks_equals_the_whole_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(300, 5)) * [4.0, 3.0, 2.0, 1.0, 0.5] + 10.0).astype(np.float32)
    whole = get_selector("topk-activation-pca").select(x, 20)
    scores, variances = dimensions.pca_whiten(torch.from_numpy(x))
    centred = x.astype(np.float64) - x.mean(axis=0)
    np.testing.assert_allclose(variances.numpy(), np.linalg.eigvalsh(centred.T @ centred / 300)[::-1], rtol=1e-5)
    np.testing.assert_allclose(scores.numpy().std(axis=0), 1.0, rtol=1e-4)  # unit variance
    monkeypatch.setattr(dimensions, "PCA_BLOCK_ROWS", 7)  # 43 blocks, the last one short
    blocked, _ = dimensions.pca_whiten(torch.from_numpy(x))
    np.testing.assert_allclose(blocked.numpy(), scores.numpy(), atol=1e-4)
    again = get_selector("topk-activation-pca").select(x, 20)
    np.testing.assert_array_equal(again.indices, whole.indices)


def test_topk_pairs_finds_joint_activation() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    x[7] = [1.8, 1.8, -3.0]  # high in dims 0 and 1 together, extreme in neither
    x[8] = [4.0, -2.0, 0.0]  # extreme in dim 0 alone
    x[9] = [-2.0, 4.0, 0.0]  # extreme in dim 1 alone
    pairs = get_selector("topk-pairs", pairs=3).select(x, 3)
    assert [0, 1] in pairs.info["pairs"]
    column = pairs.info["pairs"].index([0, 1])
    assert pairs.indices[list(pairs.picked_by).index(column)] == 7
    assert 7 not in get_selector("topk-activation").select(x, 3).indices


def test_topk_penalized_skips_samples_active_everywhere() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[0] = 6.0  # extreme in every dimension
    assert 0 in get_selector("topk-activation").select(x, 8).indices
    assert 0 not in get_selector("topk-penalized").select(x, 8).indices


def test_stratified_dimension_spreads_picks_over_the_range() -> None:
    x = np.linspace(0, 1, 100, dtype=np.float32)[:, None]
    result = get_selector("stratified-dimension").select(x, 5, seed=0)
    bins = np.minimum((x[result.indices, 0] * 5).astype(int), 4)
    assert sorted(bins.tolist()) == [0, 1, 2, 3, 4]
    assert len(set(get_selector("topk-activation").select(x, 5).indices.tolist()) & set(range(80))) == 0


def test_moderate_keeps_the_median_distance_band() -> None:
    radii = np.arange(1, 102, dtype=np.float32)  # 101 samples on rays at distances 1..101 from the origin
    directions = np.random.default_rng(8).normal(size=(101, 4))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x = np.vstack([radii[:, None] * directions, -radii[:, None] * directions]).astype(np.float32)
    distance = np.linalg.norm(x - x.mean(axis=0), axis=1)
    picks = get_selector("moderate").select(x, 10).indices
    band = np.argsort(np.abs(distance - np.median(distance)), kind="stable")[:10]
    assert set(picks.tolist()) == set(band.tolist())


def test_uniqueness_picks_isolated_samples() -> None:
    x = blobs(clusters=3, per=20)
    x = np.vstack([x, [[50.0] * 12, [-40.0] * 12]]).astype(np.float32)
    result = get_selector("uniqueness").select(x, 2)
    assert set(result.indices.tolist()) == {60, 61}
    assert result.scores.max() == pytest.approx(1.0)


def test_prototype_easy_and_hard_take_opposite_ends() -> None:
    x = blobs(clusters=2, per=40, spread=1.0)
    x[5, 5] += 15.0  # two atypical members, far from both centres
    x[50, 7] += 15.0
    easy = get_selector("prototype-easy", clusters=2, metric="euclidean").select(x, 10)
    hard = get_selector("prototype-hard", clusters=2, metric="euclidean").select(x, 2)
    assert set(hard.indices.tolist()) == {5, 50}
    assert not set(easy.indices.tolist()) & {5, 50}
    assert easy.scores[easy.indices].min() >= np.sort(easy.scores)[-10]


def assert_greedy(value, picks: list[int], n: int, tol: float = 1e-5) -> None:
    """Every pick has the largest marginal gain available at its step (ties within ``tol``)."""
    for step, pick in enumerate(picks):
        before = picks[:step]
        base = value(before)
        gains = {c: value([*before, c]) - base for c in range(n) if c not in before}
        assert gains[pick] >= max(gains.values()) - tol * max(1.0, abs(base)), f"step {step}"


def test_facility_location_greedy_is_the_plain_greedy() -> None:
    x = torch.from_numpy(np.random.default_rng(10).normal(size=(70, 6)).astype(np.float32))
    graph = knn_similarity_graph(x, neighbors=6)
    picks, gains, final = facility_location_greedy(graph, 12)
    assert_greedy(lambda s: facility_location_value(graph, s), picks.tolist(), 70)
    objective = facility_location_value(graph, picks.tolist())
    assert float(gains.sum()) == pytest.approx(objective, rel=1e-5)
    for c in (0, 33, 69):  # the final gains are exact marginal gains
        if c not in picks.tolist():
            after = facility_location_value(graph, [*picks.tolist(), c])
            assert float(final[c]) == pytest.approx(after - objective, abs=1e-4)


@pytest.mark.parametrize("concave", list(CONCAVE))
def test_feature_based_lazy_greedy_is_the_plain_greedy(concave: str) -> None:
    features = minmax_features(torch.from_numpy(np.random.default_rng(11).random((80, 5)).astype(np.float32)))
    picks, gains, _ = feature_based_greedy(features, 15, concave, batch=4, pool=16)
    assert len(set(picks.tolist())) == 15
    assert_greedy(lambda s: feature_based_value(features, s, concave), picks.tolist(), 80)
    assert float(gains.sum()) == pytest.approx(feature_based_value(features, picks.tolist(), concave), rel=1e-5)


def test_knn_graph_is_exact_and_includes_each_sample() -> None:
    x = torch.from_numpy(np.random.default_rng(12).normal(size=(50, 5)).astype(np.float32))
    squared, index = knn(x, 4)
    reference = torch.topk(torch.cdist(x, x) ** 2, 4, dim=1, largest=False)
    torch.testing.assert_close(squared, reference.values, atol=1e-4, rtol=1e-4)
    assert (index[:, 0] == torch.arange(50)).all()
    graph = knn_similarity_graph(x, 4)
    assert torch.allclose(graph.similarity[:, 0], torch.ones(50))
    assert graph.bandwidth == pytest.approx(float(reference.values[:, -1].median()), rel=1e-4)


def test_kmeans_plus_plus_draws_the_same_centres_as_it_always_did() -> None:
    """A seed's selections are reproducible across versions and devices: the draws come from a CPU
    generator in a fixed order (these centres were drawn one uniform per step, before the draws were batched)."""
    x = torch.from_numpy(np.random.default_rng(11).normal(size=(500, 8)).astype(np.float32))
    assert kmeans_plus_plus(x, 12, seed=3).tolist() == [486, 417, 114, 245, 471, 54, 208, 111, 335, 298, 499, 356]
