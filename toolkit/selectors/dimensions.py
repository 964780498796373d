"""Per-dimension rules beyond Eq. 4: the paper's own next steps and range-covering variants.

The paper (Gonzalez et al., §IV-C and §VI) names the extensions of its top-k activation
rule: run it on PCA-whitened embeddings, over *combinations* of dimensions, and with a
penalty on samples that are highly active in many dimensions. The selection-methods note
adds the risk that per-dimension maxima are extreme points, hence a stratified variant that
spreads each dimension's picks over its whole activation range.

Every rule here turns the embedding into a matrix of per-column priorities and hands it to
:func:`toolkit.selectors.activation.topk_per_column`, so all of them share Eq. 4's budget
split (k/n per column) and its documented round-robin fill to exactly k unique samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from toolkit.errors import require
from toolkit.selectors.activation import dimension_zscores, topk_per_column
from toolkit.selectors.base import Selector
from toolkit.selectors.distances import generator

PCA_BLOCK_ROWS = 65_536
"""Rows per block of :func:`pca_basis` and :func:`pca_whiten`: the centred data is never held
whole (at a million rows it would be one more copy of the embedding)."""


def pca_basis(x: torch.Tensor, components: int | None = None, rtol: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """The mean (1, d), the whitening map (d, m) and the explained variances (m) of the rows of ``x``.

    The covariance is summed block by block in float64. Components with variance below
    ``rtol`` x the largest are dropped (they carry only rounding noise); ``components`` caps
    m. Signs follow scikit-learn's ``svd_flip`` convention (the largest loading of each
    component is positive), so the result is deterministic.
    """
    mean = x.mean(dim=0, keepdim=True)
    covariance = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], PCA_BLOCK_ROWS):
        centred = (x[start : start + PCA_BLOCK_ROWS] - mean).double()
        covariance.addmm_(centred.T, centred)
    covariance /= max(1, x.shape[0])
    try:
        variances, vectors = torch.linalg.eigh(covariance)  # ascending
        variances, vectors = variances.flip(0), vectors.flip(1)
    except torch.linalg.LinAlgError:
        # LAPACK's divide-and-conquer eigensolver can fail on degenerate matrices (many
        # repeated eigenvalues); the SVD of a symmetric PSD matrix gives the same basis.
        vectors, variances, _ = torch.linalg.svd(covariance)  # descending
    keep = int((variances > rtol * variances[0].clamp(min=torch.finfo(torch.float64).tiny)).sum())
    keep = max(1, min(keep, components or keep))
    variances, vectors = variances[:keep], vectors[:, :keep]
    largest = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[largest, torch.arange(keep, device=x.device)])
    vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)
    scale = variances.clamp(min=torch.finfo(torch.float64).tiny).rsqrt()
    return mean, (vectors * scale).to(x.dtype), variances


def pca_whiten(x: torch.Tensor, components: int | None = None, rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal-component scores with unit variance, (N, m), and the explained variances (see :func:`pca_basis`)."""
    mean, whitening, variances = pca_basis(x, components, rtol)
    scores = torch.empty(x.shape[0], whitening.shape[1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], PCA_BLOCK_ROWS):
        torch.mm(x[start : start + PCA_BLOCK_ROWS] - mean, whitening, out=scores[start : start + PCA_BLOCK_ROWS])
    return scores, variances


