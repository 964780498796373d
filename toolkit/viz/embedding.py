"""Plotly figures of embeddings and selections, for the app and for notebooks.

All functions take plain arrays (coordinates from :mod:`toolkit.projection`, embedding
vectors, labels, selection indices) and return ``plotly.graph_objects.Figure`` objects or
image lists; they compute nothing the toolkit does not already provide.

The embedding map is one ``Scattergl`` trace whose ``customdata`` holds each point's sample
index, so a selection event maps back to samples without any per-trace bookkeeping;
:func:`indices_from_plotly_selection` turns the event (lasso polygon, box or clicked points)
into sample indices over *all* samples, plotted or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from toolkit.data import ImageDataset
from toolkit.errors import require
from toolkit.projection import points_in_box, points_in_polygon
from toolkit.viz.images import embedding_tile, to_rgb, upscale

if TYPE_CHECKING:
    from toolkit.encoders.autoencoder import Reconstruction

#: Colours of categories (classes, selections), cycled when there are more.
PALETTE: tuple[str, ...] = tuple(qualitative.D3) + tuple(qualitative.Alphabet)
UNSELECTED_GREY = "#c8c8c8"


def category_colors(count: int) -> list[str]:
    """``count`` distinct colours (cycled beyond the palette)."""
    return [PALETTE[i % len(PALETTE)] for i in range(count)]


def _discrete_colorscale(count: int) -> list[tuple[float, str]]:
    """A stepped colourscale: integer code c in [0, count) gets colour c."""
    scale: list[tuple[float, str]] = []
    for i, color in enumerate(category_colors(count)):
        scale += [(i / count, color), ((i + 1) / count, color)]
    return scale


def embedding_map(
    coords: np.ndarray,
    shown: np.ndarray,
    *,
    color: np.ndarray,
    color_title: str = "",
    categories: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    marker_size: float = 4.0,
    height: int = 620,
    selected: np.ndarray | None = None,
) -> go.Figure:
    """The embedding map: one WebGL scatter of the ``shown`` samples.

    Args:
        coords: N x 2 map coordinates of every sample.
        shown: indices of the samples to plot (e.g. a stratified subsample).
        color: one value per sample (N): integer codes when ``categories`` is given (class,
            selected / not selected), else numbers (a dimension's activation, a score).
        color_title: colour bar title.
        categories: names of the integer codes in ``color``, for a discrete colour bar.
        labels: class index per sample, shown on hover.
        class_names: names of the classes: hover shows the name instead of the index.
        title: figure title.
        marker_size: point size in pixels.
        height: figure height in pixels.
        selected: sample indices drawn as selected (the others dimmed), e.g. a selection
            kept from before the figure was redrawn.

    The trace's ``customdata`` is ``[[sample index, class index]]`` per point (class -1 when
    ``labels`` is not given); the default drag mode is the lasso.
    """
    shown = np.asarray(shown, dtype=np.int64)
    values = np.asarray(color)[shown]
    classes = np.full(len(shown), -1, np.int64) if labels is None else np.asarray(labels, np.int64)[shown]
    custom = np.column_stack([shown, classes]).astype(np.int32)
    marker: dict[str, Any] = {"size": marker_size, "opacity": 0.8, "line": {"width": 0}}
    if categories is not None:
        count = max(len(categories), 1)
        marker.update(
            color=values.astype(np.int16),
            colorscale=_discrete_colorscale(count),
            cmin=-0.5,
            cmax=count - 0.5,
            colorbar={
                "title": {"text": color_title},
                "tickvals": list(range(count)),
                "ticktext": list(categories),
                "len": 0.9,
            },
        )
        value_hover = ""
    else:
        marker.update(
            color=values.astype(np.float32),
            colorscale="Viridis",
            colorbar={"title": {"text": color_title}, "len": 0.9},
        )
        value_hover = f"<br>{color_title}: %{{marker.color:.3f}}"
    extra: dict[str, Any] = {}
    if class_names is not None and labels is not None:
        names = np.asarray(list(class_names), dtype=object)
        extra["text"] = names[classes].tolist()
        class_hover = "%{text}"
    else:
        class_hover = "class %{customdata[1]}"
    if selected is not None:
        extra["selectedpoints"] = np.flatnonzero(np.isin(shown, selected)).tolist()
    trace = go.Scattergl(
        x=coords[shown, 0].astype(np.float32),
        y=coords[shown, 1].astype(np.float32),
        mode="markers",
        marker=marker,
        customdata=custom,
        hovertemplate="sample %{customdata[0]}<br>" + class_hover + value_hover + "<extra></extra>",
        name="samples",
        **extra,
    )
    fig = go.Figure(trace)
    fig.update_layout(
        title=title,
        height=height,
        dragmode="lasso",
        uirevision="embedding-map",  # keep zoom and pan across reruns
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"showticklabels": False, "title": None},
        yaxis={"showticklabels": False, "title": None},
        plot_bgcolor="white",
    )
    return fig


def selection_overlay_map(
    coords: np.ndarray,
    shown: np.ndarray,
    selections: Mapping[str, np.ndarray],
    *,
    title: str | None = None,
    height: int = 560,
    visible: Sequence[str] | None = None,
) -> go.Figure:
    """The map in grey with each selection's samples drawn on top in its own colour.

    Every selected sample is drawn (selections are small), whether or not it is among the
    ``shown`` background points. With ``visible``, only those selections are drawn at first
    and the others wait in the legend (a click shows them): several selections of thousands
    of samples each hide one another.
    """
    unknown = sorted(set(visible or ()) - set(selections))
    require(not unknown, f"no selection named {', '.join(unknown)} to show; the overlay has {', '.join(selections)}")
    shown = np.asarray(shown, dtype=np.int64)
    fig = go.Figure(
        go.Scattergl(
            x=coords[shown, 0],
            y=coords[shown, 1],
            mode="markers",
            marker={"size": 3, "color": UNSELECTED_GREY},
            name="all samples",
            hoverinfo="skip",
        )
    )
    for (name, indices), color in zip(selections.items(), category_colors(len(selections)), strict=True):
        idx = np.asarray(indices, dtype=np.int64)
        fig.add_trace(
            go.Scattergl(
                x=coords[idx, 0],
                y=coords[idx, 1],
                mode="markers",
                marker={"size": 5, "color": color, "opacity": 0.85},
                name=f"{name} ({len(idx)})",
                visible=True if visible is None or name in visible else "legendonly",
                customdata=idx[:, None],
                hovertemplate=f"{name}<br>sample %{{customdata[0]}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        height=height,
        uirevision="overlay-map",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
        plot_bgcolor="white",
        legend={"orientation": "h", "y": -0.05},
    )
    return fig


def _customdata_index(point: Mapping[str, Any]) -> int | None:
    """The sample index of a selected point from its customdata (either shape plotly sends)."""
    custom = point.get("customdata")
    if isinstance(custom, Mapping):  # {"0": index, "1": class} for numpy-backed customdata
        custom = custom.get("0", custom.get(0))
    elif isinstance(custom, (list, tuple)):
        custom = custom[0] if custom else None
    return None if custom is None else int(custom)


def indices_from_plotly_selection(
    selection: Mapping[str, Any] | None, coords: np.ndarray, shown: np.ndarray
) -> np.ndarray:
    """Sample indices selected on an :func:`embedding_map` (sorted, unique).

    A lasso or a box selects every sample inside it among *all* ``coords`` (point in polygon
    over the full map, not only the plotted subsample); several shapes are united. Without a
    shape (clicked points), each point's sample index comes from its customdata, else from
    its position in ``shown`` (the map is one trace, so ``point_index`` is that position).

    Args:
        selection: the ``selection`` part of Streamlit's plotly event: ``{"points": [...],
            "point_indices": [...], "box": [...], "lasso": [...]}``.
        coords: N x 2 map coordinates of every sample.
        shown: the indices that were plotted, in trace order.
    """
    if not selection:
        return np.zeros(0, dtype=np.int64)
    inside = np.zeros(len(coords), dtype=bool)
    shapes = 0
    for lasso in selection.get("lasso") or []:
        polygon = np.column_stack([np.asarray(lasso["x"], float), np.asarray(lasso["y"], float)])
        inside |= points_in_polygon(coords, polygon)
        shapes += 1
    for box in selection.get("box") or []:
        xs, ys = box["x"], box["y"]
        inside |= points_in_box(coords, (min(xs), max(xs)), (min(ys), max(ys)))
        shapes += 1
    if shapes:
        return np.flatnonzero(inside).astype(np.int64)
    picked = []
    shown = np.asarray(shown, dtype=np.int64)
    for point in selection.get("points") or []:
        index = _customdata_index(point)
        if index is None and point.get("point_index") is not None:
            index = int(shown[int(point["point_index"])])
        if index is not None:
            picked.append(index)
    return np.unique(np.asarray(picked, dtype=np.int64))


def class_histogram(
    labels: np.ndarray,
    class_names: Sequence[str],
    groups: Mapping[str, np.ndarray] | None = None,
    *,
    title: str | None = None,
    height: int = 360,
) -> go.Figure:
    """Samples per class: of all ``labels``, or of each group of indices (grouped bars)."""
    labels = np.asarray(labels, dtype=np.int64)
    count = len(class_names)
    fig = go.Figure()
    if groups is None:
        fig.add_trace(go.Bar(x=list(class_names), y=np.bincount(labels, minlength=count), name="all samples"))
    else:
        for (name, idx), color in zip(groups.items(), category_colors(len(groups)), strict=True):
            counts = np.bincount(labels[np.asarray(idx, dtype=np.int64)], minlength=count)
            fig.add_trace(go.Bar(x=list(class_names), y=counts, name=name, marker_color=color))
    fig.update_layout(
        title=title,
        height=height,
        barmode="group",
        xaxis_title="class",
        yaxis_title="samples",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
    )
    return fig


def heatmap_rows(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    sort_by: str | int = "class",
    max_rows: int = 400,
    seed: int = 0,
) -> np.ndarray:
    """The samples (rows) a heatmap shows, in display order.

    At most ``max_rows`` samples, class-stratified (see
    :func:`toolkit.projection.stratified_subsample`), ordered by class (then by index) when
    ``sort_by == "class"``, or by descending activation of dimension ``sort_by``.
    """
    from toolkit.projection import stratified_subsample

    rows = stratified_subsample(labels, max_rows, seed=seed)
    if sort_by == "class":
        return rows[np.argsort(np.asarray(labels)[rows], kind="stable")]
    dim = int(sort_by)
    if not 0 <= dim < vectors.shape[1]:
        raise IndexError(f"dimension {dim} is out of range [0, {vectors.shape[1]})")
    return rows[np.argsort(-vectors[rows, dim], kind="stable")]


def dimension_heatmap(
    vectors: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str | None = None,
    height: int = 560,
) -> go.Figure:
    """Samples (rows, in the given order) x embedding dimensions, coloured by activation."""
    rows = np.asarray(rows, dtype=np.int64)
    names = np.asarray(class_names, dtype=object)[np.asarray(labels)[rows]]
    fig = go.Figure(
        go.Heatmap(
            z=vectors[rows].astype(np.float32),
            x=np.arange(vectors.shape[1]),
            y=np.arange(len(rows)),
            customdata=np.column_stack([rows, names]),
            colorscale="Viridis",
            colorbar={"title": {"text": "activation"}},
            hovertemplate="sample %{customdata[0]} (%{customdata[1]})<br>dimension %{x}: %{z:.3f}<extra></extra>",
        )
    )
    # Name the class of each run of equal labels (rows sorted by class form one run per class).
    row_labels = np.asarray(labels)[rows]
    starts = np.flatnonzero(np.r_[True, row_labels[1:] != row_labels[:-1]])
    ticks = (
        {"tickvals": starts.tolist(), "ticktext": [str(names[i]) for i in starts], "showticklabels": True}
        if len(starts) <= 30
        else {"showticklabels": False}
    )
    fig.update_layout(
        title=title,
        height=height,
        xaxis_title="embedding dimension",
        yaxis={"title": f"{len(rows)} samples", "autorange": "reversed", **ticks},
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
    )
    return fig


def activation_histograms(
    vectors: np.ndarray,
    dims: Sequence[int],
    *,
    highlight: np.ndarray | None = None,
    highlight_name: str = "selected",
    bins: int = 40,
    columns: int = 3,
    height_per_row: int = 230,
) -> go.Figure:
    """One histogram of activations per chosen dimension, optionally with a subset's on top.

    With ``highlight`` (sample indices, e.g. a selection), their activations are overlaid
    in the same bins, which shows where in each dimension's range a selector picked.
    """
    dims = [int(d) for d in dims]
    rows = max(1, -(-len(dims) // columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[f"dimension {d}" for d in dims])
    for i, dim in enumerate(dims):
        values = vectors[:, dim].astype(np.float64)
        edges = np.histogram_bin_edges(values, bins=bins)
        size = float(edges[1] - edges[0]) or 1.0
        xbins = {"start": float(edges[0]), "end": float(edges[-1]), "size": size}
        r, c = divmod(i, columns)
        fig.add_trace(
            go.Histogram(
                x=values,
                xbins=xbins,
                marker_color=UNSELECTED_GREY if highlight is not None else PALETTE[0],
                name="all samples",
                showlegend=i == 0,
                legendgroup="all",
            ),
            row=r + 1,
            col=c + 1,
        )
        if highlight is not None:
            fig.add_trace(
                go.Histogram(
                    x=values[np.asarray(highlight, dtype=np.int64)],
                    xbins=xbins,
                    marker_color=PALETTE[1],
                    name=highlight_name,
                    showlegend=i == 0,
                    legendgroup="highlight",
                ),
                row=r + 1,
                col=c + 1,
            )
    fig.update_layout(
        barmode="overlay",
        height=height_per_row * rows + 60,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    fig.update_traces(opacity=0.85)
    return fig


def figure4(result: Reconstruction, *, height: int = 420) -> go.Figure:
    """The paper's Fig. 4: inputs (top), embeddings drawn as small images, reconstructions.

    The embedding row tiles each sample's bottleneck channels with
    :func:`toolkit.viz.images.embedding_tile`, on one grey scale shared by all samples so
    they can be compared.
    """
    count = len(result.indices)
    tiles = [embedding_tile(latent) for latent in result.latents]
    finite = np.concatenate([t[np.isfinite(t)] for t in tiles])
    low, high = float(finite.min()), float(finite.max())
    fig = make_subplots(
        rows=3,
        cols=count,
        row_titles=["input", "embedding", "reconstruction"],
        column_titles=[f"#{int(i)} (mse {m:.3f})" for i, m in zip(result.indices, result.mse, strict=True)],
        horizontal_spacing=0.01,
        vertical_spacing=0.04,
    )
    for c in range(count):
        fig.add_trace(go.Image(z=to_rgb(result.inputs[c]), hoverinfo="skip"), row=1, col=c + 1)
        fig.add_trace(
            go.Heatmap(
                z=tiles[c],
                zmin=low,
                zmax=high,
                colorscale="Greys_r",
                showscale=c == 0,
                colorbar={"title": {"text": "activation"}, "len": 0.3, "y": 0.5},
                hovertemplate="%{z:.3f}<extra></extra>",
            ),
            row=2,
            col=c + 1,
        )
        fig.add_trace(go.Image(z=to_rgb(result.outputs[c]), hoverinfo="skip"), row=3, col=c + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    for c in range(count):  # heatmaps draw bottom-up; images top-down
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{count + c + 1}", row=2, col=c + 1)
    fig.update_layout(height=height, margin={"l": 10, "r": 40, "t": 40, "b": 10})
    return fig


def image_grid_items(
    dataset: ImageDataset,
    indices: np.ndarray,
    *,
    scores: np.ndarray | None = None,
    picked_by: np.ndarray | None = None,
    sort_by_score: bool = True,
    limit: int | None = 60,
    size: int = 64,
) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """Images and captions for a grid of training samples.

    Args:
        dataset: the data set the indices refer to.
        indices: training-sample indices.
        scores: one score per index (a selector's), shown and (by default) sorted on,
            highest first.
        picked_by: the dimension or rule that picked each index (-1: none), shown as
            ``dim 17``.
        sort_by_score: order by descending score when scores are given.
        limit: at most this many images (``None``: all).
        size: approximate image side in pixels after upscaling.

    Returns:
        (images, captions, the indices shown in grid order).
    """
    idx = np.asarray(indices, dtype=np.int64)
    order = np.arange(len(idx))
    if scores is not None and sort_by_score:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if limit is not None:
        order = order[:limit]
    images, captions = [], []
    for position in order:
        sample = int(idx[position])
        parts = [f"#{sample}", dataset.class_names[int(dataset.train_labels[sample])]]
        if scores is not None:
            parts.append(f"score {float(scores[position]):.3g}")
        if picked_by is not None and int(picked_by[position]) >= 0:
            parts.append(f"dim {int(picked_by[position])}")
        images.append(upscale(dataset.train_images[sample], size))
        captions.append(" · ".join(parts))
    return images, captions, idx[order]


def image_grid(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    *,
    columns: int = 8,
    title: str | None = None,
    cell_height: int = 150,
) -> go.Figure:
    """Images with captions in a grid, as one figure (for notebooks; the app uses ``st.image``).

    Takes what :func:`image_grid_items` returns. Images keep their aspect ratio inside their
    cell (upscale small ones first); grey (H x W or H x W x 1) images are shown as RGB. A
    caption's `` · ``-separated parts go on separate lines above its image.
    """
    require(len(images) == len(captions), f"got {len(images)} images but {len(captions)} captions")
    require(columns >= 1, f"columns must be at least 1, got {columns}")
    columns = min(columns, max(len(images), 1))
    rows = max(1, -(-len(images) // columns))
    caption_lines = max((caption.count(" · ") + 1 for caption in captions), default=1)
    caption_px = 12 * caption_lines + 6  # room above each image for its caption
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[caption.replace(" · ", "<br>") for caption in captions],
        horizontal_spacing=0.01,
        vertical_spacing=caption_px / (rows * cell_height) if rows > 1 else 0.0,
    )
    for i, image in enumerate(images):
        pixels = image[..., None] if image.ndim == 2 else image
        r, c = divmod(i, columns)
        fig.add_trace(go.Image(z=to_rgb(pixels), hoverinfo="skip"), row=r + 1, col=c + 1)
    fig.update_annotations(font_size=10)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    top = caption_px + (40 if title else 10)
    fig.update_layout(
        title={"text": title, "y": 1.0, "yanchor": "top", "pad": {"t": 10}} if title else None,
        height=rows * cell_height + top + 10,
        margin={"l": 10, "r": 10, "t": top, "b": 10},
    )
    return fig
