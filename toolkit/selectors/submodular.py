"""Submodular rules: facility location over a k-NN graph and a feature-based function.

Both are maximised greedily, which for a monotone submodular function is within 1 - 1/e of
the optimum (Nemhauser, Wolsey & Fisher 1978).

*Facility location* (apricot, submodlib, DeepCore): ``f(S) = sum_i max_{j in S} sim(i, j)``,
every sample is "served" by its most similar selected sample. The dense form needs an
N x N similarity matrix (10 GB at N = 50,000; the cause of apricot#28/#33's out-of-memory
failures). Here ``sim`` lives on a directed k-nearest-neighbour graph, as in submodlib's
sparse mode: sample i can only be served by its ``neighbors`` nearest samples (itself
included), with a Gaussian similarity. Memory is O(N x neighbors).

*Feature-based* (apricot ``FeatureBasedSelection``, submodlib ``FeatureBased``):
``f(S) = sum_d g(sum_{i in S} m_id)`` with m the embedding min-max scaled to [0, 1] per
dimension and g concave (sqrt or log1p): diminishing returns for piling more samples onto
the same dimension, the submodular form of the paper's per-dimension top-k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from toolkit.errors import require
from toolkit.selectors.base import Selector
from toolkit.selectors.distances import sequential_loop
from toolkit.selectors.neighbors import nearest_neighbors

CONCAVE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"sqrt": torch.sqrt, "log": torch.log1p}
"""Concave functions of the feature-based objective (apricot's names: sqrt, log = log1p)."""


@dataclass
class SimilarityGraph:
    """A directed k-nearest-neighbour similarity graph.

    Row i lists the samples that may serve sample i: its ``k`` nearest (itself first, unless
    duplicates tie with it) with similarity ``exp(-d^2 / bandwidth)``. ``bandwidth`` is the
    median over samples of the squared distance to the k-th neighbour, so a typical sample's
    farthest listed neighbour has similarity about 1/e.
    """

    neighbors: torch.Tensor
    similarity: torch.Tensor
    bandwidth: float
    search: dict[str, Any] = field(default_factory=lambda: {"search": "exact"})

    @property
    def size(self) -> int:
        return int(self.neighbors.shape[0])


def knn_similarity_graph(x: torch.Tensor, neighbors: int = 20) -> SimilarityGraph:
    """The k-NN similarity graph of the rows of ``x`` (no N x N; approximate above 100,000 rows).

    The neighbours come from :func:`~toolkit.selectors.neighbors.nearest_neighbors`: exact
    blocked brute force, or above its row limit an inverted file whose measured recall the
    graph's ``search`` records.
    """
    require(neighbors >= 1, f"facility location needs neighbors >= 1, got {neighbors}")
    squared, index, search = nearest_neighbors(x, neighbors)
    bandwidth = float(squared[:, -1].median())
    if bandwidth <= 0:  # heavy duplication: fall back to the mean positive distance, else 1
        positive = squared[squared > 0]
        bandwidth = float(positive.mean()) if positive.numel() else 1.0
    return SimilarityGraph(index, torch.exp(-squared / bandwidth), bandwidth, search)


def _index_tensor(indices: Sequence[int] | np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(indices if isinstance(indices, torch.Tensor) else np.asarray(indices), device=device).long()


def facility_location_value(graph: SimilarityGraph, indices: Sequence[int] | np.ndarray | torch.Tensor) -> float:
    """``f(S) = sum_i max_{j in S} sim(i, j)`` on the graph (0 for a sample none of S can serve)."""
    chosen = torch.zeros(graph.size, dtype=torch.bool, device=graph.neighbors.device)
    chosen[_index_tensor(indices, chosen.device)] = True
    return float((graph.similarity * chosen[graph.neighbors]).amax(dim=1).sum())


def facility_location_greedy(graph: SimilarityGraph, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact greedy maximisation of the k-NN facility location, with incremental gains.

    Every sample's marginal gain is kept up to date. Adding sample j only raises the
    coverage of the samples j can serve (its reverse neighbours), and only the gains of
    *their* candidates change, so each pick touches about ``neighbors``^2 graph entries
    instead of re-evaluating all gains (lazy greedy's saving, without its stale bounds).
    The picks equal the plain greedy's (ties go to the lower index). One host
    synchronisation per pick: the reverse-neighbour list is sliced on the host.

    Returns (picks in order, the gain of each pick, every sample's final marginal gain).
    """
    n, width = graph.neighbors.shape
    device = graph.neighbors.device
    candidates = graph.neighbors.reshape(-1)
    similarity = graph.similarity.reshape(-1)
    order = torch.sort(candidates, stable=True).indices  # entries grouped by serving candidate
    served = order // width
    served_similarity = similarity[order]
    offsets = [0, *torch.cumsum(torch.bincount(candidates, minlength=n), 0).tolist()]
    coverage = torch.zeros(n, device=device)
    gains = torch.zeros(n, device=device).index_add_(0, candidates, similarity)
    picks = torch.empty(k, dtype=torch.long, device=device)
    pick_gain = torch.empty(k, device=device)
    with sequential_loop(device):
        for step in range(k):
            best = int(gains.argmax())
            picks[step] = best
            pick_gain[step] = gains[best]
            rows = served[offsets[best] : offsets[best + 1]]
            before = coverage[rows]
            after = torch.maximum(before, served_similarity[offsets[best] : offsets[best + 1]])
            listed = graph.similarity[rows]
            lost = (listed - before[:, None]).clamp_(min=0.0) - (listed - after[:, None]).clamp_(min=0.0)
            gains.index_add_(0, graph.neighbors[rows].reshape(-1), lost.reshape(-1), alpha=-1.0)
            coverage[rows] = after
            gains[best] = -torch.inf
    return picks, pick_gain, gains


def minmax_features(x: torch.Tensor) -> torch.Tensor:
    """Each dimension scaled to [0, 1] (a constant dimension becomes 0), as submodlib does."""
    low = x.min(dim=0, keepdim=True).values
    span = x.max(dim=0, keepdim=True).values - low
    return (x - low) / torch.where(span > 0, span, torch.ones_like(span))


def feature_based_value(
    features: torch.Tensor, indices: Sequence[int] | np.ndarray | torch.Tensor, concave: str = "sqrt"
) -> float:
    """``f(S) = sum_d g(sum_{i in S} features_id)`` (apricot's FeatureBasedSelection objective)."""
    return float(CONCAVE[concave](features[_index_tensor(indices, features.device)].sum(dim=0)).sum())


def _top_pool(bound: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``size`` candidates with the highest bounds, and the highest bound left outside."""
    if size >= bound.shape[0]:
        return torch.arange(bound.shape[0], device=bound.device), torch.tensor(-torch.inf, device=bound.device)
    value, members = torch.topk(bound, size + 1)
    return members[:size], value[size]


def feature_based_greedy(
    features: torch.Tensor, k: int, concave: str = "sqrt", batch: int = 256, pool: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lazy greedy (Minoux 1978) for the feature-based function, evaluated in batches.

    Marginal gains only shrink as the selection grows, so a stale gain is an upper bound on
    the current one. The search works on a pool of the ``pool`` candidates with the highest
    bounds: it re-evaluates the pool's ``batch`` highest bounds in one vectorised step until
    the best bound belongs to a candidate evaluated for this pick, which is then the exact
    greedy choice. The pool is refilled from all samples when its best bound falls below
    the best bound outside it, so every pick equals the plain greedy's (ties aside) while a
    round touches ``pool`` + ``batch`` x d numbers instead of N x d. One host
    synchronisation per round decides whether to pick, refill or evaluate.

    Returns (picks in order, the gain of each pick, every sample's final marginal gain).
    """
    g = CONCAVE[concave]
    n = features.shape[0]
    device = features.device
    totals = torch.zeros(features.shape[1], device=device)
    bound = g(features).sum(dim=1)  # exact gains of the empty selection
    evaluated_at = torch.zeros(n, dtype=torch.long, device=device)
    picks = torch.empty(k, dtype=torch.long, device=device)
    pick_gain = torch.empty(k, device=device)
    pool = max(1, min(pool, n))
    with sequential_loop(device):
        members, outside = _top_pool(bound, pool)
        for step in range(k):
            while True:
                local = bound[members]
                best = members[local.argmax()]
                refill, fresh = torch.stack([bound[best] < outside, evaluated_at[best] == step]).tolist()
                if refill:  # a candidate outside the pool may now be the best
                    members, outside = _top_pool(bound, pool)
                elif fresh:
                    break
                else:
                    top = members[torch.topk(local, min(batch, len(members))).indices]
                    fresh_gain = (g(totals + features[top]) - g(totals)).sum(dim=1)
                    bound[top] = fresh_gain.masked_fill_(evaluated_at[top] < 0, -torch.inf)  # picked stay out
                    evaluated_at[top] = torch.where(evaluated_at[top] < 0, evaluated_at[top], step)
            picks[step] = best
            pick_gain[step] = bound[best]
            totals += features[best]
            bound[best] = -torch.inf
            evaluated_at[best] = -1
    final = (g(totals + features) - g(totals)).sum(dim=1)
    return picks, pick_gain, final


class FacilityLocation(Selector):
    """Facility location over a k-nearest-neighbour graph, maximised greedily.

    ``f(S) = sum_i max_{j in S} sim(i, j)``: every sample should have a similar selected
    sample nearby, so picks are representative *and* spread (apricot, submodlib and
    DeepCore's facility location; Mirzasoleiman et al.'s CRAIG uses it as well). The
    similarity is ``exp(-d^2 / h)`` on each sample's ``neighbors`` (20) nearest samples,
    h the median squared distance to the 20th neighbour, zero beyond (submodlib's sparse
    mode; never an N x N matrix). Above 100,000 samples the neighbours come from an inverted
    file (:mod:`toolkit.selectors.neighbors`) and ``info["neighbor_search"]`` records its
    measured recall. Exact greedy with incremental gain updates
    (:func:`facility_location_greedy`). No randomness. The score is the marginal gain: at the
    moment of the pick for selected samples, after the last pick for the others;
    ``info["objective"]`` is f(S) and ``info["objective_share"]`` is f(S) / N (1 = every
    sample served by itself).
    """

    name = "facility-location"
    score_meaning = "facility-location marginal gain (selected: when picked; others: after the last pick)"
    source = "facility location (Nemhauser et al. 1978) as in apricot / submodlib sparse mode; DeepCore"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"neighbors": 20}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, None, dict]:
        graph = knn_similarity_graph(x, int(self.params["neighbors"]))
        picks, pick_gain, gains = facility_location_greedy(graph, k)
        scores = gains.clamp(min=0.0)
        scores[picks] = pick_gain
        objective = float(pick_gain.sum())
        info = {"objective": objective, "objective_share": objective / graph.size, "bandwidth": graph.bandwidth}
        info["neighbor_search"] = graph.search
        return picks, scores, None, info


class FeatureBased(Selector):
    """Feature-based submodular selection: concave returns per embedding dimension.

    ``f(S) = sum_d g(sum_{i in S} m_id)``, m the embedding min-max scaled to [0, 1] per
    dimension, g = sqrt (``concave="sqrt"``, apricot's default) or log1p (``"log"``)
    (apricot ``FeatureBasedSelection``; submodlib ``FeatureBased``). Like the paper's
    per-dimension top-k it rewards strong activations, but with diminishing returns, so the
    budget spreads over all dimensions instead of piling onto a few. Lazy greedy in batches
    of ``batch`` over a candidate pool of ``pool`` (:func:`feature_based_greedy`); no
    randomness. The score is the marginal
    gain (selected: when picked; others: after the last pick); ``info["objective"]`` is f(S).
    """

    name = "feature-based"
    score_meaning = "feature-based marginal gain (selected: when picked; others: after the last pick)"
    source = "apricot FeatureBasedSelection; submodlib FeatureBased (Iyer & Bilmes)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"concave": "sqrt", "batch": 256, "pool": 4096}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, None, dict]:
        concave = self.params["concave"]
        require(concave in CONCAVE, f"feature-based: concave must be one of {', '.join(CONCAVE)}, got {concave!r}")
        features = minmax_features(x)
        picks, pick_gain, gains = feature_based_greedy(
            features, k, concave, int(self.params["batch"]), int(self.params["pool"])
        )
        scores = gains
        scores[picks] = pick_gain
        return picks, scores, None, {"objective": float(CONCAVE[concave](features[picks].sum(dim=0)).sum())}
