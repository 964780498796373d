"""The low-budget selectors (TypiClust, ProbCover, CCS) and the sample-score interface, on hand-made data.

Every answer is known in advance: planted blob centres, clusters of known sizes on the unit
sphere, score vectors whose strata and budget split are worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.errors import SampleSiftError
from toolkit.selectors import class_quotas, get_selector, lowbudget
from toolkit.selectors.lowbudget import (
    PURITY_GRID,
    clusters_to_keep,
    delta_ball_graph,
    greedy_max_coverage,
    stratum_budgets,
)

# ----------------------------------------------------------------------------- TypiClust

SIZES = (41, 31, 21, 11)  # blob sizes, largest first; member 0 of each blob is its planted centre


def planted_blobs(sizes: tuple[int, ...] = SIZES, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blobs 30 apart on distinct axes: an exact centre point, then Gaussian members (sd 0.5).

    Returns (points, blob of each point). In 8 dimensions a member is about sqrt(8) x 0.5 from
    the centre but about sqrt(16) x 0.5 from another member, so the centre is the densest point.
    """
    rng = np.random.default_rng(seed)
    parts, blob = [], []
    for b, size in enumerate(sizes):
        centre = np.zeros(dim)
        centre[b] = 30.0
        parts.append(np.vstack([centre, centre + 0.5 * rng.normal(size=(size - 1, dim))]))
        blob += [b] * size
    return np.vstack(parts).astype(np.float32), np.array(blob)


