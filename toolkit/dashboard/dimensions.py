"""Dimensions page: the per-dimension heatmap, activation histograms and the paper's Fig. 4."""

import numpy as np
import streamlit as st

from toolkit.dashboard import common
from toolkit.encoders.autoencoder import reconstruct
from toolkit.selection import list_selections
from toolkit.viz.embedding import activation_histograms, dimension_heatmap, figure4, heatmap_rows

ctx = common.context()
dataset = ctx.dataset
st.title("Dimensions")
emb = common.require_embedding(ctx)
vectors = emb.vectors
VIEWS = ("Heatmap", "Histograms", "Fig. 4")
# One view at a time keeps the page quick to draw (each is a heavy plotly figure).
view = st.segmented_control("Show", VIEWS, default=VIEWS[0], key="dim_view") or VIEWS[0]

if view == "Heatmap":
    st.header("Heatmap")
    cols = st.columns([2, 1, 2])
    order = cols[0].radio("Sort samples by", ("class", "a dimension"), horizontal=True, key="dim_sort")
    sort_by: str | int = "class"
    if order == "a dimension":
        sort_by = int(cols[1].number_input("Dimension", 0, emb.dim - 1, 0, key="dim_sort_dim"))
    rows_wanted = int(
        cols[2].slider("Samples", 50, min(1_000, dataset.num_train), min(400, dataset.num_train), 50, key="dim_rows")
    )
    rows = heatmap_rows(vectors, dataset.train_labels, sort_by=sort_by, max_rows=rows_wanted)
    st.plotly_chart(
        dimension_heatmap(vectors, rows, dataset.train_labels, dataset.class_names),
        key="dim_heatmap",
    )
    st.caption(
        f"{len(rows)} class-stratified samples (rows) x {emb.dim} embedding dimensions (columns), "
        + ("grouped by class." if sort_by == "class" else f"highest activation of dimension {sort_by} first.")
        + (
            ""
            if emb.encoder == "autoencoder"
            else f" The paper reads this view for its autoencoder; the {emb.encoder} embedding's dimensions "
            "are features of another kind, and top-k activation per dimension means something else on them."
        )
    )

if view == "Histograms":
    st.header("Activation histograms")
    spread = np.argsort(-vectors.std(axis=0))[:6]
    cols = st.columns([3, 2])
    dims = cols[0].multiselect(
        "Dimensions (default: the six with the widest spread)",
        list(range(emb.dim)),
        default=[int(d) for d in spread],
        key="dim_hist_dims",
    )
    saved = {s.name: s for s in list_selections(dataset, workspace=ctx.workspace)}
    overlay = cols[1].selectbox("Overlay a saved selection", ["(none)", *saved], key="dim_hist_overlay")
    if dims:
        highlight = saved[overlay].indices if overlay in saved else None
        st.plotly_chart(
            activation_histograms(vectors, dims, highlight=highlight, highlight_name=overlay),
            key="dim_histograms",
        )

if view == "Fig. 4" and emb.encoder != "autoencoder":
    st.header("Inputs, embeddings, reconstructions (the paper's Fig. 4)")
    st.info(
        f"Fig. 4 shows an autoencoder's reconstructions; embedding {emb.name!r} was made by the {emb.encoder} "
        "encoder, which does not reconstruct images. Pick an autoencoder embedding in the sidebar (or make one "
        "on the Data page) to see it."
    )
elif view == "Fig. 4":
    st.header("Inputs, embeddings, reconstructions (the paper's Fig. 4)")
    cols = st.columns([2, 1, 3])
    pick = cols[0].radio("Samples", ("random", "chosen"), horizontal=True, key="fig4_pick")
    if pick == "random":
        count = int(cols[1].number_input("How many", 1, 12, 6, key="fig4_count"))
        seed = int(cols[2].number_input("Seed", value=0, step=1, key="fig4_seed"))
        indices = np.random.default_rng(seed).choice(
            dataset.num_train, size=min(count, dataset.num_train), replace=False
        )
    else:
        text = cols[2].text_input("Sample indices (comma-separated)", "0, 1, 2", key="fig4_indices")
        try:
            indices = np.asarray([int(t) for t in text.replace(" ", "").split(",") if t], dtype=np.int64)
        except ValueError:
            st.error(f"Sample indices must be whole numbers separated by commas, got {text!r}.")
            st.stop()
    with common.user_errors():
        result = reconstruct(emb, dataset, indices)
    st.plotly_chart(figure4(result), key="fig4")
    st.caption(
        "Top: centre-cropped inputs. Middle: each sample's embedding, its bottleneck channels tiled as one image "
        "(one grey scale for all). Bottom: the autoencoder's reconstructions (mse in standardised units)."
    )
