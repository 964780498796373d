"""The selector interface: embeddings + budget (+ labels, seed) -> a selection.

Every selector is a small object with a uniform interface, in the spirit of scikit-learn::

    selector = get_selector("topk-activation")
    result = selector.select(embeddings, k=4320, labels=labels, seed=0, balanced=False)
    result.indices      # exactly k unique sample indices, in pick order
    result.scores       # one score per sample (higher = preferred by the rule)
    result.picked_by    # per selected sample: the dimension/cluster/rule that picked it

Embeddings may be a NumPy array or a torch tensor on any device; selectors compute in torch
on the embeddings' device, so CUDA embeddings are selected on the GPU. ``balanced=True``
gives every class a quota proportional to its frequency (largest remainders) and runs the
selector inside each class.

Some rules rank samples by per-sample scores rather than (only) by the embedding, such as
training dynamics (EL2N, AUM, forgetting counts) of a proxy model. They set
``needs_sample_scores`` and read named columns passed as ``sample_scores={"el2n": ...}``;
the base class validates every column and, in balanced mode, slices them by class like the
embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from toolkit.device import exact_float32
from toolkit.errors import SampleSiftError, require


@dataclass
class SelectionResult:
    """What a selector returns.

    Attributes:
        indices: (k,) int64, unique, in the order the rule picked them.
        scores: (N,) float64, the rule's per-sample score (see the selector's
            ``score_meaning``); higher means more preferred.
        picked_by: (k,) int64, the dimension, cluster or rule that picked each selected
            sample, or -1 where that does not apply.
        method: registry name of the selector.
        params: the selector's parameters.
        seed: the seed used.
        balanced: whether per-class quotas were applied.
        info: free-form facts about the run (quotas, iterations, objective values, ...).
    """

    indices: np.ndarray
    scores: np.ndarray
    picked_by: np.ndarray
    method: str
    params: dict[str, Any]
    seed: int
    balanced: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.indices)

    def mask(self, n: int | None = None) -> np.ndarray:
        """Boolean mask over all N samples, True where selected."""
        out = np.zeros(n if n is not None else len(self.scores), dtype=bool)
        out[self.indices] = True
        return out


def as_tensor(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate embeddings (N x d, finite) and return them as a float32 torch tensor."""
    if isinstance(embeddings, torch.Tensor):
        tensor = embeddings.detach()
    else:
        array = np.asarray(embeddings)
        require(
            np.issubdtype(array.dtype, np.number),
            f"embeddings must be numeric, got dtype {array.dtype}",
        )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    require(tensor.ndim == 2, f"embeddings must be a 2-d N x d array, got shape {tuple(tensor.shape)}")
    require(tensor.shape[0] >= 1, "embeddings are empty (N = 0); there is nothing to select from")
    tensor = tensor.to(torch.float32)
    if tensor.numel() and not bool(torch.isfinite(tensor.sum(dim=1)).all()):  # cheap screen, then count
        bad = int((~torch.isfinite(tensor)).any(dim=1).sum())
        require(
            bad == 0,
            f"embeddings hold NaN or infinite values in {bad} row(s); recompute them (samplesift embed) "
            "or drop those samples before selecting",
        )
    return tensor


#: Largest magnitude selectors compute with; squared distances of 1e12-sized values summed
#: over hundreds of dimensions stay far below float32's 3.4e38.
MAX_MAGNITUDE = 2.0**40


