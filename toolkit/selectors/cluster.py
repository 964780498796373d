"""Clustering rules: k-means representatives and prototype distance (easy / hard).

The paper's §VI: "The k-means clustering seems like a reasonable approximation to our
initial distance maximization." ``k-means`` clusters the embedding into k groups and keeps
the sample nearest each centroid. ``prototype-easy`` / ``prototype-hard`` follow Sorscher
et al. (2022, "Beyond neural scaling laws"): cluster, score every sample by its cosine
distance to the nearest centroid, and keep the most prototypical (easy) samples when data
is scarce or the least prototypical (hard) ones when it is abundant.

:func:`kmeans` is k-means++ seeding followed by Lloyd's iterations, in torch on the
embeddings' device. A plain Lloyd iteration costs an N x k x d GEMM (93 GFLOP for
50,000 x 216 and k = 4,320, seconds per iteration on a 2-core CPU); here one exact pass
lists each sample's 32 nearest initial centroids and the iterations re-assign it among
those only, so an iteration costs N x 32 x d. A final exact pass gives every sample its
truly nearest centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from toolkit.errors import require
from toolkit.selectors.base import Selector
from toolkit.selectors.distances import (
    BLOCK_BYTES,
    DistancesToRow,
    generator,
    nearest,
    random_projection,
    rows_per_block,
    sequential_loop,
    squared_norms,
    stable_top,
)


@dataclass
class KMeansResult:
    """A k-means clustering of N samples.

    Attributes:
        centroids: (k, d) cluster centres.
        assignment: (N,) index of each sample's nearest centroid.
        distance: (N,) Euclidean distance of each sample to its centroid (exact).
        iterations: Lloyd iterations run.
        converged: True when an iteration re-assigned no sample (among its candidates).
        trained_on: samples the centroids were fitted on (a seeded subsample above
            ``max_points_per_centroid`` x k, like faiss).
    """

    centroids: torch.Tensor
    assignment: torch.Tensor
    distance: torch.Tensor
    iterations: int
    converged: bool
    trained_on: int

    @property
    def inertia(self) -> float:
        """Mean squared distance of a sample to its centroid."""
        return float(self.distance.square().mean())


def kmeans_plus_plus(x: torch.Tensor, k: int, seed: int, dim: int = 32) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): indices of k distinct initial centres.

    Each next centre is drawn with probability proportional to the squared distance to the
    nearest centre so far (D^2 sampling). The distances are taken on a seeded random
    projection to ``dim`` dimensions, so the k sequential steps cost k x N x ``dim``.
    """
    z = random_projection(x, dim, seed)
    gen = generator(seed)
    distances_to = DistancesToRow(z)
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    chosen[:1] = torch.randint(x.shape[0], (1,), generator=gen).to(x.device)
    # every step's uniform draw at once: the same numbers as one draw per step, one copy to the device
    uniforms = torch.rand(k - 1, generator=gen, dtype=torch.float64).to(x.device)
    nearest_sq = distances_to(chosen[:1]).clone()
    last = x.shape[0] - 1
    with sequential_loop(x.device):
        for step in range(1, k):
            nearest_sq.index_fill_(0, chosen[step - 1 : step], 0.0)  # rounding must not revive a centre
            # inverse-CDF draw (15x faster than torch.multinomial on this CPU); zero weights are never hit
            cumulative = torch.cumsum(nearest_sq, 0, dtype=torch.float64)
            target = uniforms[step - 1 : step] * cumulative[-1]
            chosen[step : step + 1] = torch.searchsorted(cumulative, target, right=True).clamp_(max=last)
            torch.minimum(nearest_sq, distances_to(chosen[step : step + 1]), out=nearest_sq)
    return chosen


