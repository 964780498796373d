"""Selection diagnostics: how a subset covers the embedding, measured before any training.

The literature's warning (DeepCore, CCS) is that at small budgets extreme picks often lose
to random, and coverage is what separates the rules that win. These numbers make coverage
visible for any selection, beside what random selection of the same size would give:

* **coverage radius**: the largest distance from a training sample to its nearest
  selected sample (k-center's objective; lower = no region left far from the subset);
* **mean nearest-selected distance**: the same, averaged over all samples;
* **facility location**: mean over samples of ``exp(-d^2 / h)``, d the distance to the
  nearest selected sample and h the data's k-NN bandwidth (the similarity the
  ``facility-location`` selector uses), in [0, 1]; 1 = every sample has a selected twin;
* **class histogram** and its **entropy** (normalised by log of the class count; 1 = the
  subset's classes are uniform);
* **per-dimension tail coverage**: for each embedding dimension, how many selected samples
  are among the dimension's top ``tail`` (1 %) activations (the paper's Eq. 4 targets these);
* **outlier share**: the share of the subset among the data's 5 % most outlying samples
  (largest Mahalanobis distance from the mean); random gives about 5 %;
* **Jaccard overlap** between two selections.

All computations are blocked (distances to the selection in row blocks; no N x N matrix)
and run in torch on the embeddings' device. :class:`SelectionDiagnostics` computes the
data-level statistics once, so comparing many selections of one embedding is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from toolkit.errors import require
from toolkit.selectors.base import as_tensor, check_labels
from toolkit.selectors.dimensions import pca_whiten
from toolkit.selectors.distances import generator, knn_of, nearest, squared_norms

DEFAULT_TAIL = 0.01
DEFAULT_OUTLIER_QUANTILE = 0.95
DEFAULT_NEIGHBORS = 20
BANDWIDTH_SAMPLE = 2000

SUMMARY_COLUMNS = (
    "size",
    "coverage_radius",
    "mean_nearest_distance",
    "facility_location",
    "class_entropy",
    "tail_dims_covered",
    "tail_share_mean",
    "outlier_share",
)
"""The scalar diagnostics shown in comparison tables, in display order."""


def jaccard(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two index sets (1.0 for two empty sets)."""
    first, second = np.unique(np.asarray(a)), np.unique(np.asarray(b))
    union = len(np.union1d(first, second))
    return len(np.intersect1d(first, second, assume_unique=True)) / union if union else 1.0


def jaccard_matrix(selections: Mapping[str, Sequence[int] | np.ndarray]) -> pd.DataFrame:
    """Pairwise Jaccard overlaps of named selections (a symmetric DataFrame, 1 on the diagonal)."""
    names = list(selections)
    table = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            table.loc[first, second] = table.loc[second, first] = jaccard(selections[first], selections[second])
    return table


def class_entropy(counts: np.ndarray) -> float:
    """Entropy of a class histogram divided by log(number of classes): 1 = uniform, 0 = one class."""
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) < 2 or counts.sum() == 0:
        return 1.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