class TopKActivationPCA(Selector):
    """Eq. 4 on PCA-whitened embeddings: the top k/n samples of each principal component.

    The paper's §VI: "Principal components analysis (PCA) may be a good precursor to such
    filtering." The embedding is centred and rotated onto its principal axes, each scaled to
    unit variance (components with no variance are dropped). A principal axis has no
    preferred direction, so by default both of its tails count as columns (``tails="both"``:
    column j is component j's upper tail, column m + j its lower tail); ``tails="upper"``
    keeps only the sign convention's upper tail. The budget split and round-robin fill are
    Eq. 4's (:func:`~toolkit.selectors.activation.topk_per_column`).
    ``picked_by`` is the column (component and tail) that picked the sample; the score is the
    sample's largest whitened component score over the columns used.
    """

    name = "topk-activation-pca"
    score_meaning = "largest whitened principal-component score over the columns used (tails)"
    source = "the paper's §VI next step (PCA as a precursor to Eq. 4, Gonzalez et al.)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"components": None, "tails": "both"}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        require(self.params["tails"] in ("both", "upper"), "topk-activation-pca: tails must be 'both' or 'upper'")
        if self.params["tails"] == "upper":
            columns, _ = pca_whiten(x, self.params["components"])
        else:  # component j's upper tail in column j, its lower tail in column m + j, filled block by block
            mean, whitening, _ = pca_basis(x, self.params["components"])
            m = whitening.shape[1]
            columns = torch.empty(x.shape[0], 2 * m, dtype=x.dtype, device=x.device)
            for start in range(0, x.shape[0], PCA_BLOCK_ROWS):
                block = columns[start : start + PCA_BLOCK_ROWS]
                block[:, :m] = (x[start : start + PCA_BLOCK_ROWS] - mean) @ whitening
                torch.neg(block[:, :m], out=block[:, m:])
        picked, by = topk_per_column(columns, k, seed)
        return picked, columns.max(dim=1).values, by


class TopKPairs(Selector):
    """Eq. 4 over pairs of dimensions: the samples that activate two dimensions *together*.

    The paper's §IV-C: "it may be advantageous to also maximize activations for
    combinations of elements." Each column is a pair (i, j) of dimensions, valued by the
    sample's joint activation ``min(z_i, z_j)`` of the per-dimension z-scores
    (``combine="min"``: both must be high) or their mean (``combine="mean"``). There are
    d(d-1)/2 pairs (23,220 for d = 216), far more than a budget can serve at k/n per column,
    so ``pairs`` of them (default d, the same column count as Eq. 4) are drawn uniformly
    without replacement with the seed; ``pairs`` >= d(d-1)/2 uses all of them (memory
    N x pairs floats); a one-dimensional embedding has only the pair (0, 0), which is plain
    Eq. 4. Budget split and fill are Eq. 4's. ``picked_by`` indexes the pair
    list recorded in ``info["pairs"]``; the score is the sample's best joint activation.
    """

    name = "topk-pairs"
    score_meaning = "largest joint activation (min or mean of two z-scores) over the drawn dimension pairs"
    source = "the paper's §IV-C remark on combinations of embedding elements (Gonzalez et al.)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"pairs": None, "combine": "min"}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray, dict]:
        dims = x.shape[1]
        require(self.params["combine"] in ("min", "mean"), "topk-pairs: combine must be 'min' or 'mean'")
        # One dimension has no pairs but itself: (0, 0), i.e. plain Eq. 4.
        first, second = np.triu_indices(dims, k=1 if dims > 1 else 0)
        wanted = int(self.params["pairs"] or dims)
        require(wanted >= 1, f"topk-pairs: pairs must be positive, got {wanted}")
        if wanted < len(first):
            chosen = np.sort(np.random.default_rng(seed).choice(len(first), size=wanted, replace=False))
            first, second = first[chosen], second[chosen]
        z = dimension_zscores(x)
        a = torch.as_tensor(first, device=x.device)
        b = torch.as_tensor(second, device=x.device)
        joint = torch.minimum(z[:, a], z[:, b]) if self.params["combine"] == "min" else (z[:, a] + z[:, b]) / 2
        picked, by = topk_per_column(joint, k, seed)
        return picked, joint.max(dim=1).values, by, {"pairs": np.stack([first, second], axis=1).tolist()}


