"""k-nearest neighbours at any N: exact up to :data:`EXACT_MAX_ROWS` rows, an inverted file above.

Exact k-NN (:func:`toolkit.selectors.distances.knn`) costs N^2 x d multiply-adds: at
N = 50,000 and d = 216 about 5 x 10^11, at N = 1,000,000 about 2 x 10^14, 400 times as
many. Above :data:`EXACT_MAX_ROWS` rows the search uses an inverted file, the
index of faiss's ``IndexIVFFlat`` (Jegou et al. 2011): the rows are split into about sqrt(N)
k-means cells, and the rows of a cell look for their neighbours among the rows of the
``probes`` cells whose centroids are nearest their own cell's centroid (their own cell
first; :data:`PROBE_SHARE` of the cells). Every row of a cell shares its candidates, so a
cell is one blocked GEMM against the probed rows: about N x probes x sqrt(N) x d work
instead of N^2 x d.

The result is approximate: a true neighbour in a cell that was not probed is missed and
replaced by the next-nearest candidate. So every approximate search measures its own
recall (the share of the exact k nearest it found) on a seeded sample of
:data:`RECALL_SAMPLE` rows, searched exactly, and reports it with the cells and probes in
the description that the selectors record in their ``info``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toolkit.errors import require
from toolkit.selectors.cluster import kmeans
from toolkit.selectors.distances import BLOCK_BYTES, generator, knn, rows_per_block, squared_norms

EXACT_MAX_ROWS = 100_000
"""The most rows searched exactly (2 x 10^12 multiply-adds at d = 216)."""

PROBE_SHARE = 0.05
"""Share of the cells searched for each cell's rows (at least :data:`MIN_PROBES`).

The rows of a cell are searched against about this share of all rows, so the search computes
about this share of the exact search's distances (plus k-means). Recall grows with the share:
high-dimensional embeddings have no small region that holds a row's neighbours, so higher
recall costs proportionally more. Each search records the recall it reached; bench/scale.py
records it at 1,000,000 rows (docs/bench/scale.json)."""

MIN_PROBES = 8
"""The fewest cells searched for a cell's rows."""

RECALL_SAMPLE = 1_000
"""Rows whose approximate neighbours are checked against an exact search to measure recall."""

SEED = 0
"""The k-means cells and the recall sample are part of the index, not of a selection: one fixed seed."""


def index_shape(n: int) -> tuple[int, int]:
    """The inverted file's cells (about sqrt(n)) and probes (:data:`PROBE_SHARE` of them, at least 8)."""
    cells = max(1, round(math.sqrt(n)))
    return cells, min(cells, max(MIN_PROBES, math.ceil(PROBE_SHARE * cells)))


def searched_exactly(n: int) -> bool:
    """Whether ``n`` rows are searched exactly (at most :data:`EXACT_MAX_ROWS`) rather than over an inverted file."""
    return n <= EXACT_MAX_ROWS