class SelectionDiagnostics:
    """Coverage diagnostics of selections from one embedding (data statistics computed once).

    Args:
        embeddings: N x d array or tensor (any device; computations stay there).
        labels: optional class index per sample (enables the class histogram and entropy).
        num_classes: class count for the histogram (default: max label + 1).
        tail: share of each dimension's highest activations that forms its "top tail".
        outlier_quantile: samples beyond this quantile of Mahalanobis distance are outliers.
        neighbors: the k of the k-NN bandwidth behind the facility-location similarity
            (the ``facility-location`` selector's default, counting the sample itself).
        seed: seeds the rows sampled to estimate that bandwidth.

    Example::

        diag = SelectionDiagnostics(vectors, labels)
        diag.evaluate(selection.indices)["coverage_radius"]
        diag.compare({"random": r.indices, "k-center": c.indices})
    """

    def __init__(
        self,
        embeddings: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | None = None,
        *,
        num_classes: int | None = None,
        tail: float = DEFAULT_TAIL,
        outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE,
        neighbors: int = DEFAULT_NEIGHBORS,
        seed: int = 0,
    ) -> None:
        require(0.0 < tail <= 1.0, f"the tail share must be in (0, 1], got {tail}")
        require(0.0 < outlier_quantile < 1.0, f"the outlier quantile must be in (0, 1), got {outlier_quantile}")
        self.x = as_tensor(embeddings)
        self.n, self.dim = int(self.x.shape[0]), int(self.x.shape[1])
        require(self.dim > 0, "diagnostics need an embedding with at least one dimension")
        self.labels = check_labels(labels, self.n)
        self.num_classes = num_classes or (int(self.labels.max()) + 1 if self.labels is not None else 0)
        self.tail = tail
        self.outlier_quantile = outlier_quantile
        self.bandwidth = self._bandwidth(neighbors, seed)
        tail_rows = max(1, math.ceil(tail * self.n))
        self.tail_members = torch.topk(self.x, tail_rows, dim=0).indices  # (tail_rows, d)
        self.outlier = self._outliers(outlier_quantile)

    def _bandwidth(self, neighbors: int, seed: int) -> float:
        """Median squared distance to the k-th neighbour (self counted first), from a sample of rows."""
        others = max(1, neighbors - 1)
        if self.n < 2:
            return 1.0
        rows = torch.randperm(self.n, generator=generator(seed)).to(self.x.device)
        distances = knn_of(self.x, rows[:BANDWIDTH_SAMPLE], others)
        value = float(distances[:, -1].median())
        return value if value > 0 else 1.0

    def _outliers(self, quantile: float) -> torch.Tensor:
        """Mask of the samples beyond ``quantile`` of squared Mahalanobis distance from the mean."""
        whitened, _ = pca_whiten(self.x)
        distance = squared_norms(whitened)
        cut = distance.kthvalue(max(1, math.ceil(quantile * self.n))).values
        return distance > cut

    def evaluate(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, Any]:
        """Every diagnostic of one selection, as a JSON-ready dict (see the module docstring)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        index = np.unique(np.asarray(indices, dtype=np.int64))
        require(len(index) >= 1, "a selection to diagnose needs at least one sample")
        require(
            index[0] >= 0 and index[-1] < self.n,
            f"selection indices must lie in [0, {self.n}); got {index[0]}..{index[-1]}",
        )
        chosen = torch.as_tensor(index, device=self.x.device)
        squared, _ = nearest(self.x, self.x[chosen])
        distance = squared.sqrt()
        mask = torch.zeros(self.n, dtype=torch.bool, device=self.x.device)
        mask[chosen] = True
        tail_counts = mask[self.tail_members].sum(dim=0)
        k = len(index)
        result: dict[str, Any] = {
            "size": k,
            "coverage_radius": float(distance.max()),
            "mean_nearest_distance": float(distance.mean()),
            "facility_location": float(torch.exp(-squared / self.bandwidth).mean()),
            "bandwidth": self.bandwidth,
            "tail_fraction": self.tail,
            "tail_dims_covered": float((tail_counts > 0).double().mean()),
            "tail_share_mean": float(tail_counts.double().mean() / self.tail_members.shape[0]),
            "tail_share_random": k / self.n,
            "tail_counts": tail_counts.tolist(),
            "outlier_quantile": self.outlier_quantile,
            "outlier_share": float(self.outlier[chosen].double().mean()),
            "outlier_share_random": float(self.outlier.double().mean()),
        }
        if self.labels is not None:
            counts = np.bincount(self.labels[index], minlength=self.num_classes)
            result["class_counts"] = counts.tolist()
            result["class_entropy"] = class_entropy(counts)
        return result

    def compare(self, selections: Mapping[str, Sequence[int] | np.ndarray]) -> pd.DataFrame:
        """One row of scalar diagnostics per named selection (columns :data:`SUMMARY_COLUMNS`)."""
        rows = {name: self.evaluate(indices) for name, indices in selections.items()}
        columns = [c for c in SUMMARY_COLUMNS if any(c in row for row in rows.values())]
        return pd.DataFrame.from_dict(rows, orient="index")[columns]


def diagnose(
    embeddings: np.ndarray | torch.Tensor,
    indices: Sequence[int] | np.ndarray,
    labels: np.ndarray | torch.Tensor | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Diagnostics of one selection (see :class:`SelectionDiagnostics` for the options)."""
    return SelectionDiagnostics(embeddings, labels, **options).evaluate(indices)


def describe(diagnostics: Mapping[str, Any], class_names: Sequence[str] | None = None) -> list[str]:
    """Human-readable lines for a diagnostics dict (what ``samplesift select`` prints).

    With ``class_names`` the class histogram is spelled out after the entropy.
    """
    d = diagnostics
    lines = []
    if "coverage_radius" in d:
        lines += [
            f"coverage radius {d['coverage_radius']:.4g} (largest distance from a sample to its nearest selected one); "
            f"mean nearest-selected distance {d['mean_nearest_distance']:.4g}",
            f"facility location {d['facility_location']:.3f} (mean similarity of a sample to its nearest selected one, "
            "1 = all covered)",
            f"top-{100 * d['tail_fraction']:g}% tail of each dimension: "
            f"{100 * d['tail_dims_covered']:.0f}% of dimensions hold a selected sample; "
            f"mean share selected {100 * d['tail_share_mean']:.1f}% "
            f"(random: {100 * d['tail_share_random']:.1f}%)",
            f"outliers (top {100 * (1 - d['outlier_quantile']):g}% Mahalanobis distance): "
            f"{100 * d['outlier_share']:.1f}% of the selection (random: {100 * d['outlier_share_random']:.1f}%)",
        ]
    if "class_counts" in d:
        line = f"class entropy {d['class_entropy']:.3f} (1 = classes evenly represented)"
        if class_names is not None:
            counts = ", ".join(f"{name}: {count}" for name, count in zip(class_names, d["class_counts"], strict=False))
            line += f": {counts}"
        lines.append(line)
    return lines
