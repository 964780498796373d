"""Notebook figures of toolkit.viz that the dashboard does not draw (it shows images with st.image)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data import ImageDataset
from toolkit.errors import SampleSiftError
from toolkit.viz.embedding import image_grid, image_grid_items, selection_overlay_map


def test_image_grid_draws_every_image_with_its_caption_in_grid_order(digits: ImageDataset) -> None:
    indices = np.arange(100, 120)
    scores = np.linspace(0.0, 1.0, len(indices))
    images, captions, shown = image_grid_items(digits, indices, scores=scores, limit=11, size=32)
    fig = image_grid(images, captions, columns=4, title="grid")
    assert len(fig.data) == 11 and all(trace.type == "image" for trace in fig.data)
    np.testing.assert_array_equal(shown, indices[::-1][:11])  # highest score first
    for trace, index in zip(fig.data, shown, strict=True):  # grey digits come out as RGB, pixels kept
        upscaled = np.kron(digits.train_images[index][..., 0], np.ones((4, 4), np.uint8))
        assert trace.z.shape == (32, 32, 3)
        for channel in range(3):
            np.testing.assert_array_equal(trace.z[..., channel], upscaled)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [c.replace(" · ", "<br>") for c in captions]
    assert titles[0].startswith(f"#{shown[0]}<br>{digits.class_names[digits.train_labels[shown[0]]]}<br>score 1")
    # 11 images in 4 columns: 3 rows; the 9th image starts the third row (subplot 9 -> axis x9/y9)
    assert fig.data[8].xaxis == "x9" and fig.layout.yaxis9.domain[1] < fig.layout.yaxis5.domain[0]


def test_image_grid_refuses_mismatched_captions() -> None:
    with pytest.raises(SampleSiftError, match="got 2 images but 1 captions"):
        image_grid([np.zeros((8, 8), np.uint8)] * 2, ["one"])


def test_overlay_shows_the_chosen_selections_and_keeps_the_others_in_the_legend() -> None:
    coords = np.random.default_rng(0).normal(size=(50, 2))
    picks = {"random": np.arange(5), "topk": np.arange(10, 20), "k-center": np.array([3, 30, 40])}
    fig = selection_overlay_map(coords, np.arange(50), picks, visible=["topk"])
    assert [t.name for t in fig.data] == ["all samples", "random (5)", "topk (10)", "k-center (3)"]
    assert [t.visible for t in fig.data[1:]] == ["legendonly", True, "legendonly"]
    np.testing.assert_array_equal(fig.data[3].x, coords[[3, 30, 40], 0])  # hidden ones still hold their points
    assert all(t.visible is None for t in selection_overlay_map(coords, np.arange(50), picks).data[:1])
    assert [t.visible for t in selection_overlay_map(coords, np.arange(50), picks).data[1:]] == [True] * 3
    with pytest.raises(SampleSiftError, match="no selection named nope"):
        selection_overlay_map(coords, np.arange(50), picks, visible=["nope"])
