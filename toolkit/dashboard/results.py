"""Results page: the paper's Figs. 5-7 and the statistics, from the run store (toolkit.results)."""

import streamlit as st

from toolkit.dashboard import common
from toolkit.errors import SampleSiftError
from toolkit.results import (
    gain_table,
    paired_differences,
    results_table,
    summarize,
    time_to_accuracy,
    time_to_target,
)
from toolkit.runs import list_runs
from toolkit.viz.results import (
    accuracy_vs_split,
    gain_figure,
    learning_curve_figure,
    loss_curves,
    split_label,
    stamp_hardware,
    time_budget_bars,
)

SHOWN_COLUMNS = [
    "run_id",
    "protocol",
    "selector",
    "size",
    "split",
    "seed",
    "steps",
    "time_budget",
    "batch",
    "test_accuracy",
    "wall_time_s",
    "images_per_s",
    "device",
]

ctx = common.context()
dataset = ctx.dataset
st.title("Results")

table = results_table(ctx.workspace, dataset=dataset.key)
if table.empty:
    st.info(
        "No finished runs for this data set yet: queue some on the Train page, or run a sweep "
        f"(`samplesift sweep {' '.join(dataset.cli_arguments())} --preset cpu --out results`)."
    )
    st.stop()
st.caption(
    f"{len(table)} finished run(s). Accuracy is the averaged weights' test accuracy; wall-clock counts training "
    "steps only (warm-up and evaluation excluded). When a configuration ran more than once, its latest run counts."
)


def figure_or_reason(draw, key: str) -> None:
    """Draw a figure, or say which runs it still needs (the toolkit's message)."""
    try:
        st.plotly_chart(draw(), key=key)
    except SampleSiftError as exc:
        st.info(str(exc))


def table_or_reason(make, key: str) -> None:
    """Show a table, or say what it still needs (the toolkit's message)."""
    try:
        st.dataframe(make(), hide_index=True, key=key)
    except SampleSiftError as exc:
        st.info(str(exc))


gain, tab5, tab6, tab7, stats = st.tabs(
    [
        "Gain over random",
        "Accuracy vs split (Fig. 5)",
        "Fixed time budget (Fig. 6)",
        "Loss curves (Fig. 7)",
        "Statistics",
    ]
)
with gain:
    st.caption(
        "Does a selection beat random? Each pair (embedding:selector) minus random-balanced on the same seed, K, "
        "split and schedule, in percentage points: the mean paired difference with its 95% interval; * marks an "
        "interval entirely above zero. Equal-steps runs only."
    )
    try:
        paired = paired_differences(table)
    except SampleSiftError as exc:  # runs that cannot be paired unambiguously
        st.info(str(exc))
    else:
        splits = sorted(paired.loc[paired["n"] > 0, "split"].unique(), reverse=True)
        if not splits:
            st.info(
                "No pair has a random-balanced run of the same seed, K, split and schedule yet: run random-balanced "
                "next to the selections (a sweep with random-balanced among its selectors does)."
            )
        else:
            split = st.radio(
                "Split (subset share of the steps)",
                splits,
                format_func=split_label,
                horizontal=True,
                key="results_gain_split",
            )
            st.dataframe(
                gain_table(paired, split=split),
                hide_index=True,
                key="results_gain_table",
                column_config={"mean_gain": st.column_config.NumberColumn("mean gain (points)", format="%+.2f")},
            )
            figure_or_reason(lambda: stamp_hardware(gain_figure(paired, split=split), table), "results_gain")
            figure_or_reason(
                lambda: stamp_hardware(learning_curve_figure(table, split=split), table), "results_learning_curve"
            )
    st.subheader("Time to accuracy")
    st.caption(
        "The paper's claim is faster training: the steps each configuration took to reach the accuracy the "
        "full-data run had half-way through the same schedule (read from the evaluations; step ratio below 1 is "
        "faster than training on everything)."
    )
    table_or_reason(lambda: time_to_accuracy(table), "results_time_to_accuracy")
with tab5:
    figure_or_reason(lambda: stamp_hardware(accuracy_vs_split(table), table), "results_fig5")
with tab6:
    figure_or_reason(lambda: stamp_hardware(time_budget_bars(table), table), "results_fig6")
with tab7:
    cols = st.columns([1, 3])
    axis = cols[0].radio(
        "Against",
        ("wall_time_s", "step"),
        format_func={"wall_time_s": "wall-clock", "step": "steps"}.get,
        key="results_fig7_x",
    )
    timed = table[table["protocol"] == "equal-time"]
    default = list((timed if not timed.empty else table)["run_id"].tail(8))
    chosen = cols[1].multiselect("Runs", list(table["run_id"]), default=default, key="results_fig7_runs")
    if chosen:
        figure_or_reason(lambda: loss_curves(table[table["run_id"].isin(chosen)], x=axis), "results_fig7")
with stats:
    st.subheader("Mean, spread and 95% interval over seeds")
    st.dataframe(summarize(table), hide_index=True, key="results_summary")
    target = float(st.number_input("Target test accuracy", 0.0, 1.0, 0.5, 0.05, key="results_target"))
    st.subheader(f"Steps and seconds to reach {100 * target:.0f}%")
    st.dataframe(time_to_target(table, target), hide_index=True, key="results_time_to_target")

st.header("Runs")
st.caption("Click a column header to sort.")
st.dataframe(
    table[SHOWN_COLUMNS],
    hide_index=True,
    key="results_table",
    column_config={
        "test_accuracy": st.column_config.NumberColumn("test accuracy", format="percent"),
        "wall_time_s": st.column_config.NumberColumn("wall-clock (s)", format="%.1f"),
        "images_per_s": st.column_config.NumberColumn("images/s", format="%.0f"),
    },
)
with st.expander("Every run of this data set, in any state"):
    st.dataframe(list_runs(ctx.workspace, dataset=dataset.key, kind="train"), hide_index=True, key="results_all_runs")
