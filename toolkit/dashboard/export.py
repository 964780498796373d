"""Export page: a saved selection's counts and its manifest."""

import json

import pandas as pd
import streamlit as st

from toolkit.dashboard import common
from toolkit.selection import list_selections

ctx = common.context()
dataset = ctx.dataset
st.title("Export")

saved = {s.name: s for s in list_selections(dataset, workspace=ctx.workspace)}
if not saved:
    st.info("No saved selections for this data set yet: save one on the Embeddings or Selectors page.")
    st.stop()
name = st.selectbox("Selection", list(saved), key="export_selection")
selection = saved[name]
cols = st.columns(3)
cols[0].metric("Samples", f"{selection.size:,}")
cols[1].metric("Share of training set", f"{100 * selection.manifest['fraction']:.2f}%")
cols[2].metric("Method", selection.method)
st.dataframe(
    pd.DataFrame(
        {
            "class": list(selection.manifest["class_counts"]),
            "samples": list(selection.manifest["class_counts"].values()),
        }
    ),
    hide_index=True,
    key="export_counts",
)
st.download_button(
    "Download the JSON manifest",
    json.dumps(selection.manifest, indent=2),
    file_name=f"{selection.name}.json",
    mime="application/json",
    on_click="ignore",
    icon=":material/download:",
)
