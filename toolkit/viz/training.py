"""Live training curves of runs in the run store (read from their metrics files)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from toolkit.runs import Run
from toolkit.viz.embedding import category_colors

AXIS_TITLES = {
    "step": "step",
    "wall_time_s": "training wall-clock (s, warm-up and evaluation excluded)",
    "loss": "training loss",
    "test_accuracy": "test accuracy (averaged weights)",
}


def run_curves(
    runs: Sequence[Run],
    y: str = "loss",
    *,
    x: str = "step",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    height: int = 340,
) -> go.Figure:
    """One line per run: training ``loss`` or ``test_accuracy`` against ``step`` or ``wall_time_s``.

    Loss comes from the runs' training records, accuracy from their evaluations; the fast
    phase (on the subset) is drawn solid and the full-data phase dashed, so the switch shows.
    """
    kind = "eval" if y == "test_accuracy" else "train"
    fig = go.Figure()
    names = list(labels) if labels is not None else [run.id for run in runs]
    for run, name, color in zip(runs, names, category_colors(len(runs)), strict=True):
        frame = run.metrics(kind)
        if frame.empty or y not in frame:
            continue
        fast = frame[frame["phase"] == "fast"]
        full = frame[frame["phase"] == "full"]
        if not fast.empty and not full.empty:
            full = pd.concat([fast.tail(1), full])  # the dashed part continues where the solid one ends
        for part, phase, dash in ((fast, "fast", "solid"), (full, "full", "dash")):
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part[y],
                    mode="lines+markers" if kind == "eval" or len(frame) <= 30 else "lines",
                    line={"color": color, "dash": dash},
                    name=f"{name} ({phase})",
                    legendgroup=name,
                )
            )
    fig.update_layout(
        title=title,
        height=height,
        xaxis_title=AXIS_TITLES.get(x, x),
        yaxis_title=AXIS_TITLES.get(y, y),
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"font": {"size": 10}},
    )
    return fig