def nearest_neighbors(
    x: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    exact_max_rows: int | None = None,
    probes: int | None = None,
    budget_bytes: int = BLOCK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The ``k`` nearest rows of every row of ``x``: exact up to ``exact_max_rows`` rows, else an inverted file.

    ``exact_max_rows`` defaults to :data:`EXACT_MAX_ROWS`, ``probes`` to :data:`PROBE_SHARE` of
    the sqrt(N) cells. Returns (squared distances (N, k) ascending, indices (N, k), a
    description of the search:
    ``{"search": "exact"}``, or ``{"search": "ivf", "cells", "probes", "recall", "recall_rows"}``).
    ``exclude_self`` and the clamping of ``k`` behave as in :func:`~toolkit.selectors.distances.knn`.
    """
    n = x.shape[0]
    if searched_exactly(n) if exact_max_rows is None else n <= exact_max_rows:
        squared, index = knn(x, k, exclude_self=exclude_self, budget_bytes=budget_bytes)
        return squared, index, {"search": "exact"}
    k = max(0, min(k, n - 1 if exclude_self else n))
    cells, default_probes = index_shape(n)
    probes = default_probes if probes is None else probes
    require(probes >= 1, f"an inverted-file search needs probes >= 1, got {probes}")
    squared, index = ivf_knn(x, k, cells=cells, probes=probes, exclude_self=exclude_self, budget_bytes=budget_bytes)
    recall, checked = measured_recall(x, index, exclude_self=exclude_self)
    return squared, index, {"search": "ivf", "cells": cells, "probes": probes, "recall": recall, "recall_rows": checked}


@dataclass
class InvertedFile:
    """Rows grouped into k-means cells, and for every cell the cells its rows are searched against.

    ``members`` lists the row ids cell by cell (cell c's are ``members[starts[c]:starts[c + 1]]``);
    ``probed[c]`` lists the cells searched for cell c's rows: c itself first, then the cells
    whose centroids are nearest c's, ``probes`` of them, and beyond that until they hold at
    least ``min_candidates`` rows.
    """

    members: torch.Tensor
    starts: list[int]
    probed: list[list[int]]

    @classmethod
    def build(cls, x: torch.Tensor, cells: int, probes: int, min_candidates: int = 1) -> InvertedFile:
        clustering = kmeans(x, cells, seed=SEED)
        counts = torch.bincount(clustering.assignment, minlength=cells).tolist()
        by_distance = knn(clustering.centroids, cells)[1].tolist()  # each cell's cells, nearest first
        probed = []
        for cell in range(cells):
            chosen, held = [cell], counts[cell]
            for other in by_distance[cell]:
                if len(chosen) >= probes and held >= min_candidates:
                    break
                if other != cell:
                    chosen.append(other)
                    held += counts[other]
            probed.append(chosen)
        members = torch.argsort(clustering.assignment, stable=True)
        return cls(members, [0, *itertools.accumulate(counts)], probed)

    def blocks(
        self, x: torch.Tensor, budget_bytes: int = BLOCK_BYTES
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Blocks of (query rows, candidate rows, ``|c|^2 - 2 q.c`` for every query and candidate).

        A query row's own ``|q|^2`` is left out: a k-NN search adds it to the k values it
        keeps, not to the whole block (two passes over the block saved), and a range search
        compares against ``radius^2 - |q|^2`` instead. The candidates are a cell's probed rows,
        its own first and in ``members`` order (:meth:`self_positions`).
        """
        sq = squared_norms(x)
        for cell, probed in enumerate(self.probed):
            rows = self.members[self.starts[cell] : self.starts[cell + 1]]
            if not len(rows):
                continue
            candidates = torch.cat([self.members[self.starts[c] : self.starts[c + 1]] for c in probed])
            candidate_x, candidate_sq = x[candidates], sq[candidates]
            step = rows_per_block(len(candidates), budget_bytes)
            for start in range(0, len(rows), step):
                query = rows[start : start + step]
                yield query, candidates, torch.addmm(candidate_sq, x[query], candidate_x.T, alpha=-2.0)

    def self_positions(self, query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Where each query row sits among its block's candidates (its own cell comes first)."""
        first = int(torch.nonzero(candidates == query[0])[0, 0])
        return torch.arange(first, first + len(query), device=query.device)


def ivf_knn(
    x: torch.Tensor,
    k: int,
    *,
    cells: int,
    probes: int,
    exclude_self: bool = False,
    budget_bytes: int = BLOCK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate k-NN of every row of ``x`` over ``cells`` k-means cells, ``probes`` of them per cell.

    A cell's probes are taken in order of centroid distance, its own first, and beyond
    ``probes`` until they hold at least k + 1 rows, so every row gets k candidates. Within
    the probed rows the search is exact and blocked like :func:`knn`.
    """
    n = x.shape[0]
    dist = torch.empty(n, k, device=x.device)
    index = torch.empty(n, k, dtype=torch.long, device=x.device)
    if not k:
        return dist, index
    inverted = InvertedFile.build(x, cells, probes, min_candidates=k + 1)
    sq = squared_norms(x)
    for query, candidates, partial in inverted.blocks(x, budget_bytes):
        if exclude_self:
            partial[torch.arange(len(query), device=x.device), inverted.self_positions(query, candidates)] = torch.inf
        value, found = torch.topk(partial, k, dim=1, largest=False)
        dist[query] = value + sq[query, None]
        index[query] = candidates[found]
    return dist.clamp_(min=0.0), index


def ivf_pairs_within(
    x: torch.Tensor, radius: float, *, cells: int, probes: int, budget_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Approximately every pair (i, j) with ``|x_i - x_j| < radius``, block by block, over an inverted file.

    Yields (rows, columns) int64 arrays per block; a pair found from both sides comes twice
    (callers symmetrise), and a pair whose rows' cells do not probe each other is missed.
    """
    inverted = InvertedFile.build(x, cells, probes)
    sq = squared_norms(x)
    for query, candidates, partial in inverted.blocks(x, budget_bytes):
        found = torch.nonzero(partial < (float(radius) ** 2 - sq[query])[:, None])
        yield query[found[:, 0]].cpu().numpy(), candidates[found[:, 1]].cpu().numpy()


def measured_recall(
    x: torch.Tensor, index: torch.Tensor, *, exclude_self: bool, sample: int = RECALL_SAMPLE
) -> tuple[float, int]:
    """The share of the exact k nearest that ``index`` lists, over a seeded sample of rows; and the sample size.

    Ties at the k-th distance can make two correct answers differ, so this is a lower bound.
    """
    n, k = index.shape
    if not k:
        return 1.0, 0
    rows = torch.randperm(n, generator=generator(SEED))[: min(sample, n)].to(x.device)
    sq = squared_norms(x)
    hits = 0
    step = rows_per_block(n)
    for start in range(0, len(rows), step):
        chosen = rows[start : start + step]
        block = torch.addmm(sq, x[chosen], x.T, alpha=-2.0)
        if exclude_self:
            block[torch.arange(len(chosen), device=x.device), chosen] = torch.inf
        exact = torch.topk(block, k, dim=1, largest=False).indices
        hits += int((exact[:, :, None] == index[chosen][:, None, :]).any(dim=2).sum())
    return hits / (len(rows) * k), len(rows)


def measured_range_recall(
    x: torch.Tensor, radius: float, found_degree: np.ndarray, *, sample: int = RECALL_SAMPLE
) -> tuple[float, int]:
    """The share of the pairs within ``radius`` that were found, over a seeded sample of rows; and the sample size.

    ``found_degree[i]`` is how many rows (itself included) the approximate search put
    within ``radius`` of row i; the sampled rows are counted exactly against all rows.
    """
    n = x.shape[0]
    rows = torch.randperm(n, generator=generator(SEED))[: min(sample, n)].to(x.device)
    sq = squared_norms(x)
    threshold = float(radius) ** 2
    exact = 0
    step = rows_per_block(n)
    for start in range(0, len(rows), step):
        chosen = rows[start : start + step]
        block = torch.addmm(sq, x[chosen], x.T, alpha=-2.0).add_(sq[chosen, None])
        own = torch.arange(len(chosen), device=x.device)
        block[own, chosen] = 0.0  # a row is in its own ball, whatever the rounding
        exact += int((block < threshold).sum())
    return float(found_degree[rows.cpu().numpy()].sum()) / exact, len(rows)