def hand_typicality(points: np.ndarray) -> np.ndarray:
    """TypiClust's typicality inside one cluster, computed naively in float64."""
    k = max(1, min(20, len(points) // 2))
    distance = np.linalg.norm(points[:, None].astype(np.float64) - points[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    return 1.0 / (np.sort(distance, axis=1)[:, :k].mean(axis=1) + 1e-5)


def test_typiclust_takes_the_planted_centre_of_each_blob_largest_first() -> None:
    x, blob = planted_blobs()
    centres = np.cumsum((0, *SIZES[:-1]))  # index of each blob's first member, its centre
    for seed in range(3):
        result = get_selector("typiclust").select(x, 4, seed=seed)
        assert result.indices.tolist() == centres.tolist(), f"seed {seed}"  # blob sizes descending
        assert len(set(result.picked_by.tolist())) == 4
    for b in range(4):  # the score is the typicality inside the sample's cluster (here its blob)
        members = np.flatnonzero(blob == b)
        expected = hand_typicality(x[members])
        assert expected.argmax() == 0  # the data are as designed: the centre is the densest
        np.testing.assert_allclose(result.scores[members], expected, rtol=1e-4)


def test_typiclust_cycles_over_clusters_when_k_exceeds_the_cap() -> None:
    x, blob = planted_blobs()
    result = get_selector("typiclust", max_clusters=4).select(x, 10, seed=0)
    # rounds over the 4 clusters, largest first: 4 + 4 + 2 picks, the r-th most typical in round r
    ranked = [np.flatnonzero(blob == b)[np.argsort(-hand_typicality(x[blob == b]), kind="stable")] for b in range(4)]
    expected = [ranked[b][r] for r in range(3) for b in range(4)][:10]
    assert result.indices.tolist() == expected
    assert result.picked_by[:4].tolist() == result.picked_by[4:8].tolist()
    assert result.picked_by[8:].tolist() == result.picked_by[:2].tolist()
    assert result.info["clusters"] == 4 and result.info["rounds"] == 3


def test_typiclust_drops_tiny_clusters_as_outliers() -> None:
    x, _ = planted_blobs()
    outliers = np.zeros((2, 8), np.float32)
    outliers[0, 5], outliers[1, 6] = 5000.0, -5000.0
    x = np.vstack([x, outliers])
    for seed in range(3):
        result = get_selector("typiclust").select(x, 6, seed=seed)  # 6 clusters: 4 blobs + 2 lone outliers
        assert result.info["dropped_clusters"] == 2, f"seed {seed}"
        assert not {104, 105} & set(result.indices.tolist())
        assert result.info["rounds"] == 2  # the two largest blobs give a second pick instead


def test_typiclust_never_drops_so_many_clusters_that_k_picks_are_impossible() -> None:
    # sizes 4, 3, 3, 1 (all below 5) and K = 6: the largest are re-admitted until they hold 6 samples
    assert clusters_to_keep(np.array([3, 4, 0, 1, 3]), 6, 5).tolist() == [1, 0]
    assert clusters_to_keep(np.array([3, 4, 0, 1, 3]), 8, 5).tolist() == [1, 0, 4]
    assert clusters_to_keep(np.array([9, 4, 6, 1]), 2, 5).tolist() == [0, 2]  # plenty: tiny ones stay out
    x = np.repeat(np.eye(3, dtype=np.float32) * 10, 4, axis=0)  # 12 samples in 3 groups of 4 duplicates
    result = get_selector("typiclust").select(x, 12, seed=0)
    assert sorted(result.indices.tolist()) == list(range(12))


def test_typiclust_survives_duplicates() -> None:
    same = get_selector("typiclust").select(np.ones((20, 4), np.float32), 5, seed=0)
    assert len(np.unique(same.indices)) == 5
    np.testing.assert_allclose(same.scores, 1e5)  # distance 0 to every neighbour: 1 / (0 + 1e-5)
    rng = np.random.default_rng(3)
    x = np.vstack([np.repeat([[0.0, 0.0], [10.0, 10.0]], 15, axis=0), rng.normal(size=(10, 2)) * 3]).astype(np.float32)
    result = get_selector("typiclust").select(x, 8, seed=0)
    assert len(np.unique(result.indices)) == 8 and np.isfinite(result.scores).all()


# ----------------------------------------------------------------------------- ProbCover


def sphere_clusters(sizes: tuple[int, ...], spread: float = 0.01, seed: int = 0) -> np.ndarray:
    """Clusters around the first axes of R^6 (pairwise 1.41 apart once normalised), in order."""
    rng = np.random.default_rng(seed)
    centres = np.eye(6)[np.repeat(np.arange(len(sizes)), sizes)]
    return (centres + spread * rng.normal(size=centres.shape)).astype(np.float32)


def test_probcover_covers_the_clusters_largest_first() -> None:
    x = sphere_clusters((10, 30, 20))  # indices 0-9, 10-39, 40-59
    result = get_selector("probcover", delta=0.3).select(x, 3, seed=0)
    # every ball holds its whole cluster and nothing else: gains 30, 20, 10; ties -> lowest index
    assert result.indices.tolist() == [10, 40, 0]
    assert result.info["coverage"] == 1.0 and result.info["filled_at_random"] == 0
    assert result.scores.tolist() == [10.0] * 10 + [30.0] * 30 + [20.0] * 20
    assert result.info["delta"] == 0.3 and result.info["delta_rule"] == "given"


def test_probcover_saturation_fills_with_distinct_random_samples() -> None:
    x = sphere_clusters((10, 30, 20))
    runs = [get_selector("probcover", delta=3.0).select(x, 6, seed=seed) for seed in (0, 0, 1)]
    first = runs[0]  # a radius above 2 on the unit sphere: one ball covers everything
    assert first.indices[0] == 0 and len(np.unique(first.indices)) == 6
    assert first.info["filled_at_random"] == 5 and first.info["coverage"] == 1.0
    assert first.picked_by.tolist() == [0, 1, 1, 1, 1, 1]
    np.testing.assert_array_equal(first.indices, runs[1].indices)
    assert first.indices[1:].tolist() != runs[2].indices[1:].tolist()  # the fill is random, seeded
    covered = get_selector("probcover", delta=0.3).select(x, 5, seed=0)  # 3 picks cover all, 2 filled
    assert covered.indices[:3].tolist() == [10, 40, 0] and covered.info["filled_at_random"] == 2
    assert len(np.unique(covered.indices)) == 5


def test_probcover_purity_picks_the_largest_pure_radius_on_the_grid() -> None:
    rng = np.random.default_rng(1)
    half_angle = np.arcsin(0.21)  # two directions whose chord (distance on the unit sphere) is 0.42
    directions = np.array([[np.cos(half_angle), np.sin(half_angle)], [np.cos(half_angle), -np.sin(half_angle)]])
    x = np.repeat(directions, 40, axis=0) + 0.001 * rng.normal(size=(80, 2))
    x = np.hstack([x, np.zeros((80, 2))]).astype(np.float32)
    result = get_selector("probcover", clusters=2).select(x, 2, seed=0)
    # every ball is pure up to radius 0.40 (the other cluster is 0.42 away) and none from 0.45 on
    assert result.info["delta"] == 0.4 and result.info["delta_rule"] == "purity"
    assert result.info["purity"] == 1.0 and result.info["purity_by_delta"]["0.45"] == 0.0
    assert set(result.info["purity_by_delta"]) == {f"{d:.2f}" for d in PURITY_GRID}
    assert sorted(i // 40 for i in result.indices) == [0, 1]  # one pick per cluster covers everything


def test_probcover_purity_lowers_delta_to_the_largest_pure_radius_whose_graph_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two arcs of 40 evenly spaced points on the unit circle, 1.2 rad apart: every grid radius is
    # pure, and a ball holds more points the larger its radius
    angles = np.concatenate([np.linspace(0.0, 0.4, 40), np.linspace(1.6, 2.0, 40)])
    x = np.column_stack([np.cos(angles), np.sin(angles)]).astype(np.float32)
    free = get_selector("probcover", clusters=2).select(x, 4, seed=0)
    assert free.info["delta"] == 1.0 and "delta_lowered_from" not in free.info
    distance = np.linalg.norm(x[:, None] - x[None], axis=2)
    edges = {r: int((distance < r).sum()) for r in PURITY_GRID}  # every ball's exact size (self included)
    monkeypatch.setattr(lowbudget, "MAX_EDGES", 2_000)
    fits = max(r for r in PURITY_GRID if edges[r] <= lowbudget.EDGE_HEADROOM * 2_000)
    assert 0.05 < fits < 0.4  # a radius the bound decides, inside the arcs' width
    capped = get_selector("probcover", clusters=2).select(x, 4, seed=0)
    assert capped.info["delta"] == fits and capped.info["delta_lowered_from"] == 1.0
    assert capped.info["estimated_edges"][f"{fits:.2f}"] == edges[fits]  # 80 rows: every ball counted
    assert capped.info["edges"] == edges[fits] and capped.info["purity"] == 1.0
    assert len(np.unique(capped.indices)) == 4


def test_blockwise_graph_equals_the_brute_force_graph() -> None:
    rng = np.random.default_rng(2)
    z = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(300, 6)).astype(np.float32)), dim=1)
    distance = torch.cdist(z.double(), z.double()).numpy()
    assert np.abs(distance - 0.7).min() > 1e-6  # no pair so near the radius that rounding could decide
    graph = delta_ball_graph(z, 0.7, budget_bytes=4 * 300 * 7)  # blocks of 7 rows
    np.testing.assert_array_equal(graph.toarray(), distance < 0.7)
    # a radius below the rounding noise of |a|^2 - 2 a.b + |b|^2: every point still covers itself
    np.testing.assert_array_equal(delta_ball_graph(5 * z, 1e-8).toarray(), np.eye(300, dtype=bool))


def test_greedy_coverage_with_incremental_gains_is_the_plain_greedy() -> None:
    rng = np.random.default_rng(4)
    z = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(120, 3)).astype(np.float32)), dim=1)
    graph = delta_ball_graph(z, 0.5)
    balls = [set(np.flatnonzero(row)) for row in graph.toarray()]
    picks, covered = greedy_max_coverage(graph, 120)
    done: set[int] = set()
    for pick in picks:  # each pick has the largest number of uncovered points, lowest index on ties
        gains = [len(ball - done) for ball in balls]
        assert pick == int(np.argmax(gains))
        done |= balls[pick]
    assert covered.sum() == len(done)
    assert len(picks) < 120 and len(done) == 120  # it stopped once all was covered


