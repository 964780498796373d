"""Filters over the training samples: by class, by saved-selection membership, by a score range.

"Filter before you look": narrow a data set to, say, the cats that the top-k selection took
and the random one did not, with a selector's score between two values, then look at them
on the map or save them as a selection (:func:`toolkit.selection.selection_from_indices`,
with :meth:`SampleFilter.describe` as the record of how they were chosen).

Example::

    keep = SampleFilter(classes=(3,), within=("topk-k100",), outside=("random-k100",))
    indices = keep.indices(dataset, workspace="workspace")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.data import ImageDataset
from toolkit.errors import require
from toolkit.selection import load_selection
from toolkit.workspace import Workspace


@dataclass(frozen=True)
class SampleFilter:
    """Which training samples to keep; every part given must hold (an empty part keeps all).

    Attributes:
        classes: class indices to keep.
        within: names of saved selections a sample must belong to (every one of them).
        outside: names of saved selections a sample must not belong to (any of them).
        score: what the score range applies to (a name, for the record); the values are
            passed to :meth:`mask`.
        low: keep scores at least this (``None``: no lower bound).
        high: keep scores at most this (``None``: no upper bound).
    """

    classes: tuple[int, ...] = ()
    within: tuple[str, ...] = ()
    outside: tuple[str, ...] = ()
    score: str | None = None
    low: float | None = None
    high: float | None = None

    @property
    def active(self) -> bool:
        """Whether the filter drops anything at all (some part is given)."""
        return bool(self.classes or self.within or self.outside) or self.has_range

    @property
    def has_range(self) -> bool:
        return self.low is not None or self.high is not None

    def mask(
        self,
        dataset: ImageDataset,
        *,
        scores: np.ndarray | None = None,
        workspace: Workspace | str | Path | None = None,
    ) -> np.ndarray:
        """A boolean mask over ``dataset``'s training samples: ``True`` for the ones kept.

        ``scores`` (one per training sample) is needed when a score range is given; the
        selections are looked up by name among ``dataset``'s saved ones in ``workspace``.
        """
        keep = np.ones(dataset.num_train, dtype=bool)
        if self.classes:
            bad = sorted(c for c in self.classes if not 0 <= c < dataset.num_classes)
            require(not bad, f"class indices must be in [0, {dataset.num_classes}), got {bad}")
            keep &= np.isin(dataset.train_labels, self.classes)
        for name in self.within:
            member = np.zeros(dataset.num_train, dtype=bool)
            member[load_selection(name, dataset, workspace=workspace).indices] = True
            keep &= member
        for name in self.outside:
            keep[load_selection(name, dataset, workspace=workspace).indices] = False
        if self.has_range:
            require(scores is not None, f"the score range needs the scores of {self.score or 'the samples'}")
            assert scores is not None
            values = np.asarray(scores, dtype=np.float64)
            require(
                values.shape == (dataset.num_train,),
                f"the scores must give one value per training sample ({dataset.num_train}), got {values.shape}",
            )
            if self.low is not None:
                keep &= values >= self.low
            if self.high is not None:
                keep &= values <= self.high
        return keep

    def indices(
        self,
        dataset: ImageDataset,
        *,
        scores: np.ndarray | None = None,
        workspace: Workspace | str | Path | None = None,
    ) -> np.ndarray:
        """The kept samples' indices, ascending (see :meth:`mask`)."""
        return np.flatnonzero(self.mask(dataset, scores=scores, workspace=workspace)).astype(np.int64)

    def describe(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """The filter as a JSON-ready dict (recorded in a saved selection's parameters)."""
        record: dict[str, Any] = {}
        if self.classes:
            record["classes"] = [class_names[c] for c in self.classes] if class_names else list(self.classes)
        if self.within:
            record["within"] = list(self.within)
        if self.outside:
            record["outside"] = list(self.outside)
        if self.has_range:
            record["score"] = {"name": self.score, "low": self.low, "high": self.high}
        return record
