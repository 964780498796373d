"""The paper's selector, the random baselines and selection manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import ImageDataset
from toolkit.embedding import Embedding
from toolkit.errors import SampleSiftError
from toolkit.selection import load_selection, make_selection, resolve_budget
from toolkit.selectors import class_quotas, get_selector

# Nine samples, three dimensions. Sample 0 tops dimensions 0 and 1; no ties within a column.
HAND_MADE = np.array(
    [
        [9, 9, 0],
        [8, 0, 0],
        [0, 8, 0],
        [0, 7, 0],
        [0, 0, 9],
        [0, 0, 8],
        [7, 0, 7],
        [6, 6, 0],
        [1, 1, 1],
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize(
    ("k", "indices", "picked_by"),
    [
        # Eq. 4 with k/n = 2: dim 0 -> {0, 1}, dim 1 -> {0, 2}, dim 2 -> {4, 5}. Sample 0 counts
        # once, for dim 0, so dim 1 takes its next best, 3, to fill its quota of two.
        (6, [0, 1, 2, 4, 5, 3], [0, 0, 1, 2, 2, 1]),
        # one more: the remainder goes to dim 0 (its next best is 6), then dim 1 fills up.
        (7, [0, 1, 2, 4, 5, 6, 3], [0, 0, 1, 2, 2, 0, 1]),
        # k < n: dims 0 and 1 get one each; dim 1's best (0) is taken, so it takes 2.
        (2, [0, 2], [0, 1]),
        (3, [0, 4, 2], [0, 2, 1]),
    ],
)
def test_topk_activation_picks_exactly_the_expected_samples(k: int, indices: list[int], picked_by: list[int]) -> None:
    result = get_selector("topk-activation").select(HAND_MADE, k)
    assert result.indices.tolist() == indices
    assert result.picked_by.tolist() == picked_by


def test_topk_activation_score_is_the_largest_dimension_zscore() -> None:
    result = get_selector("topk-activation").select(HAND_MADE, 3)
    z = (HAND_MADE - HAND_MADE.mean(0)) / HAND_MADE.std(0)
    np.testing.assert_allclose(result.scores, z.max(1), rtol=1e-5)


@pytest.mark.parametrize("method", ["random", "random-balanced", "topk-activation"])
def test_exactly_k_unique_indices_and_same_seed_same_selection(method: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 24)).astype(np.float32)
    labels = rng.integers(0, 5, size=500)
    selector = get_selector(method)
    for k in (1, 7, 24, 100, 499, 500):
        result = selector.select(x, k, labels=labels, seed=3)
        assert len(result.indices) == k and len(np.unique(result.indices)) == k
        assert result.indices.min() >= 0 and result.indices.max() < 500
        assert len(result.scores) == 500
        again = selector.select(torch.from_numpy(x), k, labels=labels, seed=3)
        assert np.array_equal(again.indices, result.indices)
    if method != "topk-activation":
        assert not np.array_equal(selector.select(x, 50, labels=labels, seed=4).indices, result.indices[:50])


def test_balanced_quotas_use_largest_remainders_and_are_exact() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert class_quotas(labels, 7) == {0: 4, 1: 2, 2: 1}  # 3.5, 2.1, 1.4 -> the .5 remainder wins
    assert class_quotas(labels, 100) == {0: 50, 1: 30, 2: 20}
    result = get_selector("topk-activation").select(
        np.random.default_rng(1).normal(size=(100, 6)), 7, labels=labels, balanced=True
    )
    assert np.bincount(labels[result.indices]).tolist() == [4, 2, 1]
    balanced_random = get_selector("random-balanced").select(np.zeros((100, 0)), 10, labels=labels, seed=0)
    assert np.bincount(labels[balanced_random.indices]).tolist() == [5, 3, 2]


def test_bad_selector_inputs_are_refused_clearly() -> None:
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(SampleSiftError, match="out of range"):
        get_selector("random").select(x, 0)
    with pytest.raises(SampleSiftError, match="out of range"):
        get_selector("random").select(x, 11)
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(SampleSiftError, match="NaN or infinite"):
        get_selector("topk-activation").select(bad, 2)
    with pytest.raises(SampleSiftError, match="unknown selection method"):
        get_selector("no-such-rule")
    with pytest.raises(SampleSiftError, match="needs labels"):
        get_selector("random-balanced").select(x, 2)


def test_resolve_budget() -> None:
    assert resolve_budget(50_000, fraction=0.0864) == 4320
    assert resolve_budget(100, size=100) == 100
    for size, fraction in ((0, None), (101, None), (None, 0.0), (None, 1.5), (3, 0.1)):
        with pytest.raises(SampleSiftError):
            resolve_budget(100, size, fraction)


def test_selection_manifest_records_what_is_needed_to_reproduce_it(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path
) -> None:
    selection = make_selection(
        digits, "topk-activation", size=216, seed=0, workspace=session_workspace, embedding=digits_embedding.name
    )
    m = selection.manifest
    assert (
        selection.path == session_workspace / "datasets" / digits.key / "selections" / "topk-activation-k216-seed0.json"
    )
    assert m["method"] == "topk-activation" and m["size"] == 216 and m["seed"] == 0
    assert m["dataset"]["fingerprint"] == digits.fingerprint
    assert m["embedding"]["fingerprint"] == digits_embedding.fingerprint
    assert sum(m["class_counts"].values()) == 216
    assert sorted(set(m["picked_by"])) == list(range(216))  # one sample per dimension
    assert {"torch", "numpy", "toolkit"} <= set(m["versions"])
    reloaded = load_selection("topk-activation-k216-seed0", digits, workspace=session_workspace)
    assert np.array_equal(reloaded.indices, selection.indices)
    again = make_selection(digits, "topk-activation", size=216, seed=0, workspace=session_workspace, save=False)
    assert np.array_equal(again.indices, selection.indices)


def test_a_selection_is_refused_on_another_dataset_and_when_edited(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path, tmp_path: Path
) -> None:
    selection = make_selection(digits, "random", size=10, seed=1, workspace=session_workspace)
    with pytest.raises(SampleSiftError, match="was made on data set"):
        load_selection(selection.path, digits.capped(50), workspace=session_workspace)
    edited = json.loads(selection.path.read_text())
    edited["indices"][0] = (edited["indices"][0] + 1) % digits.num_train
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(SampleSiftError, match="was edited"):
        load_selection(tmp_path / "edited.json", digits)
    with pytest.raises(SampleSiftError, match="no selection named"):
        load_selection("never-made", digits, workspace=session_workspace)
