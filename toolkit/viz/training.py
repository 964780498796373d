"""Live test-accuracy curves of runs in the run store (read from their evaluation records).

Training-loss curves are :func:`toolkit.viz.results.loss_curves` (the paper's Fig. 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import plotly.graph_objects as go

from toolkit.runs import Run
from toolkit.viz.embedding import category_colors

X_TITLES = {"step": "step", "wall_time_s": "training wall-clock (s, warm-up and evaluation excluded)"}


def accuracy_curves(
    runs: Sequence[Run],
    *,
    x: Literal["step", "wall_time_s"] = "step",
    title: str | None = None,
    height: int = 340,
) -> go.Figure:
    """One line per run: test accuracy (averaged weights) at each evaluation, against steps or time.

    The fast phase (on the subset) is solid and the full-data phase dashed, continuing from
    the last fast-phase evaluation, so the switch shows. Runs still training are drawn as
    far as they got.
    """
    fig = go.Figure()
    for run, color in zip(runs, category_colors(len(runs)), strict=True):
        frame = run.metrics("eval")
        if frame.empty:
            continue
        fast = frame[frame["phase"] == "fast"]
        full = frame[frame["phase"] == "full"]
        if not fast.empty and not full.empty:
            full = pd.concat([fast.tail(1), full])
        for part, phase, dash in ((fast, "fast", "solid"), (full, "full", "dash")):
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part["test_accuracy"],
                    mode="lines+markers",
                    line={"color": color, "dash": dash},
                    name=f"{run.id} ({phase})",
                    legendgroup=run.id,
                )
            )
    fig.update_layout(
        title=title,
        height=height,
        xaxis_title=X_TITLES[x],
        yaxis_title="test accuracy (averaged weights)",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"font": {"size": 10}},
    )
    return fig
