"""Embeddings page: the map of all training embeddings, lasso selection, image grid, save."""

import numpy as np
import streamlit as st

from toolkit.dashboard import common
from toolkit.dashboard.detail import detail_section
from toolkit.data import ImageDataset
from toolkit.filters import SampleFilter
from toolkit.projection import stratified_subsample
from toolkit.selection import list_selections, make_selection, selection_from_indices
from toolkit.selectors import available
from toolkit.viz.embedding import embedding_map, image_grid_items, indices_from_plotly_selection

MAP_KEY = "embedding_map"
GRID_SIZE = 60
COLOR_MODES = ("class", "dimension", "saved selection", "selector score")
#: The paper's budget (4,320 of 50,000), used when colouring by a selector's score.
PAPER_FRACTION = 0.0864

ctx = common.context()
dataset = ctx.dataset
st.title("Embeddings")
emb = common.require_embedding(ctx)
projection = common.projection_controls(ctx, emb, "emb")
coords = projection.coords


@st.cache_data(max_entries=16, show_spinner="Running the selector…")
def selector_scores(
    _dataset: ImageDataset, embedding_fingerprint: str, method: str, seed: int, workspace: str, name: str
) -> np.ndarray:
    """Every sample's score under a selector (its run at the paper's budget), cached per embedding."""
    selection = make_selection(
        _dataset, method, fraction=PAPER_FRACTION, seed=seed, save=False, workspace=workspace, embedding=name
    )
    assert selection.result is not None
    return selection.result.scores


saved = {s.name: s for s in list_selections(dataset, workspace=ctx.workspace)}
cols = st.columns([2, 2, 1, 3])
common.restore_choice("emb_color", "color", COLOR_MODES)
mode = cols[0].selectbox("Colour by", COLOR_MODES, key="emb_color")
common.set_param("color", None if mode == COLOR_MODES[0] else mode)
categories = None
if mode == "class":
    color, categories, color_title = dataset.train_labels, list(dataset.class_names), "class"
elif mode == "dimension":
    dim = int(cols[1].number_input("Dimension", 0, emb.dim - 1, 0, key="emb_dim"))
    color, color_title = emb.vectors[:, dim], f"dimension {dim}"
elif mode == "saved selection":
    if not saved:
        cols[1].caption("No saved selections yet: draw a lasso and save it, or use the Selectors page.")
        color, categories, color_title = np.zeros(dataset.num_train, np.int16), ["not selected"], "selection"
    else:
        common.restore_choice("emb_selection", "selection", list(saved))
        chosen = cols[1].selectbox("Selection", list(saved), key="emb_selection")
        common.set_param("selection", chosen)
        color = np.zeros(dataset.num_train, np.int16)
        color[saved[chosen].indices] = 1
        categories, color_title = ["not selected", "selected"], chosen
else:
    selectors = available()
    method = cols[1].selectbox(
        "Selector",
        selectors,
        # The paper's selector by default: its scores are what it ranks by.
        index=selectors.index("topk-activation") if "topk-activation" in selectors else 0,
        key="emb_selector",
    )
    score_seed = int(cols[2].number_input("Seed", value=0, step=1, key="emb_selector_seed"))
    with common.user_errors():
        color = selector_scores(dataset, emb.fingerprint, method, score_seed, ctx.ws, emb.name)
    color_title = f"{method} score"
