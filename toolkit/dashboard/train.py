"""Train page: queue two-phase runs as background processes; live progress, curves, cancel.

Everything shown here is read from the run store on every poll, so runs started from a
terminal show up too, and nothing is lost on a browser refresh or an app restart.
"""

import streamlit as st

from toolkit import jobs
from toolkit.dashboard import common
from toolkit.dashboard.common import plural
from toolkit.results import run_config_key
from toolkit.runs import RunStore
from toolkit.selection import list_selections
from toolkit.train import TrainConfig
from toolkit.viz.results import loss_curves
from toolkit.viz.training import accuracy_curves

NO_SELECTION = "(none: full data only)"
SPLITS = [round(0.1 * i, 1) for i in range(11)]
ACTIVE = ("queued", "running")
LENGTHS = ("steps", "time budget")
NORMS = ("batch", "lrn")

ctx = common.context()
dataset = ctx.dataset
st.title("Train")

st.header("Queue runs")
saved = [s.name for s in list_selections(dataset, workspace=ctx.workspace)]
subsets = [NO_SELECTION, *saved]
# The choices are kept in the URL (defaults left out), so a refresh or a shared link restores them.
url = common.url_widget
cols = st.columns([3, 3])
selection = url(
    cols[0].selectbox,
    "Selection (the fast phase's subset)",
    subsets,
    index=len(saved),  # the newest saved selection
    key="train_selection",
    param="subset",
    omit=subsets[-1],
    options=subsets,
)
default_splits = [0.5] if saved else [0.0]
splits = url(
    cols[1].multiselect,
    "Splits (share of the run on the subset)",
    SPLITS,
    default=default_splits,
    format_func=lambda s: f"{round(100 * s)}/{round(100 - 100 * s)}",
    key="train_splits",
    param="splits",
    omit=default_splits,
    options=SPLITS,
    many=True,
)
cols = st.columns(6)
length = url(cols[0].radio, "Length", LENGTHS, key="train_length", param="length", omit=LENGTHS[0], options=LENGTHS)
if length == "steps":
    steps = int(
        url(cols[1].number_input, "Steps", value=200, step=50, key="train_steps", param="steps", omit=200, parse=int)
    )
    budget = None
else:
    steps = None
    budget = float(
        url(
            cols[1].number_input,
            "Seconds",
            value=30.0,
            step=10.0,
            key="train_budget",
            param="seconds",
            omit=30.0,
            parse=float,
        )
    )
batch = int(
    url(
        cols[2].number_input,
        "Batch",
        min_value=1,
        value=128,
        step=32,
        key="train_batch",
        param="batch",
        omit=128,
        parse=int,
    )
)
seeds = int(
    url(
        cols[3].number_input,
        "Seeds",
        min_value=1,
        max_value=20,
        value=1,
        key="train_seeds",
        param="seeds",
        omit=1,
        parse=int,
    )
)
first_seed = int(
    url(
        cols[4].number_input,
        "First seed",
        value=0,
        step=1,
        key="train_first_seed",
        param="first_seed",
        omit=0,
        parse=int,
    )
)
evals = int(
    url(cols[5].number_input, "Evaluations", min_value=0, value=5, key="train_evals", param="evals", omit=5, parse=int)
)
cols = st.columns([1, 2, 3])
norm = url(cols[0].selectbox, "Norm", NORMS, key="train_norm", param="norm", omit=NORMS[0], options=NORMS)
name = cols[1].text_input("Run label", value="", key="train_name", placeholder="optional")
count = len(splits) * seeds
cols[2].caption(
    f"{count} run(s): {len(splits)} split(s) x {seeds} seed(s), trained one after another by a background "
    "worker (`samplesift train --resume RUN` for each queued run)."
)
if st.button("Queue runs", type="primary", icon=":material/play_arrow:", disabled=count == 0, key="train_submit"):
    with common.user_errors():
        configs = [
            TrainConfig(
                split=float(split),
                steps=steps,
                time_budget=budget,
                batch=batch,
                seed=first_seed + offset,
                evals=evals,
                norm=norm,
            )
            for split in splits
            for offset in range(seeds)
        ]
        runs, job = jobs.queue_runs(
            dataset,
            configs,
            selection=None if selection == NO_SELECTION else selection,
            workspace=ctx.workspace,
            name=name.strip() or None,
        )
    st.session_state["train_curves"] = [run.id for run in runs]  # show the new runs' curves
    st.success(f"Queued {len(runs)} run(s); worker job `{job.id}`.")
    new_ids = {run.id for run in runs}
    earlier = {}
    for other in RunStore(ctx.workspace):
        if other.id not in new_ids and other.status().get("state") in ("queued", "running", "finished"):
            key = run_config_key(other)
            if key is not None:
                earlier.setdefault(key, other.id)
    repeats = [(run.id, earlier[key]) for run in runs if (key := run_config_key(run)) in earlier]
    if repeats:
        st.warning(
            f"{plural(len(repeats), 'run')} repeat{'s' if len(repeats) == 1 else ''} a configuration that is already "
            "queued or finished ("
            + ", ".join(f"`{new}` = `{old}`" for new, old in repeats[:4])
            + "); the results count only the latest run of a configuration. Change the seed to add a repeat, or "
            "cancel the new run below.",
            icon=":material/content_copy:",
        )


