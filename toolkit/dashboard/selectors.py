"""Selectors page: run registered selectors with a budget and compare them side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from toolkit.dashboard import common
from toolkit.projection import stratified_subsample
from toolkit.selection import make_selection
from toolkit.selectors import available, get_selector
from toolkit.viz.embedding import class_histogram, image_grid_items, selection_overlay_map

RESULTS_KEY = "selector_results"
PAPER_FRACTION = 0.0864

ctx = common.context()
dataset = ctx.dataset
st.title("Selectors")
emb = common.require_embedding(ctx)

names = available()
cols = st.columns([4, 1, 1, 1, 1])
methods = cols[0].multiselect(
    "Selectors",
    names,
    default=[m for m in ("random", "topk-activation") if m in names],
    key="sel_methods",
    help="Every selector registered in toolkit.selectors.",
)
budget_kind = cols[1].radio("Budget as", ("size", "fraction"), key="sel_budget_kind")
if budget_kind == "size":
    size = int(
        cols[2].number_input("Samples K", value=max(1, round(PAPER_FRACTION * dataset.num_train)), step=1, key="sel_k")
    )
    budget = {"size": size}
else:
    fraction = float(cols[2].number_input("Fraction", value=PAPER_FRACTION, format="%.4f", key="sel_fraction"))
    budget = {"fraction": fraction}
balanced = cols[3].checkbox("Balanced", key="sel_balanced", help="Per-class quotas proportional to class frequency.")
seed = int(cols[4].number_input("Seed", value=0, step=1, key="sel_seed"))

if st.button("Run selectors", type="primary", icon=":material/play_arrow:", disabled=not methods):
    results = {}
    for method in methods:
        with common.user_errors(), st.spinner(f"Running {method}…"):
            selection = make_selection(
                dataset,
                method,
                **budget,
                balanced=balanced,
                seed=seed,
                save=False,
                workspace=ctx.workspace,
                embedding=ctx.embedding,
            )
        results[selection.name] = selection
    st.session_state[RESULTS_KEY] = {"dataset": dataset.fingerprint, "selections": results}

state = st.session_state.get(RESULTS_KEY)
if not state or state["dataset"] != dataset.fingerprint:
    st.info("Pick selectors and a budget, then run them to compare their picks.")
    st.stop()
selections = state["selections"]
indices = {name: s.indices for name, s in selections.items()}

st.header("Comparison")
summary = pd.DataFrame(
    [
        {
            "selection": name,
            "method": s.method,
            "size": s.size,
            "fraction": s.manifest["fraction"],
            "balanced": s.manifest["balanced"],
            "seed": s.manifest["seed"],
            "classes covered": int(np.count_nonzero(list(s.manifest["class_counts"].values()))),
            "score": s.manifest["score_meaning"],
        }
        for name, s in selections.items()
    ]
)
st.dataframe(summary, hide_index=True, key="sel_summary")

left, right = st.columns(2)
with left:
    projection = common.projection_controls(ctx, emb, "sel")
    shown = stratified_subsample(dataset.train_labels, 20_000, seed=projection.seed)
    st.plotly_chart(
        selection_overlay_map(projection.coords, shown, indices, title=f"Selections on the {projection.method} map"),
        key="sel_overlay",
    )
with right:
    st.plotly_chart(
        class_histogram(dataset.train_labels, dataset.class_names, indices, title="Selected samples per class"),
        key="sel_classes",
    )

st.header("Selected images")
tabs = st.tabs(list(selections))
for tab, (name, selection) in zip(tabs, selections.items(), strict=True):
    with tab:
        selector = get_selector(selection.method)
        st.caption(f"{selector.source} — score: {selection.manifest['score_meaning']}")
        images, captions, _ = image_grid_items(
            dataset, selection.indices, scores=selection.scores, picked_by=selection.picked_by, limit=48
        )
        st.caption(f"The {len(images)} highest-scoring of {selection.size:,} selected samples.")
        common.show_images(images, captions)
        with st.form(f"save_{name}"):
            save_name = st.text_input("Save as", value=name, key=f"save_name_{name}")
            if st.form_submit_button("Save selection", icon=":material/save:"):
                with common.user_errors():
                    path = selection.save_in(ctx.workspace, save_name)
                st.success(f"Saved → `{path}`")
