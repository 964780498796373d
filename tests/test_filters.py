"""toolkit.filters: restricting the training samples by class, selection membership and a score range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.data import ImageDataset
from toolkit.errors import SampleSiftError
from toolkit.filters import SampleFilter
from toolkit.selection import selection_from_indices


@pytest.fixture
def two_selections(digits: ImageDataset, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = np.sort(rng.choice(digits.num_train, 400, replace=False))
    b = np.sort(rng.choice(digits.num_train, 400, replace=False))
    selection_from_indices(digits, a, name="a", workspace=tmp_path)
    selection_from_indices(digits, b, name="b", workspace=tmp_path)
    return a, b


def test_every_part_of_a_filter_must_hold(
    digits: ImageDataset, tmp_path: Path, two_selections: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = two_selections
    scores = np.random.default_rng(1).random(digits.num_train)
    keep = SampleFilter(classes=(3, 5), within=("a",), outside=("b",), score="noise", low=0.25, high=0.9)
    in_a, in_b = np.isin(np.arange(digits.num_train), a), np.isin(np.arange(digits.num_train), b)
    expected = np.isin(digits.train_labels, [3, 5]) & in_a & ~in_b & (scores >= 0.25) & (scores <= 0.9)
    assert 0 < expected.sum() < 100
    np.testing.assert_array_equal(keep.mask(digits, scores=scores, workspace=tmp_path), expected)
    np.testing.assert_array_equal(keep.indices(digits, scores=scores, workspace=tmp_path), np.flatnonzero(expected))
    assert keep.active and keep.describe(digits.class_names) == {
        "classes": ["3", "5"],
        "within": ["a"],
        "outside": ["b"],
        "score": {"name": "noise", "low": 0.25, "high": 0.9},
    }
    # One bound alone; an empty filter keeps everything.
    np.testing.assert_array_equal(
        SampleFilter(score="noise", high=0.5).mask(digits, scores=scores, workspace=tmp_path), scores <= 0.5
    )
    assert not SampleFilter().active and SampleFilter().mask(digits, workspace=tmp_path).all()


def test_a_bad_filter_says_what_is_wrong(
    digits: ImageDataset, tmp_path: Path, two_selections: tuple[np.ndarray, np.ndarray]
) -> None:
    with pytest.raises(SampleSiftError, match=r"class indices must be in \[0, 10\), got \[10\]"):
        SampleFilter(classes=(10,)).mask(digits, workspace=tmp_path)
    with pytest.raises(SampleSiftError, match="no selection named 'c'"):
        SampleFilter(outside=("c",)).mask(digits, workspace=tmp_path)
    with pytest.raises(SampleSiftError, match="the score range needs the scores of noise"):
        SampleFilter(score="noise", low=0.1).mask(digits, workspace=tmp_path)
    with pytest.raises(SampleSiftError, match="one value per training sample"):
        SampleFilter(low=0.1).mask(digits, scores=np.zeros(3), workspace=tmp_path)
