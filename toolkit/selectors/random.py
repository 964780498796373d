"""Uniform random selection: the baseline every other rule must beat."""

from __future__ import annotations

import numpy as np
import torch

from toolkit.selectors.base import Selector


class RandomSelector(Selector):
    """Uniformly random samples without replacement.

    The score is a random priority in [0, 1): the selection is the k samples with the highest
    priority, so a smaller budget with the same seed is a prefix of a larger one.
    Source: the paper's baseline; DeepCore ``Uniform``.
    """

    name = "random"
    needs_embeddings = False
    score_meaning = "random priority in [0, 1); the k highest are selected"
    source = "the paper's baseline (Gonzalez et al., §V-B); DeepCore Uniform"

    def _select(self, x: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, None]:
        priority = np.random.default_rng(seed).random(x.shape[0])
        order = np.argsort(-priority, kind="stable")
        return order[:k], priority, None


class RandomBalancedSelector(RandomSelector):
    """Random selection inside each class with quotas proportional to class frequency.

    The same as ``random`` with ``balanced=True``; registered under its own name because it is
    the baseline that class-balanced selectors should be compared with.
    """

    name = "random-balanced"
    always_balanced = True