def test_probcover_refuses_a_graph_that_is_too_large() -> None:
    z = torch.nn.functional.normalize(torch.ones(50, 3), dim=1)
    with pytest.raises(SampleSiftError, match=r"delta = 0.5 gives balls with more than 100 edges"):
        delta_ball_graph(z, 0.5, max_edges=100)
    with pytest.raises(SampleSiftError, match="delta must be a positive radius or 'purity'"):
        get_selector("probcover", delta=-1.0).select(np.ones((5, 2)), 2)


# ----------------------------------------------------------------------------- CCS


def hand_scores() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """100 difficulty scores in a shuffled order, and where each group ended up.

    After the 10 hardest (scores 10 ... 19) are pruned the range is [0, 3]; with 3 strata the
    bins are [0, 1), [1, 2), [2, 3]: 4, 30 and 56 samples.
    """
    groups = {
        "easy": np.array([0.0, 0.2, 0.4, 0.6]),
        "middle": np.linspace(1.05, 1.95, 30),
        "upper": np.linspace(2.05, 3.0, 56),
        "hardest": np.arange(10.0, 20.0),
    }
    values = np.concatenate(list(groups.values()))
    order = np.random.default_rng(5).permutation(len(values))  # order[i]: where value i is placed
    scores = np.empty_like(values)
    scores[order] = values
    bounds = np.cumsum([0] + [len(v) for v in groups.values()])
    where = {name: order[bounds[g] : bounds[g + 1]] for g, name in enumerate(groups)}
    return scores, where


