"""Selectors page: run registered selectors with a budget and compare them side by side."""

import numpy as np
import pandas as pd
import streamlit as st

from toolkit.dashboard import common
from toolkit.dashboard.detail import detail_section
from toolkit.diagnostics import DEFAULT_OUTLIER_QUANTILE, DEFAULT_TAIL
from toolkit.projection import stratified_subsample
from toolkit.selection import compare_diagnostics, make_selection
from toolkit.selectors import available, get_selector
from toolkit.viz.embedding import class_histogram, image_grid_items, selection_overlay_map

RESULTS_KEY = "selector_results"
PAPER_FRACTION = 0.0864
BUDGETS = ("size", "fraction")

ctx = common.context()
dataset = ctx.dataset
st.title("Selectors")
emb = common.require_embedding(ctx)

names = available()
cols = st.columns([4, 1, 1, 1, 1])
# The choices are kept in the URL (defaults left out), so a refresh or a shared link restores them.
default_methods = [m for m in ("random", "topk-activation") if m in names]
methods = common.url_widget(
    cols[0].multiselect,
    "Selectors",
    names,
    default=default_methods,
    key="sel_methods",
    param="selectors",
    omit=default_methods,
    options=names,
    many=True,
    help="Every selector registered in toolkit.selectors.",
)
budget_kind = common.url_widget(
    cols[1].radio, "Budget as", BUDGETS, key="sel_budget_kind", param="budget", omit=BUDGETS[0], options=BUDGETS
)
if budget_kind == "size":
    paper_size = max(1, round(PAPER_FRACTION * dataset.num_train))
    size = int(
        common.url_widget(
            cols[2].number_input,
            "Samples K",
            value=paper_size,
            step=1,
            key="sel_k",
            param="k",
            omit=paper_size,
            parse=int,
        )
    )
    budget = {"size": size}
else:
    fraction = float(
        common.url_widget(
            cols[2].number_input,
            "Fraction",
            value=PAPER_FRACTION,
            format="%.4f",
            key="sel_fraction",
            param="fraction",
            omit=PAPER_FRACTION,
            parse=float,
        )
    )
    budget = {"fraction": fraction}
balanced = common.url_widget(
    cols[3].checkbox,
    "Balanced",
    key="sel_balanced",
    param="balanced",
    omit=False,
    options=(False, True),
    help="Per-class quotas proportional to class frequency.",
)
seed = int(
    common.url_widget(cols[4].number_input, "Seed", value=0, step=1, key="sel_seed", param="seed", omit=0, parse=int)
)

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
    with common.user_errors(), st.spinner("Measuring coverage…"):
        comparison = compare_diagnostics(dataset, list(results.values()), emb)
    st.session_state[RESULTS_KEY] = {"dataset": dataset.fingerprint, "selections": results, "comparison": comparison}

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

# What `samplesift compare` prints, from the same toolkit call (measured on the sidebar's embedding).
comparison = state["comparison"]
st.subheader("Coverage")
st.caption(
    f"Measured on embedding {comparison.embedding['name']!r}. Coverage radius: the largest distance from a "
    "sample to its nearest selected one (lower: no region left far from the subset). Facility location: the "
    "mean similarity of a sample to its nearest selected one (1: every sample has a selected twin). Class "
    f"entropy: 1 when the classes are evenly represented. Tail: the top {100 * DEFAULT_TAIL:g}% of each "
    f"dimension. Outlier share: the share of the selection among the {100 * (1 - DEFAULT_OUTLIER_QUANTILE):g}% "
    f"most outlying samples (random picks about {100 * (1 - DEFAULT_OUTLIER_QUANTILE):g}%)."
)
st.dataframe(
    comparison.table,
    key="sel_diagnostics",
    column_config={
        "selected_on": "selected on",
        "coverage_radius": st.column_config.NumberColumn("coverage radius", format="%.4g"),
        "mean_nearest_distance": st.column_config.NumberColumn("mean nearest distance", format="%.4g"),
        "facility_location": st.column_config.NumberColumn("facility location", format="%.3f"),
        "class_entropy": st.column_config.NumberColumn("class entropy", format="%.3f"),
        "tail_dims_covered": st.column_config.NumberColumn("dimensions with a tail sample", format="percent"),
        "tail_share_mean": st.column_config.NumberColumn("tail share", format="percent"),
        "outlier_share": st.column_config.NumberColumn("outlier share", format="percent"),
    },
)
if len(comparison.overlap) > 1:
    st.caption("Pairwise overlap (Jaccard: shared samples over all samples of the two).")
    st.dataframe(
        comparison.overlap,
        key="sel_overlap",
        column_config={name: st.column_config.NumberColumn(format="%.3f") for name in comparison.overlap.columns},
    )

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
        images, captions, shown = image_grid_items(
            dataset,
            selection.indices,
            scores=selection.scores,
            picked_by=selection.picked_by,
            limit=48,
            size=common.thumbnail_size(),
        )
        st.caption(f"The {len(images)} highest-scoring of {selection.size:,} selected samples.")
        common.show_images(images, captions, shown=shown, key=f"sel_grid_open_{name}", open_in="sel_detail_index")
        with st.form(f"save_{name}"):
            save_name = st.text_input("Save as", value=name, key=f"save_name_{name}")
            if st.form_submit_button("Save selection", icon=":material/save:"):
                with common.user_errors():
                    path = selection.save_in(ctx.workspace, save_name)
                st.success(f"Saved → `{path}`")

detail_section(ctx, emb, "sel")