def rescaled(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Scale huge embeddings down by a power of two (exact) so distances cannot overflow.

    Every rule here picks the same samples from ``c * x`` as from ``x`` for any c > 0, so
    only the units of distance-like scores change; the factor is returned (1.0 if none).
    """
    largest = float(x.abs().max()) if x.numel() else 0.0
    if largest <= MAX_MAGNITUDE:
        return x, 1.0
    factor = 2.0 ** -math.ceil(math.log2(largest / MAX_MAGNITUDE))
    return x * factor, factor


def check_budget(k: int, n: int) -> int:
    """``k`` must be an integer in [1, n]."""
    require(
        isinstance(k, (int, np.integer)) and not isinstance(k, bool),
        f"the budget must be a whole number, got {k!r}",
    )
    k = int(k)
    require(1 <= k <= n, f"the budget K = {k} is out of range: choose 1 <= K <= {n} (the number of samples)")
    return k


def check_seed(seed: int) -> int:
    """``seed`` must be a whole number in [0, 2**63) (NumPy refuses negative seeds)."""
    require(
        isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed < 2**63,
        f"the seed must be a whole number in [0, 2**63), got {seed!r}",
    )
    return int(seed)


def check_labels(labels: np.ndarray | torch.Tensor | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    require(array.ndim == 1 and len(array) == n, f"labels must be one per sample ({n}), got shape {array.shape}")
    require(np.issubdtype(array.dtype, np.integer), f"labels must be integers, got dtype {array.dtype}")
    require(len(array) == 0 or array.min() >= 0, "labels must be non-negative class indices")
    return array.astype(np.int64)


SampleScores = Mapping[str, np.ndarray | torch.Tensor]
"""Named per-sample score columns (e.g. ``{"el2n": ..., "aum": ...}``), each of length N."""


def check_sample_scores(sample_scores: SampleScores | None, n: int) -> dict[str, np.ndarray]:
    """Validate named per-sample score columns and return them as float64 NumPy arrays.

    Every column must be numeric (not boolean), one value per sample and finite; the message
    names the column and the problem. ``None`` gives no columns.
    """
    if sample_scores is None:
        return {}
    require(
        isinstance(sample_scores, Mapping),
        f"sample scores must be a mapping of column name to one value per sample, got {type(sample_scores).__name__}",
    )
    columns: dict[str, np.ndarray] = {}
    for name, column in sample_scores.items():
        require(isinstance(name, str) and name != "", f"sample score columns need non-empty string names, got {name!r}")
        array = column.detach().cpu().numpy() if isinstance(column, torch.Tensor) else np.asarray(column)
        require(
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating),
            f"sample score column {name!r} must be numeric, got dtype {array.dtype}",
        )
        require(
            array.ndim == 1 and len(array) == n,
            f"sample score column {name!r} must hold one value per sample ({n}), got shape {array.shape}",
        )
        values = array.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        require(
            bad == 0,
            f"sample score column {name!r} holds NaN or infinite values for {bad} sample(s); "
            "recompute the scores or drop those samples before selecting",
        )
        columns[name] = values
    return columns


def class_quotas(labels: np.ndarray, k: int) -> dict[int, int]:
    """Per-class budgets proportional to class frequency, rounded by largest remainders.

    The quotas sum to exactly ``k``; ties in the remainders go to the lower class index.
    """
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (k / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    short = k - int(quotas.sum())
    order = np.lexsort((classes, -(exact - quotas)))  # largest remainder first, then class index
    quotas[order[:short]] += 1
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def derive_seed(seed: int, *salt: int) -> int:
    """A seed for a sub-problem (a class in balanced mode) derived from the user's seed."""
    return int(np.random.SeedSequence([int(seed), *salt]).generate_state(1)[0])


class Selector:
    """Base class: subclasses implement :meth:`_select` on one pool of samples.

    Class attributes:
        name: the registry name.
        needs_embeddings: False for rules that only need the sample count (random).
        needs_sample_scores: True for rules that read per-sample score columns
            (:meth:`score_columns` names them); such a rule implements
            :meth:`_select_with_scores` instead of :meth:`_select`.
        always_balanced: True for rules that are class-balanced by definition.
        score_meaning: what :attr:`SelectionResult.scores` means for this rule.
        source: where the rule comes from (paper, library, article).
    """

    name: ClassVar[str] = ""
    needs_embeddings: ClassVar[bool] = True
    needs_sample_scores: ClassVar[bool] = False
    always_balanced: ClassVar[bool] = False
    score_meaning: ClassVar[str] = ""
    source: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.default_params()))
        if unknown:
            raise SampleSiftError(
                f"selector {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"it takes {', '.join(self.default_params()) or 'none'}"
            )
        self.params = {**self.default_params(), **params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    def score_columns(self) -> tuple[str, ...]:
        """Names of the sample-score columns this rule reads with its current parameters."""
        return ()

    def select(
        self,
        embeddings: np.ndarray | torch.Tensor,
        k: int,
        *,
        labels: np.ndarray | torch.Tensor | None = None,
        seed: int = 0,
        balanced: bool = False,
        sample_scores: SampleScores | None = None,
    ) -> SelectionResult:
        """Pick exactly ``k`` unique samples.

        Args:
            embeddings: N x d array or tensor (N x 0 is fine for rules that need no embedding).
            k: the budget, 1 <= k <= N.
            labels: class index per sample; required with ``balanced=True``.
            seed: seeds every random choice the rule makes.
            balanced: per-class quotas proportional to class frequency.
            sample_scores: named per-sample score columns (length N, finite), validated
                whenever given; only rules with ``needs_sample_scores`` read them.
        """
        x, input_scale = rescaled(as_tensor(embeddings))
        n = int(x.shape[0])
        k = check_budget(k, n)
        y = check_labels(labels, n)
        seed = check_seed(seed)
        require(
            x.shape[1] >= 1 or not self.needs_embeddings,
            f"{self.name} selects by embedding, but the embeddings have no dimensions (N x 0); "
            "train an autoencoder first (samplesift embed)",
        )
        columns = check_sample_scores(sample_scores, n)
        missing = [name for name in self.score_columns() if name not in columns] if self.needs_sample_scores else []
        if missing:
            present = f" (it has {', '.join(map(repr, columns))})" if columns else ""
            raise SampleSiftError(
                f"{self.name} ranks samples by the training-dynamics score {missing[0]!r}, which this embedding "
                f"does not have{present}; make a proxy embedding (samplesift embed --encoder proxy) and "
                "select with --embedding <its name>"
            )
        info: dict[str, Any] = {} if input_scale == 1.0 else {"input_scale": input_scale}
        balanced = balanced or self.always_balanced
        if balanced:
            require(y is not None, f"balanced selection needs labels; {self.name} got none")
            assert y is not None
            quotas = class_quotas(y, k)
            scores = np.zeros(n, dtype=np.float64)
            picked_parts, by_parts = [], []
            class_info: dict[str, Any] = {}
            for cls, quota in quotas.items():
                members = np.flatnonzero(y == cls)
                local_idx, local_scores, local_by, local_info = self._run(
                    x, members, quota, derive_seed(seed, cls), columns
                )
                scores[members] = local_scores
                if local_info:
                    class_info[str(cls)] = local_info
                if quota:
                    picked_parts.append(members[local_idx])
                    by_parts.append(local_by)
            indices = np.concatenate(picked_parts) if picked_parts else np.zeros(0, np.int64)
            picked_by = np.concatenate(by_parts) if by_parts else np.zeros(0, np.int64)
            info["quotas"] = {str(c): q for c, q in quotas.items()}
            if class_info:
                info["classes"] = class_info
        else:
            indices, scores, picked_by, info = self._run(x, np.arange(n), k, seed, columns)
        indices = np.asarray(indices, dtype=np.int64)
        if len(np.unique(indices)) != k:  # a broken rule must never pass silently
            raise RuntimeError(f"selector {self.name} returned {len(np.unique(indices))} unique of {k} indices")
        return SelectionResult(
            indices=indices,
            scores=np.asarray(scores, dtype=np.float64),
            picked_by=np.asarray(picked_by, dtype=np.int64),
            method=self.name,
            params=dict(self.params),
            seed=int(seed),
            balanced=bool(balanced),
            info=info,
        )

    def _run(
        self, x: torch.Tensor, members: np.ndarray, k: int, seed: int, columns: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Run the rule on the rows ``members`` of ``x`` (and of ``columns``); indices are positions in ``members``."""
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(len(members)), np.zeros(0, np.int64), {}
        whole = len(members) == x.shape[0]
        pool = x if whole else x[torch.as_tensor(members, device=x.device)]
        with exact_float32():
            if self.needs_sample_scores:
                pool_columns = columns if whole else {name: values[members] for name, values in columns.items()}
                indices, scores, picked_by, *rest = self._select_with_scores(pool, k, seed, pool_columns)
            else:
                indices, scores, picked_by, *rest = self._select(pool, k, seed)
        return (
            _to_numpy(indices).astype(np.int64),
            _to_numpy(scores).astype(np.float64),
            _to_numpy(picked_by).astype(np.int64) if picked_by is not None else np.full(k, -1, np.int64),
            dict(rest[0]) if rest else {},
        )

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[Any, ...]:
        """Return (indices into x, per-row scores, picked_by or None[, info]). 1 <= k <= len(x).

        The optional fourth element is a JSON-ready dict of facts about the run (objective
        value, iterations, ...); it lands in :attr:`SelectionResult.info` (per class under
        ``info["classes"]`` in balanced mode).
        """
        raise NotImplementedError

    def _select_with_scores(
        self, x: torch.Tensor, k: int, seed: int, sample_scores: dict[str, np.ndarray]
    ) -> tuple[Any, ...]:
        """:meth:`_select` for rules with ``needs_sample_scores``: the same contract, plus the pool's columns.

        ``sample_scores`` holds every validated column (float64), its rows aligned with ``x``
        (in balanced mode: the class's rows); the columns of :meth:`score_columns` are present.
        """
        raise NotImplementedError


def _to_numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
