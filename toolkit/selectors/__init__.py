"""Selectors by name: ``get_selector("topk-activation").select(embeddings, k)``.

The registry names are stable: the CLI, the app and sweeps refer to selectors by them.
Families and their modules:

* baselines: ``random``, ``random-balanced`` (:mod:`.random`);
* the paper's Eq. 4 and its next steps: ``topk-activation`` (:mod:`.activation`),
  ``topk-activation-pca``, ``topk-pairs``, ``topk-penalized``, ``stratified-dimension``
  (:mod:`.dimensions`);
* Eq. 3 and geometry: ``k-center``, ``max-sum``, ``herding`` (:mod:`.geometry`);
* clustering: ``k-means``, ``prototype-easy``, ``prototype-hard`` (:mod:`.cluster`);
* submodular: ``facility-location``, ``feature-based`` (:mod:`.submodular`);
* density: ``uniqueness``, ``moderate`` (:mod:`.density`);
* low budget: ``typiclust``, ``probcover``, and ``ccs``, which ranks by a per-sample
  training-dynamics score column (``sample_scores``) instead of the embedding (:mod:`.lowbudget`).
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import SampleSiftError
from toolkit.selectors.activation import TopKActivation
from toolkit.selectors.base import SelectionResult, Selector, class_quotas
from toolkit.selectors.cluster import KMeansRepresentatives, PrototypeEasy, PrototypeHard
from toolkit.selectors.density import Moderate, Uniqueness
from toolkit.selectors.dimensions import StratifiedDimension, TopKActivationPCA, TopKPairs, TopKPenalized
from toolkit.selectors.geometry import Herding, KCenterGreedy, MaxSumDispersion
from toolkit.selectors.lowbudget import CoverageCentricSelection, ProbCover, TypiClust
from toolkit.selectors.random import RandomBalancedSelector, RandomSelector
from toolkit.selectors.submodular import FacilityLocation, FeatureBased

SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls
    for cls in (
        RandomSelector,
        RandomBalancedSelector,
        TopKActivation,
        TopKActivationPCA,
        TopKPairs,
        TopKPenalized,
        StratifiedDimension,
        Moderate,
        KCenterGreedy,
        MaxSumDispersion,
        KMeansRepresentatives,
        FacilityLocation,
        FeatureBased,
        Herding,
        PrototypeEasy,
        PrototypeHard,
        Uniqueness,
        TypiClust,
        ProbCover,
        CoverageCentricSelection,
    )
}


def available() -> list[str]:
    """Registered selector names."""
    return list(SELECTORS)


def get_selector(name: str, **params: Any) -> Selector:
    """A selector instance by registry name, with optional parameters."""
    try:
        cls = SELECTORS[name]
    except KeyError:
        raise SampleSiftError(f"unknown selection method {name!r}; choose one of: {', '.join(SELECTORS)}") from None
    return cls(**params)


__all__ = ["SELECTORS", "SelectionResult", "Selector", "available", "class_quotas", "get_selector"]
