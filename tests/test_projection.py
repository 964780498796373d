"""Maps of embeddings: caching, stratified subsampling, point-in-polygon selection."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import projection as proj
from toolkit.artifacts import read_json
from toolkit.embedding import Embedding
from toolkit.errors import SampleSiftError
from toolkit.projection import (
    find_projection,
    load_or_compute_projection,
    points_in_box,
    points_in_polygon,
    projection_key,
    stratified_subsample,
)
from toolkit.selectors import class_quotas


def test_points_in_convex_polygon_match_the_half_plane_test() -> None:
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 9)[:-1]
    octagon = np.column_stack([np.cos(angles), np.sin(angles)]) * 2 + [0.5, -0.3]
    points = rng.uniform(-3, 3, size=(20_000, 2))
    # Inside a convex counter-clockwise polygon: on the left of every edge.
    edges = np.roll(octagon, -1, axis=0) - octagon
    rel = points[:, None, :] - octagon[None, :, :]
    expected = np.all(edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0] > 0, axis=1)
    inside = points_in_polygon(points, octagon)
    assert inside.sum() > 1_000
    np.testing.assert_array_equal(inside, expected)
    np.testing.assert_array_equal(points_in_polygon(points, octagon[::-1]), expected)  # orientation does not matter


def test_points_in_concave_polygon() -> None:
    # An L shape: the union of [0,2]x[0,1] and [0,1]x[1,2]; (1.5, 1.5) is in the notch.
    l_shape = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], dtype=float)
    points = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 0.5], [-0.1, 1.0]])
    np.testing.assert_array_equal(points_in_polygon(points, l_shape), [True, True, True, False, False, False])
    rng = np.random.default_rng(1)
    cloud = rng.uniform(-0.5, 2.5, size=(5_000, 2))
    x, y = cloud[:, 0], cloud[:, 1]
    expected = ((x > 0) & (x < 2) & (y > 0) & (y < 1)) | ((x > 0) & (x < 1) & (y > 0) & (y < 2))
    np.testing.assert_array_equal(points_in_polygon(cloud, l_shape), expected)


def test_degenerate_polygons_select_nothing_and_boxes_include_edges() -> None:
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert not points_in_polygon(points, np.array([[0, 0], [1, 1]])).any()
    np.testing.assert_array_equal(points_in_box(points, (1.0, 0.0), (0.0, 1.0)), [True, True, False])


def test_stratified_subsample_keeps_class_shares() -> None:
    labels = np.repeat(np.arange(4), [5_000, 3_000, 1_500, 500])
    picked = stratified_subsample(labels, 2_000, seed=3)
    assert len(picked) == 2_000 and len(np.unique(picked)) == 2_000
    assert np.all(np.diff(picked) > 0)
    counts = np.bincount(labels[picked], minlength=4)
    assert counts.tolist() == list(class_quotas(labels, 2_000).values()) == [1_000, 600, 300, 100]
    np.testing.assert_array_equal(picked, stratified_subsample(labels, 2_000, seed=3))
    assert not np.array_equal(picked, stratified_subsample(labels, 2_000, seed=4))
    np.testing.assert_array_equal(stratified_subsample(labels[:100], 2_000), np.arange(100))


def test_pca_map_is_cached_on_disk_by_fingerprint_params_and_seed(
    digits_embedding: Embedding, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    assert find_projection(digits_embedding, "pca", workspace=ws) is None
    first = load_or_compute_projection(digits_embedding, "pca", workspace=ws)
    assert first.coords.shape == (digits_embedding.vectors.shape[0], 2)
    assert first.path.is_file() and first.path.with_suffix(".json").is_file()
    # The leading component carries more variance than the second one.
    assert first.coords[:, 0].var() > first.coords[:, 1].var() > 0

    def must_not_compute(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("a cached map was computed again")

    monkeypatch.setattr(proj, "project", must_not_compute)
    again = load_or_compute_projection(digits_embedding, "pca", workspace=ws)
    np.testing.assert_array_equal(again.coords, first.coords)
    assert again.embedding_fingerprint == digits_embedding.fingerprint

    # Another embedding (same shape, other values) never reuses the map.
    other = Embedding(
        digits_embedding.path,
        {**digits_embedding.manifest, "embedding_fingerprint": "x" * 32},
        digits_embedding.vectors,
    )
    assert find_projection(other, "pca", workspace=ws) is None
    keys = {
        projection_key("f", "umap", 0),
        projection_key("f", "umap", 1),
        projection_key("f", "umap", 0, {"n_neighbors": 30}),
        projection_key("g", "umap", 0),
        projection_key("f", "pca", 0),
    }
    assert len(keys) == 5
    assert projection_key("f", "umap", 0) == projection_key("f", "umap", 0, {"n_neighbors": 15, "min_dist": 0.1})


def test_bad_projection_requests_are_refused() -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    with pytest.raises(SampleSiftError, match="unknown projection method"):
        proj.project(vectors, "tsne")
    with pytest.raises(SampleSiftError, match="has no parameter"):
        proj.project(vectors, "umap", params={"perplexity": 30})
    vectors[3, 2] = np.nan
    with pytest.raises(SampleSiftError, match="NaN"):
        proj.project(vectors, "pca")


def test_a_map_of_more_points_than_map_fit_rows_fits_a_seeded_sample_and_places_the_rest(
    tmp_path, digits_embedding: Embedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    everything = load_or_compute_projection(digits_embedding, "pca", workspace=ws)
    assert read_json(everything.path.with_suffix(".json"))["fit_rows"] is None is everything.fit_rows
    monkeypatch.setattr(proj, "MAP_FIT_ROWS", 300)  # as a million points would be against 50,000
    sampled = load_or_compute_projection(digits_embedding, "pca", workspace=ws)
    assert sampled.path != everything.path  # its own cache entry: not the map fitted on every row
    assert read_json(sampled.path.with_suffix(".json"))["fit_rows"] == 300 == sampled.fit_rows
    assert proj.find_projection(digits_embedding, "pca", workspace=ws).fit_rows == 300  # from the cache
    expected = proj.project(digits_embedding.vectors, "pca", fit_rows=300)
    np.testing.assert_array_equal(sampled.coords, expected)
    assert not np.array_equal(sampled.coords, everything.coords)
    # Every point is placed, and the sampled fit finds nearly the same leading axis.
    assert sampled.coords.shape == everything.coords.shape
    assert abs(np.corrcoef(sampled.coords[:, 0], everything.coords[:, 0])[0, 1]) > 0.8  # 300 of 1,437 rows
