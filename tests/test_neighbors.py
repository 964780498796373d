"""The k-NN search behind facility location, uniqueness and TypiClust: exact, and the inverted file above a size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.selectors import get_selector
from toolkit.selectors import neighbors as neighbor_search
from toolkit.selectors.distances import knn
from toolkit.selectors.lowbudget import approximate_delta_ball_graph, delta_ball_graph
from toolkit.selectors.neighbors import ivf_knn, measured_range_recall, measured_recall, nearest_neighbors


def blobs(n_per: int, centers: int, dim: int = 8, spread: float = 0.2, seed: int = 0) -> torch.Tensor:
    """Tight, far-apart blobs: every row's nearest neighbours are in its own blob, whatever cells k-means draws."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(0, 3, (centers, dim))  # small norms: distances well above float32 rounding, no ties
    rows = np.repeat(middle, n_per, axis=0) + rng.normal(0, spread, (centers * n_per, dim))
    return torch.from_numpy(rows).float()


def test_small_inputs_are_searched_exactly() -> None:
    x = blobs(30, 4)
    squared, index, search = nearest_neighbors(x, 5, exclude_self=True)
    exact_squared, exact_index = knn(x, 5, exclude_self=True)
    assert search == {"search": "exact"}
    assert torch.equal(index, exact_index) and torch.equal(squared, exact_squared)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_probing_every_cell_is_the_exact_search(exclude_self: bool) -> None:
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(600, 6))).float()
    squared, index = ivf_knn(x, 7, cells=25, probes=25, exclude_self=exclude_self)
    exact_squared, _ = knn(x, 7, exclude_self=exclude_self)
    torch.testing.assert_close(squared, exact_squared, rtol=1e-4, atol=1e-4)
    if exclude_self:
        assert not (index == torch.arange(len(x))[:, None]).any()
    else:
        assert torch.equal(index[:, 0], torch.arange(len(x)))  # every row is its own nearest


def test_the_inverted_file_finds_the_neighbours_of_separated_blobs() -> None:
    x = blobs(40, 25)  # 1,000 rows: 32 cells, 8 probes; each blob's 40 rows in one or a few cells
    squared, index, search = nearest_neighbors(x, 10, exclude_self=True, exact_max_rows=100)
    assert search["search"] == "ivf" and search["cells"] == 32 and search["probes"] == 8
    assert search["recall"] == 1.0 and search["recall_rows"] == 1000
    blob = torch.arange(len(x)) // 40
    assert torch.equal(blob[index], blob[:, None].expand_as(index))  # all in the row's own blob
    assert (squared[:, 1:] >= squared[:, :-1]).all()  # ascending


def test_a_cell_with_fewer_rows_than_k_probes_on_until_it_has_enough() -> None:
    x = blobs(3, 20)  # cells of ~3 rows, k = 12 needs at least 4 cells' worth
    squared, index = ivf_knn(x, 12, cells=20, probes=1, exclude_self=True)
    assert torch.isfinite(squared).all() and (index >= 0).all()
    assert all(len(set(row)) == 12 for row in index.tolist())


def test_recall_counts_the_exact_neighbours_listed() -> None:
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(300, 5))).float()
    _, exact = knn(x, 4, exclude_self=True)
    assert measured_recall(x, exact, exclude_self=True) == (1.0, 300)
    shifted = exact.roll(1, dims=0)  # another row's neighbours: almost none shared
    recall, _ = measured_recall(x, shifted, exclude_self=True)
    assert recall < 0.2


def test_facility_location_records_its_search(monkeypatch: pytest.MonkeyPatch) -> None:
    x = blobs(40, 25).numpy()
    exact = get_selector("facility-location").select(x, 25, seed=0)
    assert exact.info["neighbor_search"] == {"search": "exact"}
    monkeypatch.setattr(neighbor_search, "EXACT_MAX_ROWS", 100)
    approximate = get_selector("facility-location").select(x, 25, seed=0)
    assert approximate.info["neighbor_search"]["search"] == "ivf"
    assert approximate.info["neighbor_search"]["recall"] == 1.0
    assert sorted(np.asarray(approximate.indices) // 40) == list(range(25))  # one per blob, as exact


def test_the_approximate_delta_ball_graph_of_separated_blobs_is_the_exact_one() -> None:
    z = torch.nn.functional.normalize(blobs(40, 25), dim=1)
    graph, search = approximate_delta_ball_graph(z, 0.3)
    assert search["search"] == "ivf" and search["recall"] == 1.0
    exact = delta_ball_graph(z, 0.3)
    assert (graph != exact).nnz == 0
    found_half = np.diff(exact.indptr) // 2  # as if half of every ball had been missed
    assert measured_range_recall(z, 0.3, found_half)[0] == pytest.approx(0.5, abs=0.02)


def test_uniqueness_above_the_exact_limit_records_its_search(monkeypatch: pytest.MonkeyPatch) -> None:
    x = blobs(40, 25).numpy()
    exact = get_selector("uniqueness").select(x, 25, seed=0)
    monkeypatch.setattr(neighbor_search, "EXACT_MAX_ROWS", 100)
    approximate = get_selector("uniqueness").select(x, 25, seed=0)
    assert exact.info["neighbor_search"] == {"search": "exact"}
    assert (
        approximate.info["neighbor_search"]["search"] == "ivf" and approximate.info["neighbor_search"]["recall"] == 1.0
    )
    np.testing.assert_array_equal(approximate.indices, exact.indices)


def test_probcover_above_the_exact_limit_records_its_search(monkeypatch: pytest.MonkeyPatch) -> None:
    x = blobs(40, 25).numpy()
    exact = get_selector("probcover", delta=0.3).select(x, 25, seed=0)
    monkeypatch.setattr(neighbor_search, "EXACT_MAX_ROWS", 100)
    approximate = get_selector("probcover", delta=0.3).select(x, 25, seed=0)
    assert exact.info["neighbor_search"] == {"search": "exact"}
    assert approximate.info["neighbor_search"]["recall"] == 1.0
    np.testing.assert_array_equal(approximate.indices, exact.indices)