@st.fragment(run_every=2)
def live_runs() -> None:
    """Progress of active runs, cancel and resume buttons, and live curves (polled)."""
    store = RunStore(ctx.workspace)
    table = store.table(dataset.key, kind="train")  # embedding runs are followed on the Data page
    if table.empty:
        st.caption("No runs for this data set yet.")
        return
    table = table.sort_values("created", ascending=False)
    active = table[table["status"].isin(ACTIVE)]
    st.subheader(f"{len(active)} active run(s)" if len(active) else "No active runs")
    ahead = jobs.running_run(ctx.workspace) if (active["status"] == "queued").any() else None
    for row in active.itertuples():
        progress = jobs.run_progress(store.get(row.run_id))
        cols = st.columns([3, 3, 1])
        cols[0].progress(progress.fraction, text=f"`{row.run_id}` · {progress.state} · split {row.split}")
        if progress.state == "queued":
            cols[1].caption(f"waiting for run `{ahead}`" if ahead else "waiting for its worker to start")
        else:
            accuracy = f"{100 * progress.accuracy:.1f}%" if progress.accuracy is not None else "–"
            loss = f"{progress.loss:.3f}" if progress.loss is not None else "–"
            eta = common.format_seconds(progress.eta_s)
            cols[1].caption(f"step {progress.step:,} · loss {loss} · accuracy {accuracy} · about {eta} left")
        if cols[2].button("Cancel", key=f"cancel_{row.run_id}", icon=":material/stop:"):
            jobs.cancel_run(row.run_id, workspace=ctx.workspace)
            st.rerun(scope="fragment")
    stopped = table[table["status"].isin(("interrupted", "failed"))].head(5)
    if len(stopped):
        with st.expander(f"{len(stopped)} recent interrupted or failed run(s)"):
            for row in stopped.itertuples():
                status = store.get(row.run_id).status()
                cols = st.columns([5, 1])
                cols[0].caption(f"`{row.run_id}` · {row.status}: {status.get('error', '')}")
                if cols[1].button("Resume", key=f"resume_{row.run_id}"):
                    with common.user_errors():
                        jobs.requeue(row.run_id, workspace=ctx.workspace)
                    st.rerun(scope="fragment")

    st.dataframe(
        table.head(10)[["run_id", "status", "selection", "split", "steps", "time_budget", "seed", "test_accuracy"]],
        hide_index=True,
        key="train_recent_table",
        column_config={"test_accuracy": st.column_config.NumberColumn("test accuracy", format="percent")},
    )
    options = list(table["run_id"])
    default = None
    if "train_curves" in st.session_state:  # runs deleted meanwhile drop out of the choice
        st.session_state["train_curves"] = [r for r in st.session_state["train_curves"] if r in options]
    else:
        default = options[:4]  # the newest runs
    shown = st.multiselect("Curves of", options, default=default, key="train_curves")
    runs = [store.get(run_id) for run_id in shown]
    waiting = [run.id for run in runs if run.status().get("state") == "queued"]
    runs = [run for run in runs if run.id not in waiting]  # nothing to draw before a run starts
    if waiting:
        st.caption(f"Not started yet, so no curve: {', '.join(f'`{r}`' for r in waiting)}.")
    if runs:
        left, right = st.columns(2)
        figure = loss_curves(runs, x="step")
        # Half a page is too narrow for the figure's protocol note: it goes below as text.
        note = " ".join(a.text.replace("<br>", " ") for a in figure.layout.annotations)
        figure.layout.annotations = ()  # (update_layout(annotations=[]) leaves them in place)
        figure.update_layout(margin={"b": 40})
        left.plotly_chart(figure, key="train_loss_curves")
        left.caption(note)
        right.plotly_chart(accuracy_curves(runs, title="Test accuracy"), key="train_accuracy_curves")


st.header("Runs")
live_runs()
