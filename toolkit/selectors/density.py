"""Density rules: uniqueness (sparse neighbourhoods) and the moderate distance band.

``uniqueness`` follows FiftyOne brain's ``compute_uniqueness``: a sample is unique when
its nearest neighbours are far away. ``moderate`` follows Moderate-DS (Xia et al., ICLR
2023): keep the samples whose distance to the centroid is closest to the median distance,
neither the easy core nor the outlying extremes.
"""

from __future__ import annotations

from typing import Any

import torch

from toolkit.selectors.base import Selector
from toolkit.selectors.distances import squared_norms, stable_top
from toolkit.selectors.neighbors import nearest_neighbors

UNIQUENESS_WEIGHTS = (0.6, 0.3, 0.1)
"""FiftyOne's weights of the distances to the 1st, 2nd and 3rd nearest neighbours."""


def uniqueness(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """FiftyOne-style uniqueness in [0, 1] (weighted distance to the 3 nearest neighbours / its max), and the search."""
    squared, _, search = nearest_neighbors(x, len(UNIQUENESS_WEIGHTS), exclude_self=True)
    if squared.shape[1] == 0:  # a single sample is as unique as it gets
        return torch.ones(x.shape[0], device=x.device), search
    weights = torch.tensor(UNIQUENESS_WEIGHTS[: squared.shape[1]], device=x.device)
    score = squared.sqrt() @ (weights / weights.sum())
    top = score.max()
    return (score / top if float(top) > 0 else score), search


class Uniqueness(Selector):
    """The most unique samples: the largest (weighted) distances to their nearest neighbours.

    FiftyOne brain ``compute_uniqueness`` (``fiftyone/brain/internal/core/uniqueness.py``):
    the distances to the 3 nearest neighbours weighted 0.6 / 0.3 / 0.1, normalised by the
    maximum. Exact k-NN by blocked brute force (no N x N); above 100,000 samples an inverted
    file (:mod:`toolkit.selectors.neighbors`). It favours isolated samples
    (outliers and rare modes); no randomness. The score is the uniqueness in [0, 1];
    ``info["neighbor_search"]`` records the search (and, for the inverted file, its recall).
    """

    name = "uniqueness"
    score_meaning = "FiftyOne uniqueness: weighted distance to the 3 nearest neighbours / its maximum"
    source = "FiftyOne brain compute_uniqueness (Voxel51)"

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, None, dict[str, Any]]:
        score, search = uniqueness(x)
        return stable_top(score, k), score, None, {"neighbor_search": search}


class Moderate(Selector):
    """Moderate-DS: the samples whose distance to the centroid is nearest the median distance.

    Xia et al., "Moderate Coreset" (ICLR 2023, ``tmllab/2023_ICLR_Moderate-DS``): in
    representation space, compute every sample's distance to its class centroid and keep
    those closest to the median, a band that avoids both the easy core and the outliers and
    was robust across budgets and corruption. The source works per class: use
    ``balanced=True`` for that (the rule then runs inside each class); without it, the
    centroid is that of all samples. No randomness; ties keep the lower index. The score is
    minus |distance - median distance|.
    """

    name = "moderate"
    score_meaning = "minus |distance to the centroid - median distance| (per class with balanced=True)"
    source = "Moderate-DS (Xia et al., ICLR 2023)"

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, None, dict[str, Any]]:
        distance = squared_norms(x - x.mean(dim=0, keepdim=True)).sqrt_()
        median = distance.median()
        score = -(distance - median).abs()
        return stable_top(score, k), score, None, {"median_distance": float(median)}
