"""The paper's selector: the samples that activate each embedding dimension most (Eq. 4)."""

from __future__ import annotations

import numpy as np
import torch

from toolkit.selectors.base import Selector


def dimension_zscores(x: torch.Tensor) -> torch.Tensor:
    """Activations standardised per dimension.

    The standard deviation is floored at 5% of the median dimension's, so that nearly dead
    units (a ReLU channel that almost never fires has a spread near zero) do not turn their
    rare activations into enormous z-scores; a constant dimension gives zeros.
    """
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, correction=0, keepdim=True)
    floor = 0.05 * std.median()
    return (x - mean) / torch.where(std > floor, std, floor if floor > 0 else torch.ones_like(std))


def topk_per_column(values: torch.Tensor, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``k`` rows: each of the n columns contributes its own top ``k // n`` rows.

    Every column c has a quota of ``k // n`` rows, plus one for the first ``k mod n`` columns.
    Phase 1 (Eq. 4): every column takes its top ``k // n`` rows. A row in several top lists
    counts once and is credited to the column where it ranks highest (lower column index on
    ties). Phase 2 (fill): the columns take turns in index order; each column still short of
    its quota (because a shared row went to another column, or for the remainder) adds its
    best row not yet taken, until there are exactly ``k``. Every column ends with exactly its
    quota, and the result contains the whole Eq. 4 union.

    Rows with equal values are ranked by a random permutation drawn from ``seed``, exactly
    (see :func:`ranked_rows`), so the result does not depend on the device or on how deep the
    top lists are cut. This matters for dead or nearly dead units: a dimension that is
    constant for most samples has more tied "top" samples than its quota, and ranking ties by
    row index would hand them to the lowest indices, in a class-sorted data set the first
    class.

    Returns (rows in pick order, the column that picked each).
    """
    n_rows, n_cols = values.shape
    base = k // n_cols
    generator = torch.Generator().manual_seed(int(seed))
    shuffle = torch.randperm(n_rows, generator=generator).to(values.device)
    shuffled = _shuffled_by_column(values, shuffle).T  # ranked_rows transposes it back without a copy
    # Columns share top rows, so the fill reaches deep: on real CIFAR-10 autoencoder embeddings
    # (k = 4,320, 216 columns, base 20) a depth of 400 was too shallow and 800 enough. A top
    # list costs about the same at a depth of 29 or 1,344 (the scan over every row dominates),
    # so start deep and grow fast.
    depth = min(n_rows, 64 * (base + 1))
    while True:
        order = shuffle[ranked_rows(shuffled, depth)].cpu().numpy()  # (n_cols, depth) row indices
        picked, by = _fill_quotas(order, base, k, n_rows)
        if picked is not None:
            return picked, by
        depth = min(n_rows, depth * 4)  # some column ran out of candidates: look deeper


SHUFFLE_BLOCK_ROWS = 16_384
"""Rows gathered at a time by :func:`_shuffled_by_column` (a few MB of temporary)."""


def _shuffled_by_column(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``values[order].T`` as one contiguous (n_cols, n_rows) tensor, the only copy made.

    Gathering whole rows a block at a time and writing them transposed holds one copy where
    gathering the rows and then transposing the gathered copy holds two (at a million rows x
    432 columns, 1.7 GB each), and reads whole rows where gathering along the rows of the
    transposed matrix makes a random access per element.
    """
    out = torch.empty(values.shape[1], values.shape[0], dtype=values.dtype, device=values.device)
    for start in range(0, len(order), SHUFFLE_BLOCK_ROWS):
        out[:, start : start + SHUFFLE_BLOCK_ROWS] = values[order[start : start + SHUFFLE_BLOCK_ROWS]].T
    return out


def ranked_rows(values: torch.Tensor, depth: int) -> torch.Tensor:
    """The ``depth`` best rows of every column, best first: (n_cols, depth) row positions.

    Rows are ranked by value (descending), then by position (ascending), exactly, including
    which of several rows tied at the cut-off make it into the list. ``torch.topk`` alone
    leaves both choices to the implementation.
    """
    n_rows, n_cols = values.shape
    if depth >= n_rows:
        return torch.sort(values, dim=0, descending=True, stable=True).indices.T
    columns = values.T.contiguous()  # one row per column: every reduction below runs along memory
    cutoff = torch.topk(columns, depth, dim=1).values[:, -1:]  # each column's depth-th largest value
    above = columns > cutoff
    tied = columns == cutoff
    room = depth - above.sum(dim=1, dtype=torch.int32)  # tied rows that still fit, per column
    keep = above | tied
    crowded = (tied.sum(dim=1, dtype=torch.int32) > room).nonzero()[:, 0]  # more ties than room
    if len(crowded):  # those columns keep their first tied rows only
        first = torch.cumsum(tied[crowded].to(torch.int32), dim=1) <= room[crowded, None]
        keep[crowded] = above[crowded] | (tied[crowded] & first)
    positions = keep.nonzero()[:, 1].reshape(n_cols, depth)  # ascending within each column
    order = torch.sort(torch.gather(columns, 1, positions), dim=1, descending=True, stable=True).indices
    return torch.gather(positions, 1, order)


def _fill_quotas(order: np.ndarray, base: int, k: int, n_rows: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Phase 1 and the quota fill over (n_cols, depth) ranked rows; ``None`` if too shallow."""
    n_cols, depth = order.shape
    taken = np.zeros(n_rows, dtype=bool)
    picked: list[int] = []
    by: list[int] = []
    if base:
        head = order[:, :base]
        rank = np.broadcast_to(np.arange(base), head.shape).ravel()
        column = np.broadcast_to(np.arange(n_cols)[:, None], head.shape).ravel()
        rows = head.ravel()
        # Sort the candidates by (row, rank, column): the first entry of each row is its credit.
        ordered = np.lexsort((column, rank, rows))
        is_first = np.ones(len(ordered), dtype=bool)
        is_first[1:] = rows[ordered][1:] != rows[ordered][:-1]
        credit = ordered[is_first]
        report = credit[np.lexsort((rank[credit], column[credit]))]  # column by column, best first
        picked.extend(rows[report].tolist())
        by.extend(column[report].tolist())
        taken[rows[report]] = True
    quota = np.full(n_cols, base)
    quota[: k - base * n_cols] += 1
    count = np.bincount(np.asarray(by, dtype=np.int64), minlength=n_cols)
    pointer = np.full(n_cols, base)
    while len(picked) < k:
        for col in range(n_cols):
            if count[col] >= quota[col]:
                continue
            while pointer[col] < depth and taken[order[col, pointer[col]]]:
                pointer[col] += 1
            if pointer[col] == depth:
                if depth < n_rows:
                    return None, np.zeros(0)  # look deeper
                raise RuntimeError("ran out of candidates")  # pragma: no cover - k <= n_rows
            row = int(order[col, pointer[col]])
            taken[row] = True
            picked.append(row)
            by.append(col)
            count[col] += 1
    return np.asarray(picked, dtype=np.int64), np.asarray(by, dtype=np.int64)


class TopKActivation(Selector):
    """For each of the d embedding dimensions, the k/d samples that activate it most.

    The paper's Eq. 4 (Gonzalez et al., §IV-C): "select the top k/n samples that activate
    element i in the embedding", the union over all dimensions. When dimensions share top
    samples, the dimension that lost a shared sample takes its next best instead, and the
    ``k mod d`` remainder goes one each to the first dimensions, so exactly k samples are
    chosen and every dimension picks k // d or k // d + 1 of them (see
    :func:`topk_per_column`).
    ``picked_by`` is the dimension that picked each sample; the score is the sample's largest
    per-dimension z-score (how extreme it is in its most extreme dimension).
    """

    name = "topk-activation"
    score_meaning = "largest per-dimension z-score of the sample's activations"
    source = "the paper, Eq. 4 (Gonzalez, Landgraf, Miikkulainen)"

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        picked, by = topk_per_column(x, k, seed)
        return picked, dimension_zscores(x).max(dim=1).values, by