def _nearest_centroids(
    x: torch.Tensor, centroids: torch.Tensor, m: int, budget_bytes: int = BLOCK_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``m`` nearest centroids, nearest first, and the distance to the first (exact, blocked)."""
    center_sq = squared_norms(centroids)
    candidates = torch.empty(x.shape[0], m, dtype=torch.long, device=x.device)
    distance = torch.empty(x.shape[0], device=x.device)
    step = rows_per_block(len(centroids), budget_bytes)
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        partial = torch.addmm(center_sq, block, centroids.T, alpha=-2.0)
        value, index = torch.topk(partial, m, dim=1, largest=False)
        candidates[start : start + step] = index
        distance[start : start + step] = (value[:, 0] + squared_norms(block)).clamp_(min=0.0).sqrt_()
    return candidates, distance


def _assign_among(
    x: torch.Tensor, centroids: torch.Tensor, candidates: torch.Tensor, budget_bytes: int = BLOCK_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row among its own candidate centroids, and the distance (blocked)."""
    m, dim = candidates.shape[1], x.shape[1]
    center_sq = squared_norms(centroids)
    assignment = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    distance = torch.empty(x.shape[0], device=x.device)
    step = rows_per_block(m * dim, budget_bytes)
    gathered = torch.empty(min(step, x.shape[0]) * m, dim, device=x.device)  # reused: no page faults per block
    for start in range(0, x.shape[0], step):
        block, listed = x[start : start + step], candidates[start : start + step]
        rows = len(block)
        torch.index_select(centroids, 0, listed.reshape(-1), out=gathered[: rows * m])
        dots = torch.bmm(gathered[: rows * m].view(rows, m, dim), block[:, :, None])[:, :, 0]
        value, position = (center_sq[listed] - 2.0 * dots).min(dim=1)
        assignment[start : start + step] = listed.gather(1, position[:, None])[:, 0]
        distance[start : start + step] = (value + squared_norms(block)).clamp_(min=0.0).sqrt_()
    return assignment, distance


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iterations: int = 10,
    seed: int = 0,
    candidates: int = 32,
    max_points_per_centroid: int = 64,
) -> KMeansResult:
    """k-means: k-means++ seeding, then Lloyd iterations over candidate centroids, on ``x``'s device.

    One exact pass finds every sample's ``candidates`` nearest initial centroids; Lloyd's
    iterations then re-assign each sample among its own candidates only (N x candidates x d
    work instead of N x k x d), and a final exact pass assigns every sample to its truly
    nearest centroid. With k <= ``candidates`` this is plain Lloyd. Centroids move little
    after k-means++ seeding, so a sample's nearest centroid practically always stays among
    its 32 initial nearest: on 10,000 real CIFAR-10 autoencoder embeddings with k = 864, ten
    iterations gave a mean squared distance of 67.598 against plain Lloyd's 67.588 (16
    candidates: 67.801). On synthetic blobs ten iterations were within 0.1 % of five and of
    convergence, so ``iterations`` defaults to 10. An emptied cluster is re-seeded at the
    sample farthest from its centroid. Stops early when no sample changes cluster. Above
    ``max_points_per_centroid`` x k samples the centroids are fitted on a seeded subsample
    (faiss's rule; faiss caps at 256, 64 keeps a million samples practical on a CPU and is
    above the 39 per centroid below which faiss warns) before the final pass over all
    samples.
    """
    n = x.shape[0]
    require(1 <= k <= n, f"k-means needs 1 <= k <= N, got k = {k} for N = {n}")
    train = x
    if n > k * max_points_per_centroid:
        keep = torch.randperm(n, generator=generator(seed))[: k * max_points_per_centroid].to(x.device)
        train = x[keep]
    centroids = train[kmeans_plus_plus(train, k, seed)].clone()
    width = max(1, min(candidates, k))
    listed, distance = _nearest_centroids(train, centroids, width)
    assignment = listed[:, 0].clone()
    done, converged = 0, False
    while done < iterations and not converged:
        done += 1
        counts = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, train)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        empty = torch.nonzero(counts == 0).squeeze(1)
        if len(empty):  # re-seed emptied clusters at the worst-served samples
            far = stable_top(distance, len(empty))
            centroids[empty] = train[far]
            listed[far, -1] = empty  # so those samples can join their new cluster
        if width < k:
            moved, distance = _assign_among(train, centroids, listed)
        else:  # every centroid is a candidate: one dense GEMM per block is cheaper than gathering
            nearest_one, distance = _nearest_centroids(train, centroids, 1)
            moved = nearest_one[:, 0]
        converged = not len(empty) and not bool((moved != assignment).any())
        assignment = moved
    if train is not x or width < k:
        assignment = _nearest_centroids(x, centroids, 1)[0][:, 0]
    distance = torch.empty(n, device=x.device)
    step = rows_per_block(x.shape[1])
    for start in range(0, n, step):  # exact distances, without an N x d temporary
        rows = slice(start, start + step)
        distance[rows] = (x[rows] - centroids[assignment[rows]]).norm(dim=1)
    return KMeansResult(centroids, assignment, distance, done, converged, int(train.shape[0]))


