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
    """Exactly ``k`` picks from the columns' top lists, taken in a fixed round-robin order.

    Phase 1 (Eq. 4): every column c takes its top ``k // n`` rows (n columns). A row in
    several top lists counts once and is credited to the column where it ranks highest
    (lower column index on ties). Phase 2 (fill): the union is short by the duplicates plus
    ``k mod n``; the columns take turns in index order, each adding its best row not yet
    taken, until there are exactly ``k``. The result is deterministic and contains the
    whole Eq. 4 union.

    Returns (rows in pick order, the column that picked each).
    """
    n_rows, n_cols = values.shape
    base = k // n_cols
    # Columns share top rows, so the fill reaches deep: real CIFAR-10 autoencoder embeddings
    # (k = 4,320, 216 columns, base 20) needed a depth of 200-232. torch.topk costs about the
    # same for a depth of 29 or 400 (it scans every row), so start deep and grow fast.
    depth = min(n_rows, 16 * (base + 1) + 64)
    while True:
        order = torch.topk(values, depth, dim=0).indices.T.cpu().numpy()  # (n_cols, depth)
        picked, by = _round_robin(order, base, k, n_rows)
        if picked is not None:
            return picked, by
        depth = min(n_rows, depth * 4)  # some column ran out of candidates: look deeper


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
    pointer = np.full(n_cols, base)
    col = 0
    exhausted = 0
    while len(picked) < k:
        while pointer[col] < depth and taken[order[col, pointer[col]]]:
            pointer[col] += 1
        if pointer[col] < depth:
            row = int(order[col, pointer[col]])
            taken[row] = True
            picked.append(row)
            by.append(col)
            exhausted = 0
        else:
            exhausted += 1
            if depth < n_rows:
                return None, np.zeros(0)  # look deeper
            if exhausted >= n_cols:  # pragma: no cover - impossible while k <= n_rows
                raise RuntimeError("ran out of candidates")
        col = (col + 1) % n_cols
    return np.asarray(picked, dtype=np.int64), np.asarray(by, dtype=np.int64)


class TopKActivation(Selector):
    """For each of the d embedding dimensions, the k/d samples that activate it most.

    The paper's Eq. 4 (Gonzalez et al., §IV-C): "select the top k/n samples that activate
    element i in the embedding", the union over all dimensions. When dimensions share top
    samples, or k is not a multiple of d, the dimensions take turns adding their next best
    sample until exactly k are chosen (see :func:`topk_per_column`).
    ``picked_by`` is the dimension that picked each sample; the score is the sample's largest
    per-dimension z-score (how extreme it is in its most extreme dimension).
    """

    name = "topk-activation"
    score_meaning = "largest per-dimension z-score of the sample's activations"
    source = "the paper, Eq. 4 (Gonzalez, Landgraf, Miikkulainen)"

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        picked, by = topk_per_column(x, k)
        return picked, dimension_zscores(x).max(dim=1).values, by