most = min(20_000, dataset.num_train)
# A step that suits the data set's size: 1,000 on CIFAR-10, 100 on digits' 1,437.
step = max(1, 10 ** int(np.log10(most)) // 10) if most > 1 else 1
max_points = (
    int(cols[3].slider("Points plotted", step, most, most, step, key="emb_max_points")) if most >= 2 * step else most
)


def filter_panel() -> tuple[SampleFilter, np.ndarray | None]:
    """The filter's controls; returns the filter and the scores its range applies to."""
    selectors = available()
    own = list(emb.sample_scores())
    with st.expander("Filter the map and the grid", icon=":material/filter_list:"):
        cols = st.columns(4)
        classes = cols[0].multiselect(
            "Classes",
            range(dataset.num_classes),
            format_func=lambda c: dataset.class_names[c],
            key="emb_filter_classes",
            placeholder="every class",
        )
        within = cols[1].multiselect("In all of", list(saved), key="emb_filter_within", placeholder="any sample")
        outside = cols[2].multiselect("In none of", list(saved), key="emb_filter_outside", placeholder="no selection")
        score = cols[3].selectbox(
            "Score range of",
            [*own, *selectors],
            index=None,
            format_func=lambda name: name if name in own else f"{name} score",
            key="emb_filter_score",
            placeholder="no score range",
            help="The embedding's per-sample scores, or a selector's scores (run at the paper's budget).",
        )
        values, low, high = None, None, None
        if score is not None:
            if score in own:
                values = emb.sample_scores()[score]
            else:
                with common.user_errors():
                    values = selector_scores(dataset, emb.fingerprint, score, 0, ctx.ws, emb.name)
            bottom, top = float(np.min(values)), float(np.max(values))
            if top > bottom:
                # One slider per score: its bounds are that score's.
                low, high = st.slider("Keep scores from … to", bottom, top, (bottom, top), key=f"emb_range_{score}")
                # The full range keeps every sample: no bound to record.
                low, high = (None if low <= bottom else low), (None if high >= top else high)
    label = None if score is None else score if score in own else f"{score} score"
    return SampleFilter(tuple(classes), tuple(within), tuple(outside), label, low, high), values


sample_filter, filter_scores = filter_panel()
with common.user_errors():
    passing = sample_filter.indices(dataset, scores=filter_scores, workspace=ctx.workspace)
shown = passing[stratified_subsample(dataset.train_labels[passing], max_points, seed=projection.seed)]
if sample_filter.active and not len(passing):
    st.warning("No sample passes the filter: widen it (classes, selections or score range).")
st.caption(
    f"{projection.method.upper()} map of all {dataset.num_train:,} training samples"
    + (
        f" (fitted on a seeded sample of {projection.fit_rows:,}, the rest placed by its transform); "
        if projection.fit_rows
        else "; "
    )
    + (f"{len(passing):,} pass the filter; " if sample_filter.active else "")
    + (
        f"plotting a class-stratified sample of {len(shown):,}. "
        if len(shown) < len(passing)
        else "every sample is plotted. "
        if not sample_filter.active
        else "all of them are plotted. "
    )
    + "A lasso or box selects among **all** samples"
    + (" that pass the filter" if sample_filter.active else "")
    + ", plotted or not (drag on the map; double-click clears); "
    # Streamlit turns point clicks off while the map drags a lasso or a box.
    + "with *Pan* or *Zoom* picked in the map's toolbar, a click on a point opens it in the sample detail below. "
    + "The selection stays when you recolour the map or plot another sample."
)
map_column, grid_column = st.columns([3, 2])
# The selection is kept per data set and embedding, so it survives a recolour, another plotted
# sample or a map redrawn for any other reason (the chart's own selection state does not).
KEPT_KEY = f"emb_kept_selection_{dataset.fingerprint}_{emb.fingerprint}"
kept = st.session_state.get(KEPT_KEY)
event_state = (st.session_state.get(MAP_KEY) or {}).get("selection") or {}
fresh = bool(event_state.get("lasso") or event_state.get("box"))
# A click on a point (no shape) opens that sample in the detail view below.
clicked = indices_from_plotly_selection(event_state, coords, shown) if not fresh else np.zeros(0, np.int64)
if len(clicked) and st.session_state.get("_emb_last_click") != int(clicked[0]):
    st.session_state["_emb_last_click"] = int(clicked[0])
    st.session_state["emb_detail_index"] = int(clicked[0])
# What the map draws: an emptied selection event on the same map is a double-click that clears.
drawn = repr((mode, color_title, max_points, projection.describe(), sample_filter))
last = st.session_state.get("_emb_last_event")
emptied = not fresh and not event_state.get("point_indices") and not event_state.get("points")
if kept is not None and emptied and last is not None and last == (True, drawn):
    kept = None
    st.session_state.pop(KEPT_KEY, None)
st.session_state["_emb_last_event"] = (fresh, drawn)
if fresh and (kept is None or kept["state"] != event_state):
    kept = {
        "state": event_state,
        "indices": indices_from_plotly_selection(event_state, coords, shown),
        "projection": projection.describe(),
    }
    st.session_state[KEPT_KEY] = kept
if kept is not None and kept["projection"] != projection.describe():
    kept = None  # drawn on another map: its shape means nothing here
# What the grid shows and a save keeps: the lasso's samples that pass the filter, else all that pass it.
if kept is not None:
    selected = np.intersect1d(kept["indices"], passing) if sample_filter.active else kept["indices"]
else:
    selected = passing if sample_filter.active else np.zeros(0, np.int64)
figure = embedding_map(
    coords,
    shown,
    color=color,
    color_title=color_title,
    categories=categories,
    labels=dataset.train_labels,
    class_names=dataset.class_names,
    selected=None if kept is None or fresh else selected,
)
with map_column:
    st.plotly_chart(figure, key=MAP_KEY, on_select="rerun", selection_mode=("points", "lasso", "box"))
    if kept is not None and st.button("Clear the selection", key="emb_clear_selection", icon=":material/close:"):
        st.session_state.pop(KEPT_KEY, None)
        st.rerun()
selection_state = kept["state"] if kept is not None else {}
if kept is None:
    shape = "filter"
else:
    shape = "box" if selection_state.get("box") and not selection_state.get("lasso") else "lasso"

grid_column.subheader(
    f"Selected: {len(selected):,} samples"
    if kept is not None or not sample_filter.active
    else f"Passing the filter: {len(selected):,} samples"
)
with grid_column, st.container(key="emb_grid"):
    if len(selected):
        counts = np.bincount(dataset.train_labels[selected], minlength=dataset.num_classes)
        st.caption(" · ".join(f"{name}: {c}" for name, c in zip(dataset.class_names, counts, strict=True) if c))
        with st.form("save_lasso"):
            name = st.text_input("Selection name", value=f"{shape}-{len(selected)}", key="lasso_name")
            if st.form_submit_button("Save as a named selection", icon=":material/save:"):
                with common.user_errors():
                    saved_selection = selection_from_indices(
                        dataset,
                        selected,
                        name=name,
                        method="lasso" if kept is not None else "filter",
                        params={
                            "projection": projection.describe(),
                            "lasso": selection_state.get("lasso") or [],
                            "box": selection_state.get("box") or [],
                            "filter": sample_filter.describe(dataset.class_names),
                        },
                        embedding=emb.describe(),
                        source="lasso, box or filter on the dashboard's embedding map",
                        workspace=ctx.workspace,
                    )
                st.success(
                    f"Saved {saved_selection.size:,} samples as {saved_selection.name!r}: `{saved_selection.path}`"
                )
        size = common.thumbnail_size()
        if categories is None:  # numeric colours: show the highest values first
            values = np.asarray(color)[selected]
            images, captions, in_grid = image_grid_items(dataset, selected, scores=values, limit=GRID_SIZE, size=size)
            order = f"the highest {color_title} first"
        else:  # otherwise a class-stratified sample of the selection
            sample = selected[stratified_subsample(dataset.train_labels[selected], GRID_SIZE, seed=0)]
            images, captions, in_grid = image_grid_items(dataset, sample, limit=None, size=size)
            order = "a class-stratified sample"
        if len(selected) > len(images):
            st.caption(f"Showing {len(images)} of {len(selected):,}: {order}.")
        common.show_images(images, captions, shown=in_grid, key="emb_grid_open", open_in="emb_detail_index")
    else:
        st.caption(
            "Draw a lasso on the map (or pick box select in its toolbar), or filter the map, to see those samples here."
        )

detail_section(ctx, emb, "emb", always=True)
