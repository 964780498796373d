"""The paper's selector: the samples that activate each embedding dimension most (Eq. 4)."""

from __future__ import annotations

import numpy as np
import torch

from toolkit.selectors.base import Selector


def dimension_zscores(x: torch.Tensor) -> torch.Tensor:
    """Activations standardised per dimension (a constant dimension gives zeros)."""
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, correction=0, keepdim=True)
    return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))


def topk_per_column(values: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``k`` rows: each of the n columns contributes its own top ``k // n`` rows.

    Every column c has a quota of ``k // n`` rows, plus one for the first ``k mod n`` columns.
    Phase 1 (Eq. 4): every column takes its top ``k // n`` rows. A row in several top lists
    counts once and is credited to the column where it ranks highest (lower column index on
    ties). Phase 2 (fill): the columns take turns in index order; each column still short of
    its quota (because a shared row went to another column, or for the remainder) adds its
    best row not yet taken, until there are exactly ``k``. Every column ends with exactly its
    quota, the result contains the whole Eq. 4 union, and it is deterministic.

    Returns (rows in pick order, the column that picked each).
    """
    n_rows, n_cols = values.shape
    base = k // n_cols
    depth = min(n_rows, 2 * base + 8)
    while True:
        order = torch.topk(values, depth, dim=0).indices.T.cpu().numpy()  # (n_cols, depth)
        picked, by = _round_robin(order, base, k, n_rows)
        if picked is not None:
            return picked, by
        depth = min(n_rows, depth * 2)  # some column ran out of candidates: look deeper


def _round_robin(order: np.ndarray, base: int, k: int, n_rows: int) -> tuple[np.ndarray | None, np.ndarray]:
    n_cols, depth = order.shape
    taken = np.zeros(n_rows, dtype=bool)
    picked: list[int] = []
    by: list[int] = []
    if base:
        top = order[:, :base]
        rank = np.broadcast_to(np.arange(base), top.shape)
        col = np.broadcast_to(np.arange(n_cols)[:, None], top.shape)
        # sort candidates by (row, rank, column): the first entry of each row is its credit
        flat = np.lexsort((col.ravel(), rank.ravel(), top.ravel()))
        rows_sorted = top.ravel()[flat]
        first = np.ones(len(rows_sorted), dtype=bool)
        first[1:] = rows_sorted[1:] != rows_sorted[:-1]
        credit_rows = rows_sorted[first]
        credit_cols = col.ravel()[flat][first]
        credit_rank = rank.ravel()[flat][first]
        # report phase-1 picks column by column, best rank first
        report = np.lexsort((credit_rank, credit_cols))
        picked.extend(credit_rows[report].tolist())
        by.extend(credit_cols[report].tolist())
        taken[credit_rows] = True
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
        picked, by = topk_per_column(x, k)
        return picked, dimension_zscores(x).max(dim=1).values, by