class TopKPenalized(Selector):
    """Eq. 4 with a penalty on samples that are highly active in many dimensions.

    The paper's §VI: "The existing technique could also be enhanced by penalizing images
    that contain too many highly-active features", to isolate features more clearly early in
    training. A sample is *highly active* in a dimension when its z-score there exceeds
    ``threshold`` (default 2). Column c values sample i at
    ``z_ic - penalty * (number of other dimensions where i is highly active)``, so a sample
    wins a dimension's top list when it is extreme there and quiet elsewhere. Budget split
    and fill are Eq. 4's; ``picked_by`` is the dimension. The score is the sample's best
    penalised value.
    """

    name = "topk-penalized"
    score_meaning = "largest per-dimension z-score minus penalty x (other dimensions where the sample is highly active)"
    source = "the paper's §VI next step (penalise many highly active features, Gonzalez et al.)"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"penalty": 0.5, "threshold": 2.0}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        z = dimension_zscores(x)
        active = z > float(self.params["threshold"])
        breadth = active.sum(dim=1, keepdim=True, dtype=z.dtype)
        valued = z - float(self.params["penalty"]) * (breadth - active.to(z.dtype))
        picked, by = topk_per_column(valued, k, seed)
        return picked, valued.max(dim=1).values, by


class StratifiedDimension(Selector):
    """Per dimension, picks spread over the whole activation range, not only its top tail.

    Each dimension's range [min, max] is cut into ``strata`` equal-width bins (default: the
    per-dimension budget k/d, at least 1). A dimension's picks visit its non-empty bins in
    rounds, highest bin first, taking one random sample (seeded) from each bin per round;
    a bin with fewer samples than rounds drops out. This is the coverage-centric idea of CCS
    (Zheng et al., arXiv 2210.15809: equal-width strata, equal budgets capped by count,
    random inside each) applied to every embedding dimension, with Eq. 4's budget split and
    round-robin fill (:func:`~toolkit.selectors.activation.topk_per_column`). Sparse bins
    (the tails) are therefore covered as well as the dense middle. ``picked_by`` is the
    dimension; the score is how rare the sample's bin is in its rarest dimension
    (1 / the bin's population).
    """

    name = "stratified-dimension"
    column_block = 16
    score_meaning = "1 / population of the sample's activation bin, in its rarest dimension"
    source = "CCS stratified sampling (Zheng et al. 2023) applied per embedding dimension"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"strata": None}

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        n, dims = x.shape
        strata = int(self.params["strata"] or max(1, k // dims))
        require(strata >= 1, f"stratified-dimension: strata must be positive, got {strata}")
        gen = generator(seed)
        priority = torch.empty(n, dims, dtype=torch.long, device=x.device)
        rarity = torch.zeros(n, device=x.device)
        for start in range(0, dims, self.column_block):  # bounded temporaries: a few columns at a time
            columns = slice(start, start + self.column_block)
            priority[:, columns], block_rarity = _stratified_priority(x[:, columns], strata, gen)
            torch.maximum(rarity, block_rarity, out=rarity)
        picked, by = topk_per_column(priority, k, seed)
        return picked, rarity, by


def _stratified_priority(x: torch.Tensor, strata: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of ``x``: each row's pick priority (higher first) and its bin's rarity (max over columns).

    Rows are ordered by bin, then by a seeded random key; round r takes the r-th row of every
    non-empty bin, top bin first, so the priority falls with the round, then with the bin.
    """
    n, dims = x.shape
    low = x.min(dim=0, keepdim=True).values
    width = (x.max(dim=0, keepdim=True).values - low) / strata
    width = torch.where(width > 0, width, torch.ones_like(width))
    stratum = ((x - low) / width).long().clamp_(0, strata - 1)  # (n, dims)
    population = torch.zeros(dims, strata, device=x.device).scatter_add_(
        1, stratum.T, torch.ones(dims, n, device=x.device)
    )  # (dims, strata)
    noise = torch.rand(n, dims, generator=gen, dtype=torch.float64).to(x.device)
    order = torch.argsort(stratum.double() + noise, dim=0)
    sorted_stratum = stratum.gather(0, order)
    first_of_bin = torch.cumsum(population, dim=1) - population  # rows before each bin
    rank_in_bin = torch.arange(n, device=x.device)[:, None] - first_of_bin.T.gather(0, sorted_stratum).long()
    sorted_priority = -(rank_in_bin * strata + (strata - 1 - sorted_stratum))
    priority = torch.empty_like(sorted_priority).scatter_(0, order, sorted_priority)
    rarity = (1.0 / population.T.gather(0, stratum).clamp(min=1.0)).max(dim=1).values
    return priority, rarity