def test_ccs_prunes_the_hardest_and_splits_the_budget_by_hand() -> None:
    scores, where = hand_scores()
    result = get_selector("ccs", strata=3).select(np.zeros((100, 0)), 22, sample_scores={"el2n": scores}, seed=0)
    # smallest stratum first: min(4, 22 // 3) = 4 (all of it), then min(30, 18 // 2) = 9, then 9
    assert result.info["stratum_sizes"] == [4, 30, 56] and result.info["stratum_budgets"] == [4, 9, 9]
    picked = set(result.indices.tolist())
    assert set(where["easy"]) <= picked and not set(where["hardest"]) & picked
    assert len(picked & set(where["middle"])) == 9 and len(picked & set(where["upper"])) == 9
    assert result.picked_by.tolist() == [0] * 4 + [1] * 9 + [2] * 9
    assert result.info["pruned"] == result.info["pruned_requested"] == 10
    np.testing.assert_allclose(result.scores[where["middle"]], 9 / 30)
    np.testing.assert_allclose(result.scores[where["easy"]], 1.0)
    assert (result.scores[where["hardest"]] == 0).all()


def test_ccs_prunes_fewer_when_the_budget_needs_them() -> None:
    scores, where = hand_scores()
    result = get_selector("ccs", strata=3).select(np.zeros((100, 0)), 95, sample_scores={"el2n": scores})
    assert result.info["pruned"] == 5 and result.info["pruned_requested"] == 10
    hardest = where["hardest"][5:]  # scores 15 ... 19 are still pruned
    assert not set(hardest.tolist()) & set(result.indices.tolist())
    assert len(np.unique(result.indices)) == 95


def test_ccs_is_seeded_and_reads_the_named_column() -> None:
    scores, _ = hand_scores()
    columns = {"aum": -scores, "forgetting": torch.from_numpy(scores)}  # a tensor column works too
    ccs = get_selector("ccs", score="forgetting", strata=3)
    runs = [ccs.select(np.zeros((100, 0)), 22, sample_scores=columns, seed=s).indices for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].tolist() != runs[2].tolist()
    by_aum = get_selector("ccs", score="aum", strata=3).select(np.zeros((100, 0)), 22, sample_scores=columns, seed=1)
    assert by_aum.info["score"] == "aum" and by_aum.info["stratum_sizes"] != [4, 30, 56]


def test_ccs_without_its_column_says_how_to_get_it() -> None:
    ccs = get_selector("ccs")
    expected = (
        "ccs ranks samples by the training-dynamics score 'el2n', which this embedding does not have; "
        "make a proxy embedding (samplesift embed --encoder proxy) and select with --embedding <its name>"
    )
    with pytest.raises(SampleSiftError) as missing:
        ccs.select(np.zeros((10, 0)), 3)
    assert str(missing.value) == expected
    with pytest.raises(SampleSiftError, match=r"does not have \(it has 'aum', 'loss'\); make a proxy"):
        ccs.select(np.zeros((10, 3)), 3, sample_scores={"aum": np.zeros(10), "loss": np.ones(10)})


def test_ccs_balanced_slices_the_scores_by_class() -> None:
    rng = np.random.default_rng(6)
    scores = rng.permutation(90).astype(float)
    labels = np.repeat([0, 1, 2], [50, 30, 10])[rng.permutation(90)]
    result = get_selector("ccs", strata=4).select(
        np.zeros((90, 0)), 18, labels=labels, sample_scores={"el2n": scores}, seed=0, balanced=True
    )
    assert np.bincount(labels[result.indices]).tolist() == list(class_quotas(labels, 18).values()) == [10, 6, 2]
    for cls, dropped in ((0, 5), (1, 3), (2, 1)):  # floor(0.1 x class size) hardest of each class
        members = np.flatnonzero(labels == cls)
        hardest = members[np.argsort(-scores[members])[:dropped]]
        assert not set(hardest.tolist()) & set(result.indices.tolist())
        assert result.info["classes"][str(cls)]["pruned"] == dropped


