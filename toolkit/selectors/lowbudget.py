"""Low-budget rules: TypiClust, ProbCover and coverage-centric coreset selection (CCS).

Two active-learning rules for the low-budget regime, where labelling the *typical* samples
of dense regions beats labelling outliers, and one data-pruning rule for high pruning rates:

* ``typiclust`` (Hacohen, Dekel & Weinshall, ICML 2022): cluster the pool into as many
  k-means clusters as the budget (capped) and take the densest point of each cluster.
* ``probcover`` (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedily cover the data
  with delta-balls around the picks (max probability cover), delta chosen by ball purity.
* ``ccs`` (Zheng, Liu, Tian & Yang, ICLR 2023): drop the hardest samples by a training-dynamics
  score, then sample evenly across equal-width score strata. It reads a per-sample score
  column (``sample_scores``), not the embedding.

The published gains of TypiClust and ProbCover are at about 1 to 50 labels per class; at
hundreds per class they are expected at or below random (see the research note on embeddings
and low budgets). Nothing here materialises an N x N matrix: distances are computed in row
blocks (:mod:`toolkit.selectors.distances`) and ProbCover keeps its graph as sparse rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import sparse

from toolkit.errors import SampleSiftError, require
from toolkit.selectors.base import Selector
from toolkit.selectors.cluster import kmeans
from toolkit.selectors.distances import BLOCK_BYTES, generator, rows_per_block, squared_norms
from toolkit.selectors.neighbors import (
    index_shape,
    ivf_pairs_within,
    measured_range_recall,
    nearest_neighbors,
    searched_exactly,
)

TYPICALITY_EPSILON = 1e-5
"""Added to the mean neighbour distance before inverting (TypiClust's constant): duplicates,
whose neighbour distances are 0, get a large finite typicality instead of a division by zero."""


def typicality(x: torch.Tensor, neighbors: int = 20) -> np.ndarray:
    """TypiClust's typicality of every row of ``x`` among the other rows: 1 / (mean kNN distance + 1e-5).

    The mean is over the Euclidean distances to the ``min(neighbors, len(x) // 2)`` nearest
    other rows (at least 1), the official code's rule for small clusters. A lone row has no
    neighbours and so no evidence of density: its typicality is 0. The rows are centred
    first: distances do not change, but the rounding of ``|a|^2 - 2 a.b + |b|^2`` shrinks
    with the norms, so duplicates come out at distance 0 rather than at rounding noise.
    """
    count = max(1, min(neighbors, len(x) // 2))
    squared, _, _ = nearest_neighbors(x - x.mean(dim=0, keepdim=True), count, exclude_self=True)
    if squared.shape[1] == 0:
        return np.zeros(len(x))
    mean_distance = squared.sqrt().mean(dim=1).double().cpu().numpy()
    return 1.0 / (mean_distance + TYPICALITY_EPSILON)


def clusters_to_keep(sizes: np.ndarray, k: int, min_size: int) -> np.ndarray:
    """The non-empty clusters TypiClust picks from, largest first (ties: lower cluster id).

    Clusters with fewer than ``min_size`` members are dropped as outliers, unless the rest
    hold fewer than ``k`` samples; then the largest dropped ones are re-admitted until k
    distinct picks are possible.
    """
    order = np.lexsort((np.arange(len(sizes)), -sizes))
    order = order[sizes[order] > 0]
    large = int(np.count_nonzero(sizes[order] >= min_size))  # a prefix: sizes are descending
    enough = int(np.searchsorted(np.cumsum(sizes[order]), k)) + 1  # shortest prefix with >= k members
    return order[: max(large, enough)]


class TypiClust(Selector):
    """TypiClust: the most typical (densest) sample of each of the largest k-means clusters.

    Hacohen, Dekel & Weinshall, "Active learning on a budget: opposite strategies suit high
    and low budgets" (ICML 2022; ``avihu111/TypiClust: deep-al/pycls/al/typiclust.py``). At
    low budgets, labelling typical samples helps most. The pool is clustered by k-means into
    ``min(K, max_clusters)`` clusters (``max_clusters`` = 500 as in the official code;
    seeded k-means++ and Lloyd iterations, :func:`~toolkit.selectors.cluster.kmeans`).
    Clusters with fewer than ``min_cluster_size`` (5) members are dropped as outliers, but
    never so many that fewer than K samples remain (the official code drops clusters of at
    most 5 and fails when none is left; its rule is ``min_cluster_size=6``). The kept clusters, largest first, each
    give their most typical unselected sample; when K exceeds their number the order cycles
    (the second most typical of each, and so on).

    Typicality is 1 / (mean Euclidean distance to the k nearest other members of the
    sample's cluster + 1e-5) with k = min(``neighbors`` (20), cluster size // 2), at least 1;
    a cluster of one has typicality 0. Pitfalls guarded: duplicate points (distance 0) get a
    large finite typicality, not a division by zero (scikit-activeml issue #451); distances
    are Euclidean, not faiss's squared ones. Difference from the official code: typicality
    is computed once on the whole cluster, so a cluster revisited when cycling gives its next
    most typical sample rather than re-ranking its unselected members (identical when K is
    at most the number of kept clusters). The official features are L2-normalised SimCLR
    outputs; this rule takes the embedding as given. Cost: k-means plus one blocked kNN per
    cluster, the sum of squared cluster sizes x d (N^2 d when K is 1).

    The score is the typicality (higher = denser neighbourhood); ``picked_by`` is the
    k-means cluster.
    """

    name = "typiclust"
    score_meaning = "TypiClust typicality: 1 / (mean distance to the k nearest members of its cluster + 1e-5)"
    source = "Hacohen, Dekel & Weinshall, ICML 2022 (TypiClust); avihu111/TypiClust"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"max_clusters": 500, "min_cluster_size": 5, "neighbors": 20, "iterations": 10}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        max_clusters = _positive_int(self.name, "max_clusters", self.params["max_clusters"])
        min_size = _positive_int(self.name, "min_cluster_size", self.params["min_cluster_size"])
        neighbors = _positive_int(self.name, "neighbors", self.params["neighbors"])
        n_clusters = min(k, max_clusters, x.shape[0])
        result = kmeans(x, n_clusters, iterations=int(self.params["iterations"]), seed=seed)
        assignment = result.assignment.cpu().numpy()
        sizes = np.bincount(assignment, minlength=n_clusters)
        scores = np.zeros(x.shape[0])
        # members of every cluster, most typical first (ties: lower index)
        by_cluster = np.argsort(assignment, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        ranked: list[np.ndarray] = []
        for cluster in range(n_clusters):
            members = by_cluster[starts[cluster] : starts[cluster + 1]]
            if len(members):
                scores[members] = typicality(x[torch.as_tensor(members, device=x.device)], neighbors)
            ranked.append(members[np.argsort(-scores[members], kind="stable")])
        kept = clusters_to_keep(sizes, k, min_size)
        # round r takes the r-th most typical member of every kept cluster that has one, largest cluster first
        members = np.concatenate([ranked[c] for c in kept])
        cluster_of = np.repeat(kept, sizes[kept])
        rank = np.concatenate([np.arange(sizes[c]) for c in kept])
        position = np.repeat(np.arange(len(kept)), sizes[kept])
        order = np.lexsort((position, rank))[:k]
        info = {
            "clusters": n_clusters,
            "kept_clusters": len(kept),
            "dropped_clusters": int(np.count_nonzero(sizes)) - len(kept),
            "rounds": int(rank[order].max()) + 1,
            "iterations": result.iterations,
            "converged": result.converged,
        }
        return members[order], scores, cluster_of[order], info


PURITY_GRID = tuple(round(0.05 * step, 2) for step in range(1, 21))
"""Radii tried by ``delta="purity"``: 0.05, 0.10, ..., 1.00. On L2-normalised embeddings
distances lie in [0, 2] and a ball of radius 1 already holds every point within 60 degrees;
the official repository uses 0.6 (default) and 0.75 (CIFAR-10 examples), scikit-activeml
searches 0.2 ... 2.0 in steps of 0.2."""

MAX_EDGES = 200_000_000
"""Largest delta-ball graph ProbCover builds: at about 10 bytes per edge while it is built (a
32-bit index and a flag per edge, for the half graph, its mirror and their union) that is 2 GB.
A given delta whose balls hold more edges is refused with a message to choose a smaller one;
``delta="purity"`` takes the largest pure radius whose graph is estimated to fit
(:func:`estimated_edges`)."""

BALL_SAMPLE = 1_000
"""Balls counted by :func:`estimated_edges`: a seeded sample of this many (each against all N)."""

EDGE_HEADROOM = 0.8
"""Share of :data:`MAX_EDGES` an estimated graph may fill: room for the estimate's error (a
sample of 1,000 ball sizes), so that a radius chosen to fit is not refused once built."""


def delta_ball_graph(
    z: torch.Tensor, delta: float, *, max_edges: int = MAX_EDGES, budget_bytes: int = BLOCK_BYTES
) -> sparse.csr_array:
    """The delta-ball graph of the rows of ``z`` as sparse rows: edge i -> j iff |z_i - z_j| < delta.

    The relation is symmetric, so each pair is tested once: row block by row block (one
    block x N distance matrix at most, never N x N), against the columns from the block's
    first row on, keeping j >= i inside the diagonal block. That halves the distance work and
    makes the graph exactly symmetric (rounding cannot put an edge in one direction only).
    Every row has its self-loop whatever the rounding, so every point covers itself.
    """
    n = z.shape[0]
    sq = squared_norms(z)
    threshold = float(delta) ** 2
    counts = np.empty(n, dtype=np.int64)
    columns: list[np.ndarray] = []
    upper = 0  # edges with j >= i found so far
    step = rows_per_block(n, budget_bytes)
    for start in range(0, n, step):
        block = z[start : start + step]
        rows = len(block)
        inside = torch.addmm(sq[start:], block, z[start:].T, alpha=-2.0).add_(sq[start : start + rows, None])
        inside = inside < threshold
        inside[:, :rows] = inside[:, :rows].triu()  # inside the diagonal block each pair once
        inside[torch.arange(rows, device=z.device), torch.arange(rows, device=z.device)] = True
        found = torch.nonzero(inside)  # row-major, so the columns come out grouped by row
        upper += len(found)
        if 2 * upper - n > max_edges:  # the mirrored graph; self-loops are not mirrored
            raise SampleSiftError(
                f"probcover: delta = {delta:g} gives balls with more than {max_edges:,} edges in all; "
                "choose a smaller delta (or delta='purity')"
            )
        counts[start : start + rows] = torch.bincount(found[:, 0], minlength=rows).cpu().numpy()
        columns.append((found[:, 1] + start).to(torch.int32).cpu().numpy())  # column < N < 2**31
    # 32-bit indices when they fit (scipy keeps whatever width it is given): half the memory
    index_type = np.int32 if 2 * upper < 2**31 else np.int64
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(index_type)
    indices = np.concatenate(columns).astype(index_type, copy=False)
    half = sparse.csr_array((np.ones(len(indices), dtype=bool), indices, indptr), shape=(n, n))
    return (half + half.T).tocsr()  # boolean: the shared diagonal stays a single True


def approximate_delta_ball_graph(
    z: torch.Tensor, delta: float, *, max_edges: int = MAX_EDGES
) -> tuple[sparse.csr_array, dict[str, Any]]:
    """The delta-ball graph of the rows of ``z`` over an inverted file, and a description of the search.

    For N above the exact search's limit (:mod:`toolkit.selectors.neighbors`): the pairs
    within delta are searched among the rows of nearby k-means cells only, so a pair across
    cells that do not probe each other is missed; the description records the share of a
    seeded sample's true ball members that were found (``recall``). Symmetric, with every
    self-loop, like :func:`delta_ball_graph`.
    """
    n = z.shape[0]
    cells, probes = index_shape(n)
    rows: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    found = 0
    for block_rows, block_columns in ivf_pairs_within(z, delta, cells=cells, probes=probes):
        found += len(block_rows)
        if found > max_edges:
            raise SampleSiftError(
                f"probcover: delta = {delta:g} gives balls with more than {max_edges:,} edges in all; "
                "choose a smaller delta (or delta='purity')"
            )
        rows.append(block_rows)
        columns.append(block_columns)
    rows.append(np.arange(n))  # every point covers itself
    columns.append(np.arange(n))
    row, column = np.concatenate(rows), np.concatenate(columns)
    flags = np.ones(len(row), dtype=bool)
    found_pairs = sparse.csr_array((flags, (row, column)), shape=(n, n))
    graph = (found_pairs + found_pairs.T).tocsr()  # boolean: a pair found from both sides stays one edge
    recall, checked = measured_range_recall(z, delta, np.diff(graph.indptr))
    return graph, {"search": "ivf", "cells": cells, "probes": probes, "recall": recall, "recall_rows": checked}


PURITY_SAMPLE = 10_000
"""Balls whose purity ``delta="purity"`` measures: a seeded sample of this many (each against
all N points). Purity is a share, so the sample estimates it to within a standard error of
0.0022 at 0.95, and the pass costs 10,000 x N x d instead of N^2 x d (a fifth at N = 50,000)."""


def distance_to_other_label(
    z: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, budget_bytes: int = BLOCK_BYTES
) -> torch.Tensor:
    """The Euclidean distance from each of ``rows`` to the nearest row of ``z`` with another label.

    Infinite when all rows share one label. A ball of radius delta around row i is pure (all
    its points share i's label) exactly when this distance is at least delta.
    """
    sq = squared_norms(z)
    out = torch.empty(len(rows), device=z.device)
    step = rows_per_block(z.shape[0], budget_bytes)
    for start in range(0, len(rows), step):
        chosen = rows[start : start + step]
        partial = torch.addmm(sq, z[chosen], z.T, alpha=-2.0)
        partial.masked_fill_(labels[chosen, None] == labels[None, :], torch.inf)
        out[start : start + step] = partial.min(dim=1).values + sq[chosen]
    return out.clamp_(min=0.0).sqrt_()


def purity_delta(
    z: torch.Tensor, clusters: int, alpha: float, seed: int, iterations: int = 10
) -> tuple[float, dict[str, float]]:
    """ProbCover's delta: the largest on :data:`PURITY_GRID` with at least ``alpha`` of the balls pure.

    Pseudo-labels are k-means clusters (``clusters`` of them, seeded). Purity is measured on
    all balls up to :data:`PURITY_SAMPLE` points, else on a seeded sample of that many. When
    no radius on the grid reaches ``alpha``, the smallest one is returned. Also returns the
    purity at every grid radius (keys are the radii as text, JSON-ready).
    """
    n = z.shape[0]
    labels = kmeans(z, min(clusters, n), iterations=iterations, seed=seed, max_points_per_centroid=n).assignment
    if n > PURITY_SAMPLE:
        rows = torch.randperm(n, generator=generator(seed))[:PURITY_SAMPLE].to(z.device)
    else:
        rows = torch.arange(n, device=z.device)
    other = distance_to_other_label(z, labels, rows).cpu().numpy()
    purity = {f"{delta:.2f}": float(np.mean(other >= delta)) for delta in PURITY_GRID}
    pure_enough = [delta for delta in PURITY_GRID if purity[f"{delta:.2f}"] >= alpha]
    return (max(pure_enough) if pure_enough else PURITY_GRID[0]), purity


def estimated_edges(z: torch.Tensor, radii: list[float], seed: int) -> dict[float, float]:
    """The delta-ball graph's edge count at each radius, estimated as N x the mean ball size of a sample.

    The sample is :data:`BALL_SAMPLE` seeded rows (all rows when N is smaller), each ball
    counted against all N rows (itself included), so the pass costs 1,000 x N x d.
    """
    n = z.shape[0]
    rows = torch.randperm(n, generator=generator(seed))[:BALL_SAMPLE].to(z.device)
    sq = squared_norms(z)
    sizes = torch.zeros(len(radii), dtype=torch.float64, device=z.device)
    thresholds = torch.tensor([r * r for r in radii], device=z.device)
    step = rows_per_block(n, BLOCK_BYTES)
    for start in range(0, len(rows), step):
        chosen = rows[start : start + step]
        squared = torch.addmm(sq, z[chosen], z.T, alpha=-2.0).add_(sq[chosen, None])
        squared[torch.arange(len(chosen), device=z.device), chosen] = 0.0  # every point is in its own ball
        for i, threshold in enumerate(thresholds):
            sizes[i] += (squared < threshold).sum()
    return {r: float(size) * n / len(rows) for r, size in zip(radii, sizes.tolist(), strict=True)}


def _segments(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The concatenated sparse rows ``rows`` (their column indices), without a Python loop."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return indices[shift + np.arange(int(lengths.sum()))]


def greedy_max_coverage(graph: sparse.csr_array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy max coverage on a symmetric graph: up to k picks, each covering the most uncovered points.

    A pick's gain is its number of uncovered neighbours, kept current incrementally: when a
    point becomes covered, every point whose ball holds it (its own neighbours, as the graph
    is symmetric) loses one. So the whole run touches each edge about twice, where the
    official code rescans all edges per pick. Ties go to the lower index. Stops early when
    every point is covered (every gain is then 0). Returns (the picks in order, the final
    coverage mask).
    """
    n = graph.shape[0]
    gain = np.diff(graph.indptr).astype(np.int64)
    covered = np.zeros(n, dtype=bool)
    picks: list[int] = []
    for _ in range(k):
        pick = int(np.argmax(gain))
        if gain[pick] == 0:  # saturated: argmax would return index 0 again and again
            break
        picks.append(pick)
        ball = graph.indices[graph.indptr[pick] : graph.indptr[pick + 1]]
        newly = ball[~covered[ball]]
        covered[newly] = True
        gain -= np.bincount(_segments(graph.indptr, graph.indices, newly), minlength=n)
    return np.asarray(picks, dtype=np.int64), covered


class ProbCover(Selector):
    """ProbCover: greedy maximum coverage of the data by delta-balls around the picks.

    Yehuda, Dekel, Hacohen & Weinshall, "Active learning through a covering lens" (NeurIPS
    2022; ``avihu111/TypiClust: deep-al/pycls/al/prob_cover.py``). On L2-normalised
    embeddings, point x covers y when |x - y| < ``delta``; the greedy repeatedly picks the
    point whose ball covers the most not-yet-covered points (the (1 - 1/e) approximation of
    max coverage). Dense regions come first, outliers last, the opposite of k-center.

    ``delta``: a radius (> 0), or ``"purity"`` (default): the largest radius on 0.05, 0.10,
    ..., 1.00 for which at least ``alpha`` (0.95) of the balls are pure, i.e. all their
    points share one k-means pseudo-label, with ``clusters`` (10, the number of classes in
    the paper) clusters. Purity is measured on a seeded sample of 10,000 balls when N is
    larger; if no radius on the grid is that pure, 0.05 is used. When that radius's graph is
    estimated (from 1,000 seeded balls) to exceed 80 % of 200 million edges, the largest
    smaller grid radius estimated to fit is used instead, still pure enough (a smaller ball is
    at least as pure); ``info["delta_lowered_from"]`` and ``info["estimated_edges"]`` record
    it. The relation is symmetric,
    so the paper's directed graph has every edge both ways: it is built in row blocks testing
    each pair once (memory O(edges), never N x N; a graph above 200 million edges is refused
    with a message) and the greedy updates the gains incrementally. The official code rescans
    all edges per pick. Cost: N^2 d / 2 multiply-adds for the graph, 10,000 N d for purity.
    Above 100,000 points the graph is searched over an inverted file
    (:func:`approximate_delta_ball_graph`, about 5 % of that cost) and
    ``info["neighbor_search"]`` records the share of ball members it found.

    Pitfalls guarded: once everything is covered every gain is 0 and the official code's
    argmax returns index 0 for the rest of the budget (duplicates). Here the rest of the
    budget is filled with a seeded uniformly random sample of the not-yet-selected points;
    ``info`` records how many (``filled_at_random``), the ``delta`` used, and the
    ``coverage`` the greedy reached. The official block loop drops the last N mod 500 rows;
    every row is built here. MaxHerding (Bae et al. 2024) finds the rule very sensitive to
    delta: check ``info["purity"]`` and the mean ball size.

    The score is the point's out-degree (ball size, itself included) in the full graph;
    ``picked_by`` is 0 for a greedy pick and 1 for a random fill after saturation.
    """

    name = "probcover"
    score_meaning = "ball size: points within delta of the sample (itself included), L2-normalised embedding"
    source = "Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022 (ProbCover); avihu111/TypiClust"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"delta": "purity", "alpha": 0.95, "clusters": 10}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        delta, alpha = self.params["delta"], self.params["alpha"]
        require(
            delta == "purity"
            or (isinstance(delta, (int, float)) and not isinstance(delta, bool) and 0 < delta < np.inf),
            f"{self.name}: delta must be a positive radius or 'purity', got {delta!r}",
        )
        require(
            isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha <= 1,
            f"{self.name}: alpha must be in (0, 1], got {alpha!r}",
        )
        clusters = _positive_int(self.name, "clusters", self.params["clusters"])
        z = torch.nn.functional.normalize(x, dim=1)  # an all-zero row stays at the origin
        info: dict[str, Any] = {}
        if delta == "purity":
            delta, purity = purity_delta(z, clusters, float(alpha), seed)
            info["purity_by_delta"] = purity
            if len(z) ** 2 > MAX_EDGES:  # a graph that could outgrow the bound: the largest pure radius that fits
                smaller = [r for r in PURITY_GRID if r <= delta]
                edges = estimated_edges(z, smaller, seed)
                fitting = max((r for r in smaller if edges[r] <= EDGE_HEADROOM * MAX_EDGES), default=PURITY_GRID[0])
                if fitting < delta:
                    info["delta_lowered_from"] = delta
                    info["estimated_edges"] = {f"{r:.2f}": edges[r] for r in smaller}
                    delta = fitting
            info["purity"] = purity[f"{delta:.2f}"]
        if searched_exactly(len(z)):
            graph, search = delta_ball_graph(z, float(delta)), {"search": "exact"}
        else:
            graph, search = approximate_delta_ball_graph(z, float(delta))
        picks, covered = greedy_max_coverage(graph, k)
        fill = k - len(picks)
        if fill:
            unselected = np.ones(len(z), dtype=bool)
            unselected[picks] = False
            extra = np.random.default_rng(seed).permutation(np.flatnonzero(unselected))[:fill]
            picks = np.concatenate([picks, extra])
        picked_by = np.zeros(k, dtype=np.int64)
        picked_by[k - fill :] = 1
        info |= {
            "delta": float(delta),
            "delta_rule": "purity" if self.params["delta"] == "purity" else "given",
            "edges": int(graph.nnz),
            "mean_ball_size": graph.nnz / len(z),
            "coverage": float(covered.mean()),
            "filled_at_random": fill,
            "neighbor_search": search,
        }
        return picks, np.diff(graph.indptr).astype(np.float64), picked_by, info


def stratum_budgets(sizes: np.ndarray, budget: int) -> np.ndarray:
    """CCS's Algorithm 1 budget split: smallest strata first, each an equal share of what is left.

    With r non-empty strata left and m samples to place, the smallest gets
    ``min(its size, m // r)``; ties go to the lower stratum index. Small strata are taken
    whole and what they leave goes to the larger ones; the shares sum to
    ``min(budget, sizes.sum())`` (the last stratum takes all that is left, which by
    induction never exceeds its size).
    """
    shares = np.zeros(len(sizes), dtype=np.int64)
    order = np.lexsort((np.arange(len(sizes)), sizes))
    order = order[sizes[order] > 0]
    left = int(budget)
    for rank, stratum in enumerate(order):
        shares[stratum] = min(int(sizes[stratum]), left // (len(order) - rank))
        left -= int(shares[stratum])
    return shares


class CoverageCentricSelection(Selector):
    """CCS: prune the hardest samples, then sample evenly across difficulty strata.

    Zheng, Liu, Tian & Yang, "Coverage-centric coreset selection for high pruning rates"
    (ICLR 2023, Algorithm 1). Selecting only the hardest samples collapses at high pruning
    rates (forgetting-score selection falls to 34 % on CIFAR-10 at 10 % kept); CCS keeps the
    whole difficulty range covered instead. It reads the per-sample score column ``score``
    (default ``"el2n"``) of ``sample_scores``: a training-dynamics difficulty such as EL2N,
    AUM or forgetting counts, oriented so that **higher = harder** (negate AUM, where low is
    hard). The embedding is not used (N x 0 is fine).

    Steps: drop the hardest ``beta`` share (default 0.1, i.e. floor(beta x N) samples; ties
    at the cut-off drop the lower index first). The paper tunes beta per budget (higher
    pruning rates need a larger cut-off), so 0.1 is a starting point, not a constant. If K
    exceeds the samples left, fewer are dropped (N - K) and ``info["pruned"]`` is below
    ``info["pruned_requested"]``. Split the remaining score range into ``strata`` (50)
    equal-width bins; allocate the budget smallest bin first, each non-empty bin an equal
    share of what is left, capped by its size (:func:`stratum_budgets`); then draw each bin's
    share uniformly at random without replacement (seeded).

    The score is the sample's inclusion probability, its stratum's budget / its stratum's
    size (0 for pruned samples); ``picked_by`` is the stratum (0 = easiest score range).
    """

    name = "ccs"
    needs_embeddings = False
    needs_sample_scores = True
    score_meaning = "inclusion probability: stratum budget / stratum size (0 for the pruned hardest samples)"
    source = "Zheng, Liu, Tian & Yang, ICLR 2023 (coverage-centric coreset selection, Algorithm 1)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"score": "el2n", "beta": 0.1, "strata": 50}

    def score_columns(self) -> tuple[str, ...]:
        return (self.params["score"],)

    def _select_with_scores(
        self, x: torch.Tensor, k: int, seed: int, sample_scores: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        beta = self.params["beta"]
        require(
            isinstance(beta, (int, float)) and not isinstance(beta, bool) and 0 <= beta < 1,
            f"{self.name}: beta must be in [0, 1), got {beta!r}",
        )
        strata = _positive_int(self.name, "strata", self.params["strata"])
        difficulty = sample_scores[self.params["score"]]
        n = len(difficulty)
        requested = int(np.floor(round(beta * n, 9)))  # round first: 0.29 x 100 is 28.999999999999996
        pruned = min(requested, n - k)
        hardest_first = np.argsort(-difficulty, kind="stable")
        kept = np.sort(hardest_first[pruned:])
        # halves, so that scores near the float64 limits cannot overflow the range
        offset = difficulty[kept] / 2 - difficulty[kept].min() / 2
        span = offset.max()
        stratum = np.zeros(len(kept), dtype=np.int64)
        if span > 0:  # else one score value: a single stratum
            stratum = np.minimum((offset / span * strata).astype(np.int64), strata - 1)
        sizes = np.bincount(stratum, minlength=strata)
        shares = stratum_budgets(sizes, k)
        rng = np.random.default_rng(seed)
        picks, picked_by = [], []
        for s in np.lexsort((np.arange(strata), sizes)):  # Algorithm 1's order: smallest stratum first
            if shares[s]:
                picks.append(rng.choice(kept[stratum == s], int(shares[s]), replace=False))
                picked_by.append(np.full(int(shares[s]), s))
        scores = np.zeros(n)
        scores[kept] = shares[stratum] / sizes[stratum]
        info = {
            "score": self.params["score"],
            "pruned": pruned,
            "pruned_requested": requested,
            "strata": strata,
            "stratum_sizes": sizes.tolist(),
            "stratum_budgets": shares.tolist(),
        }
        return np.concatenate(picks), scores, np.concatenate(picked_by), info


def _positive_int(selector: str, name: str, value: Any) -> int:
    require(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1,
        f"{selector}: {name} must be a whole number >= 1, got {value!r}",
    )
    return int(value)
