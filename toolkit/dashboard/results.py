"""Results page: the run store as a sortable table (and, with toolkit.experiments, the paper's charts)."""

import streamlit as st

from toolkit.dashboard import common
from toolkit.runs import list_runs

ctx = common.context()
dataset = ctx.dataset
st.title("Results")

table = list_runs(ctx.workspace, dataset=dataset.key)
if table.empty:
    st.info("No runs for this data set yet: queue some on the Train page or with `samplesift train`.")
    st.stop()
st.header("Runs")
st.caption("Click a column header to sort. Accuracy is measured with the averaged weights.")
st.dataframe(
    table,
    hide_index=True,
    key="results_table",
    column_config={
        "test_accuracy": st.column_config.NumberColumn("test accuracy", format="percent"),
        "wall_time_s": st.column_config.NumberColumn("wall-clock (s)", format="%.1f"),
    },
)