def cluster_representatives(result: KMeansResult, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One distinct sample per cluster: the member nearest its centroid.

    Clusters partition the samples, so the picks are distinct. A cluster left without
    members gets the unpicked sample farthest from its own centroid. Returns (k picks,
    the cluster of each).
    """
    order = torch.sort(result.distance, stable=True).indices
    order = order[torch.sort(result.assignment[order], stable=True).indices]  # by cluster, nearest first
    grouped = result.assignment[order]
    first = torch.ones_like(grouped, dtype=torch.bool)
    first[1:] = grouped[1:] != grouped[:-1]
    picks, clusters = order[first], grouped[first]
    missing = k - len(picks)
    if missing:
        taken = torch.zeros_like(result.distance, dtype=torch.bool)
        taken[picks] = True
        extra = stable_top(result.distance.masked_fill(taken, -torch.inf), missing)
        present = torch.zeros(k, dtype=torch.bool, device=picks.device)
        present[clusters] = True
        picks = torch.cat([picks, extra])
        clusters = torch.cat([clusters, torch.nonzero(~present).squeeze(1)])
    return picks, clusters


class KMeansRepresentatives(Selector):
    """k-means with k clusters; the sample nearest each centroid is selected.

    The paper's §VI suggests k-means as "a reasonable approximation to our initial distance
    maximization" (Eq. 3): k representatives spread over the data in proportion to its
    density rather than its extremes. k-means++ seeding (seeded) and at most ``iterations``
    (10) Lloyd rounds over each sample's ``candidates`` (32) nearest centroids, then an
    exact assignment (:func:`kmeans`); above ``max_points_per_centroid`` (64) samples per
    centroid the centroids are fitted on a seeded subsample, like faiss. ``picked_by`` is
    the cluster; the score is minus the distance to the assigned centroid (higher = more
    typical of its cluster).
    """

    name = "k-means"
    score_meaning = "minus the Euclidean distance to the sample's k-means centroid"
    source = "the paper's §VI next step (k-means, Gonzalez et al.); Lloyd 1982; k-means++ (Arthur & Vassilvitskii)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"iterations": 10, "candidates": 32, "max_points_per_centroid": 64}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        result = kmeans(
            x,
            k,
            iterations=int(self.params["iterations"]),
            seed=seed,
            candidates=int(self.params["candidates"]),
            max_points_per_centroid=int(self.params["max_points_per_centroid"]),
        )
        picks, clusters = cluster_representatives(result, k)
        info = {
            "iterations": result.iterations,
            "converged": result.converged,
            "inertia": result.inertia,
            "trained_on": result.trained_on,
        }
        return picks, -result.distance, clusters, info


class PrototypeEasy(Selector):
    """Keep the most prototypical samples: smallest cosine distance to the nearest k-means centroid.

    Sorscher et al. (2022, "Beyond neural scaling laws", arXiv 2206.14486) prune with a
    self-supervised prototype metric: k-means on the (normalised) embeddings, then each
    sample's cosine distance to its nearest centroid. Their rule: keep the easy
    (prototypical) samples when data is scarce, the hard ones when it is abundant
    (``prototype-hard``). ``clusters`` (default 10) centroids, ``metric`` "cosine" (the
    source's; k-means on unit-normalised rows) or "euclidean". ``picked_by`` is the nearest
    centroid; the score is minus the distance (higher = easier).
    """

    name = "prototype-easy"
    score_meaning = "minus the distance to the nearest k-means centroid (cosine by default)"
    source = "Sorscher et al. 2022, self-supervised prototype metric (keep easy)"
    keep_hard = False

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"clusters": 10, "metric": "cosine", "iterations": 10}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        metric = self.params["metric"]
        require(metric in ("cosine", "euclidean"), f"{self.name}: metric must be 'cosine' or 'euclidean'")
        clusters = max(1, min(int(self.params["clusters"]), x.shape[0]))
        data = torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x
        # few centroids: fitting them on every sample is cheap, so no subsample
        result = kmeans(
            data, clusters, iterations=int(self.params["iterations"]), seed=seed, max_points_per_centroid=len(data)
        )
        if metric == "cosine":  # unit vectors: |a - b|^2 = 2 (1 - cos), so the nearest is the most similar
            squared, nearest_cluster = nearest(data, torch.nn.functional.normalize(result.centroids, dim=1))
            distance = squared / 2
        else:
            distance, nearest_cluster = result.distance, result.assignment
        scores = distance if self.keep_hard else -distance
        picks = stable_top(scores, k)
        info = {"clusters": clusters, "iterations": result.iterations, "converged": result.converged}
        return picks, scores, nearest_cluster[picks], info


class PrototypeHard(PrototypeEasy):
    """Keep the least prototypical samples: largest distance to the nearest k-means centroid.

    The "hard" end of Sorscher et al.'s (2022) prototype metric (see ``prototype-easy``),
    their recommendation when data is abundant. The score is the distance (higher = harder).
    """

    name = "prototype-hard"
    score_meaning = "distance to the nearest k-means centroid (cosine by default)"
    source = "Sorscher et al. 2022, self-supervised prototype metric (keep hard)"
    keep_hard = True