def test_stratum_budgets_by_hand_and_their_sum() -> None:
    assert stratum_budgets(np.array([4, 30, 56]), 22).tolist() == [4, 9, 9]
    assert stratum_budgets(np.array([5, 0, 1, 5]), 11).tolist() == [5, 0, 1, 5]  # everything
    assert stratum_budgets(np.array([3, 3, 3]), 8).tolist() == [2, 3, 3]  # ties: lower index first
    assert stratum_budgets(np.array([10, 10, 1]), 2).tolist() == [1, 1, 0]  # 2 // 3 = 0 for the smallest
    rng = np.random.default_rng(7)
    for _ in range(200):
        sizes = rng.integers(0, 20, size=rng.integers(1, 12))
        budget = int(rng.integers(0, sizes.sum() + 1))
        shares = stratum_budgets(sizes, budget)
        assert shares.sum() == budget and (shares <= sizes).all() and (shares >= 0).all()


# ----------------------------------------------------------------------------- the shared contract


@pytest.mark.parametrize("name", ["typiclust", "probcover", "ccs"])
def test_exactly_k_unique_seeded_and_balanced(name: str) -> None:
    x, blob = planted_blobs()
    x = np.vstack([x, x[:6]])  # six duplicates
    labels = np.concatenate([blob, blob[:6]])
    columns = {"el2n": np.linalg.norm(x, axis=1)}
    selector = get_selector(name)
    for k in (1, 7, 60, len(x)):
        result = selector.select(x, k, seed=3, sample_scores=columns)
        assert len(result.indices) == len(np.unique(result.indices)) == k
        again = selector.select(torch.from_numpy(x), k, seed=3, sample_scores=columns)
        np.testing.assert_array_equal(result.indices, again.indices)
    balanced = selector.select(x, 23, labels=labels, seed=3, balanced=True, sample_scores=columns)
    quotas = class_quotas(labels, 23)
    assert np.bincount(labels[balanced.indices], minlength=4).tolist() == [quotas[c] for c in range(4)]
    assert len(np.unique(balanced.indices)) == 23


# ----------------------------------------------------------------------------- sample-score validation


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (np.zeros(9), r"sample score column 'el2n' must hold one value per sample \(10\), got shape \(9,\)"),
        (np.zeros((10, 2)), r"column 'el2n' must hold one value per sample \(10\), got shape \(10, 2\)"),
        (np.array([1.0, np.nan, 2, 3, 4, 5, 6, np.inf, 8, 9]), r"'el2n' holds NaN or infinite values for 2 sample"),
        (np.array(["a"] * 10), r"sample score column 'el2n' must be numeric, got dtype <U1"),
        (np.ones(10, dtype=bool), r"sample score column 'el2n' must be numeric, got dtype bool"),
    ],
)
@pytest.mark.parametrize("name", ["ccs", "random", "k-center"])
def test_bad_sample_scores_are_refused_for_every_selector(name: str, column: np.ndarray, message: str) -> None:
    with pytest.raises(SampleSiftError, match=message):
        get_selector(name).select(np.ones((10, 2)), 3, sample_scores={"el2n": column})


def test_sample_scores_must_be_a_mapping_and_change_nothing_for_rules_that_ignore_them() -> None:
    with pytest.raises(SampleSiftError, match=r"sample scores must be a mapping of column name .* got ndarray"):
        get_selector("random").select(np.ones((10, 2)), 3, sample_scores=np.zeros(10))
    x = np.random.default_rng(8).normal(size=(40, 3)).astype(np.float32)
    for name in ("random", "k-means"):
        plain = get_selector(name).select(x, 7, seed=2)
        scored = get_selector(name).select(x, 7, seed=2, sample_scores={"el2n": np.arange(40)})
        np.testing.assert_array_equal(plain.indices, scored.indices)
        np.testing.assert_array_equal(plain.scores, scored.scores)
