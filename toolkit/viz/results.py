"""Plotly figures of experiment results: the paper's Figs. 5, 6 and 7, drawn from the results table.

Every figure is computed from :func:`toolkit.results.results_table` (or from run
folders, for loss curves) with the statistics of :mod:`toolkit.results`, and states its
protocol on the chart. The CLI's ``sweep`` command and the app's Results page call these
same functions. :func:`save_figure` writes HTML (self-contained, offline) and PNG (plotly's
kaleido, which drives a Chrome/Chromium: Debian's ``chromium`` package works).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from toolkit.artifacts import atomic_write_bytes, atomic_write_text
from toolkit.errors import SampleSiftError, require
from toolkit.results import EQUAL_STEPS, EQUAL_TIME, FULL_DATA, learning_curve, mean_interval, pair_label, run_info
from toolkit.runs import Run

#: Selectors drawn as shaded bands (the baselines every selector is read against).
BASELINES = ("random", "random-balanced")
_FIXED_COLORS = {
    FULL_DATA: "#222222",
    "random": "#7f7f7f",
    "random-balanced": "#b07a3b",
    "topk-activation": "#1f77b4",
}
_PALETTE = ("#d62728", "#2ca02c", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#8c564b", "#ff7f0e")


def selector_colors(selectors: Iterable[str]) -> dict[str, str]:
    """A stable color per selector: fixed ones for the baselines and top-k, a palette for the rest."""
    colors = {}
    others = sorted({s for s in selectors if s not in _FIXED_COLORS})
    for name in selectors:
        colors[name] = _FIXED_COLORS.get(name) or _PALETTE[others.index(name) % len(_PALETTE)]
    return colors


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def split_label(split: float) -> str:
    """``0.9`` -> ``90/10`` (fast/full shares of the run, in percent)."""
    fast = round(100 * float(split), 1)
    return f"{fast:g}/{100 - fast:g}"


#: Pixels between the plot area's bottom and a protocol note: room for tick labels and the x-axis title.
NOTE_OFFSET = 60
#: Pixels per line of a protocol note (11 px font).
NOTE_LINE = 15


def _protocol_note(lines: Sequence[str], offset: int = NOTE_OFFSET) -> dict:
    """A footnote a fixed number of pixels below the plot area, whatever the figure's height
    (a position in paper units drifts into the x-axis title on short figures)."""
    return {
        "text": "<br>".join(lines),
        "xref": "paper",
        "yref": "paper",
        "x": 0,
        "y": 0,
        "yshift": -offset,
        "xanchor": "left",
        "yanchor": "top",
        "showarrow": False,
        "align": "left",
        "font": {"size": 11, "color": "#444"},
    }


def hardware_text(table: pd.DataFrame) -> str | None:
    """Where the runs ran, e.g. ``NVIDIA H200`` or ``NVIDIA H200 and cpu (1 threads)`` (``None``: not recorded)."""
    if "device_name" not in table.columns:
        return None
    names = sorted(str(name) for name in table["device_name"].dropna().unique())
    return " and ".join(names) or None


def stamp_hardware(figure: go.Figure, table: pd.DataFrame) -> go.Figure:
    """Add to ``figure``'s title where the runs it draws ran (a figure mixing devices says so)."""
    where = hardware_text(table)
    if where:
        title = figure.layout.title.text or ""
        figure.update_layout(title={"text": f"{title}<br><sup>runs on {where}</sup>"})
    return figure


def _note_margin(lines: int, offset: int = NOTE_OFFSET) -> int:
    """The bottom margin that holds a note of ``lines`` lines below the axis title."""
    return offset + NOTE_LINE * lines + 15


def _counts(values: Iterable[int], word: str) -> str:
    """``1 seed``, ``3 seeds``, ``2-5 seeds``."""
    unique = sorted({int(v) for v in values})
    if len(unique) == 1:
        return f"{unique[0]} {word}" + ("" if unique[0] == 1 else "s")
    return f"{unique[0]}-{unique[-1]} {word}s"


def by_embedding(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each selector shown as ``embedding:selector`` when its runs use several embeddings.

    With one embedding (or none) the labels stay as they are.
    """
    if "embedding" not in table.columns or table["embedding"].dropna().nunique() < 2:
        return table
    labels = [pair_label(s, e) for s, e in zip(table["selector"], table["embedding"], strict=True)]
    return table.assign(selector=labels)


def accuracy_vs_split(table: pd.DataFrame) -> go.Figure:
    """Fig. 5: test accuracy against the fast/full split under the equal-steps protocol.

    One curve per selector (and per budget and schedule when the table holds several): the
    mean over seeds with the standard deviation as error bars; random and balanced random
    are drawn as shaded mean ± std bands. The 0/100 point is the full-data run, shared by
    every curve. Points of different selectors are nudged sideways so their bars do not
    overlap; hover shows the exact split, mean, std, 95% interval and seeds.
    """
    rows = by_embedding(table[table["protocol"] == EQUAL_STEPS])
    require(not rows.empty, "no finished equal-steps runs to draw (Fig. 5 needs runs with --steps)")
    full = rows[rows["selector"] == FULL_DATA]
    picked = rows[rows["selector"] != FULL_DATA]
    curves = picked.groupby(["selector", "size", "steps_planned", "batch"], dropna=False, sort=True)
    several = curves.ngroups > picked["selector"].nunique()
    colors = selector_colors(sorted(picked["selector"].unique()))
    figure = go.Figure()
    order = [s for s in (*BASELINES, "topk-activation") if s in colors] + [
        s for s in colors if s not in (*BASELINES, "topk-activation")
    ]
    offsets = {s: (i - (len(order) - 1) / 2) * 0.6 for i, s in enumerate(order)}  # percent points on x
    for (selector, size, steps, batch), group in curves:
        shared = full[(full["steps_planned"] == steps) & (full["batch"] == batch)]
        points = pd.concat([shared, group])
        stats = []
        for split, cell in points.groupby("split", sort=True):
            summary = mean_interval(cell["test_accuracy"].to_numpy())
            stats.append((split, summary, sorted(int(s) for s in cell["seed"])))
        splits = np.array([s for s, _, _ in stats])
        mean = np.array([100 * m["mean"] for _, m, _ in stats])
        std = np.nan_to_num(np.array([100 * m["std"] for _, m, _ in stats]))
        name = selector if not several else f"{selector} K={size} ({steps}x{batch})"
        color = colors[selector]
        x = 100 * splits + offsets[selector]
        custom = [
            [split_label(s), m["n"], 100 * m["std"], 100 * m["ci_low"], 100 * m["ci_high"], ",".join(map(str, seeds))]
            for s, m, seeds in stats
        ]
        hover = (
            f"<b>{name}</b><br>split %{{customdata[0]}}<br>accuracy %{{y:.2f}}% ± %{{customdata[2]:.2f}} (std)"
            "<br>95%% interval %{customdata[3]:.2f}-%{customdata[4]:.2f}<br>n=%{customdata[1]} seeds (%{customdata[5]})"
            "<extra></extra>"
        ).replace("%%", "%")
        if selector in BASELINES:
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([mean + std, (mean - std)[::-1]]),
                    fill="toself",
                    mode="lines",
                    fillcolor=_rgba(color, 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                    name=f"{name} band",
                )
            )
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=mean,
                    mode="lines+markers",
                    name=f"{name} (mean ± std band)",
                    legendgroup=name,
                    line={"color": color, "dash": "dash"},
                    customdata=custom,
                    hovertemplate=hover,
                )
            )
        else:
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=mean,
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    line={"color": color},
                    error_y={"type": "data", "array": std, "visible": True, "thickness": 1.2, "width": 4},
                    customdata=custom,
                    hovertemplate=hover,
                )
            )
    all_splits = sorted(rows["split"].unique())
    per_point = rows.groupby(["selector", "size", "split", "steps_planned", "batch"], dropna=False)["seed"].nunique()
    size_text = ", ".join(f"{int(k):,}" for k in sorted(picked["size"].dropna().unique()))
    schedules = ", ".join(
        f"{int(n):,} steps of {int(b):,}"
        for n, b in sorted(set(zip(rows["steps_planned"], rows["batch"], strict=True)))
    )
    figure.update_layout(
        title="Fig. 5 · Test accuracy vs fast/full split (equal steps)",
        xaxis={
            "title": "split: % of steps on the subset / % on the full set",
            "tickvals": [100 * s for s in all_splits],
            "ticktext": [split_label(s) for s in all_splits],
        },
        yaxis={"title": "test accuracy (%), averaged weights"},
        template="plotly_white",
        legend={"orientation": "v", "x": 1.02, "y": 1},
        margin={"b": _note_margin(3), "r": 260},
        annotations=[
            _protocol_note(
                [
                    f"Protocol: equal steps ({schedules}); subset K = {size_text}; the subset first, then the full "
                    "set.",
                    "Test accuracy of the averaged (EMA) weights; mean ± std over "
                    f"{_counts(per_point, 'seed')} per point (n and 95% interval in hover); random baselines as bands.",
                    "0/100 is the full-data run, shared by every curve. Points are nudged sideways for legibility.",
                ]
            )
        ],
    )
    return figure


def _strategy(selector: str, split: float) -> str:
    return "full data" if selector == FULL_DATA else f"{selector} {split_label(split)}"


def time_budget_bars(table: pd.DataFrame) -> go.Figure:
    """Fig. 6: test accuracy after a fixed training-time budget, full data vs subset-first.

    One bar per strategy (full data, or a selector at its split) and budget: the mean over
    seeds with the standard deviation as error bar; each seed's run is a dot on its bar, so
    every run is visible, as in the paper's figure. Hover gives the steps each run reached.
    """
    rows = by_embedding(table[table["protocol"] == EQUAL_TIME]).copy()
    require(not rows.empty, "no finished equal-time runs to draw (Fig. 6 needs runs with --time-budget)")
    rows["strategy"] = [_strategy(s, p) for s, p in zip(rows["selector"], rows["split"], strict=True)]
    strategies = ["full data", *sorted(s for s in rows["strategy"].unique() if s != "full data")]
    strategies = [s for s in strategies if s in set(rows["strategy"])]
    budgets = sorted(rows["time_budget"].unique())
    figure = go.Figure()
    palette = ["#f2b134", "#e8702a", "#6c9a8b", "#4a6fa5"]
    for i, budget in enumerate(budgets):
        at_budget = rows[rows["time_budget"] == budget]
        means, stds, texts = [], [], []
        for strategy in strategies:
            cell = at_budget[at_budget["strategy"] == strategy]
            summary = mean_interval(cell["test_accuracy"].to_numpy())
            means.append(100 * summary["mean"])
            stds.append(100 * summary["std"] if summary["n"] > 1 else 0.0)
            steps = cell["steps"].astype(float).mean() if len(cell) else float("nan")
            texts.append(f"{100 * summary['mean']:.1f}%<br>~{steps:,.0f} steps" if len(cell) else "")
        name = f"{budget:g} s budget"
        figure.add_trace(
            go.Bar(
                x=strategies,
                y=means,
                name=name,
                marker_color=palette[i % len(palette)],
                error_y={"type": "data", "array": stds, "visible": True},
                text=texts,
                textposition="inside",
                offsetgroup=str(i),
                hovertemplate="%{x}<br>mean %{y:.2f}%<extra>" + name + "</extra>",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=at_budget["strategy"],
                y=100 * at_budget["test_accuracy"],
                mode="markers",
                name=f"runs ({name})",
                marker={"color": "#222", "size": 7, "symbol": "circle-open"},
                customdata=np.stack([at_budget["seed"], at_budget["steps"].astype(float)], axis=1),
                hovertemplate="%{x}<br>seed %{customdata[0]}: %{y:.2f}% after %{customdata[1]:.0f} steps"
                "<extra></extra>",
                offsetgroup=str(i),
                showlegend=len(budgets) > 1 or i == 0,
            )
        )
    seeds = rows.groupby("strategy")["seed"].nunique()
    batches = ", ".join(str(int(b)) for b in sorted(rows["batch"].unique()))
    figure.update_layout(
        title=f"Fig. 6 · Test accuracy after a fixed training time ({', '.join(f'{b:g} s' for b in budgets)})",
        xaxis={"title": "strategy (split = % of the time on the subset / on the full set)"},
        yaxis={"title": "test accuracy (%), averaged weights"},
        template="plotly_white",
        barmode="group",
        scattermode="group",
        margin={"b": _note_margin(2, 100)},
        annotations=[
            _protocol_note(
                offset=100,  # the strategy names may be drawn at an angle
                lines=[
                    f"Protocol: equal wall-clock. Each run trains for the budget (batch {batches}); the subset "
                    "phase takes split x budget. Time counts training steps only,",
                    "warm-up and evaluation excluded (the same clock as the equal-steps runs). Bars: mean ± std over "
                    f"{_counts(seeds, 'seed')}; dots: single runs.",
                ],
            )
        ],
    )
    return figure


def _as_runs(runs: pd.DataFrame | Iterable[Run | str | Path]) -> list[Run]:
    if isinstance(runs, pd.DataFrame):
        return [Run(path) for path in runs["path"]]
    return [run if isinstance(run, Run) else Run(run) for run in runs]


def loss_curves(
    runs: pd.DataFrame | Iterable[Run | str | Path], x: Literal["wall_time_s", "step"] = "wall_time_s"
) -> go.Figure:
    """Fig. 7: training loss against training time (or steps), one line per run.

    ``runs`` are :class:`~toolkit.runs.Run` objects, run folder paths, or a results table
    (its ``path`` column). Runs of the same strategy share a color; each run's
    switch from the subset to the full set is marked. Running runs are drawn as far as they got.
    """
    require(x in ("wall_time_s", "step"), f"x must be 'wall_time_s' or 'step', got {x!r}")
    selected = _as_runs(runs)
    require(bool(selected), "no runs to draw loss curves for")
    infos = [run_info(run) for run in selected]
    strategies = [_strategy(i["selector"], i["split"]) for i in infos]
    colors = dict(zip(sorted(set(strategies)), _PALETTE * 4, strict=False))
    colors.update({s: _FIXED_COLORS[FULL_DATA] for s in strategies if s == "full data"})
    figure = go.Figure()
    shown: set[str] = set()
    for run, info, strategy in zip(selected, infos, strategies, strict=True):
        metrics = run.metrics("train")
        if metrics.empty:
            continue
        label = f"{strategy} seed {info['seed']}"
        where = "%{x:.1f} s" if x == "wall_time_s" else "step %{x}"
        figure.add_trace(
            go.Scatter(
                x=metrics[x],
                y=metrics["loss"],
                mode="lines",
                name=strategy,
                legendgroup=strategy,
                showlegend=strategy not in shown,
                line={"color": colors[strategy], "width": 1.5},
                customdata=metrics[["phase"]],
                hovertemplate=f"{label}<br>{where}, %{{customdata[0]}} phase<br>loss %{{y:.3f}}<extra></extra>",
            )
        )
        shown.add(strategy)
        switch = metrics[metrics["phase"] == "full"].head(1)
        if info["split"] > 0 and not switch.empty and (metrics["phase"] == "fast").any():
            figure.add_trace(
                go.Scatter(
                    x=switch[x],
                    y=switch["loss"],
                    mode="markers",
                    marker={"color": colors[strategy], "symbol": "diamond", "size": 9},
                    name="subset -> full data",
                    legendgroup="switch",
                    showlegend="switch" not in shown,
                    hovertemplate=f"{label}: switch to the full set at {where}<extra></extra>",
                )
            )
            shown.add("switch")
    budgets = sorted({i["time_budget"] for i in infos if i["time_budget"] is not None})
    protocol = (
        f"equal wall-clock ({', '.join(f'{b:g} s' for b in budgets)})"
        if budgets and all(i["time_budget"] is not None for i in infos)
        else "mixed"
        if budgets
        else "equal steps"
    )
    figure.update_layout(
        title="Fig. 7 · Training loss vs " + ("training time" if x == "wall_time_s" else "steps"),
        xaxis={"title": "training time (s), warm-up and evaluation excluded" if x == "wall_time_s" else "step"},
        yaxis={"title": "training loss (mean over the logging interval)"},
        template="plotly_white",
        margin={"b": _note_margin(2)},
        annotations=[
            _protocol_note(
                [
                    f"Protocol: {protocol}; {len(selected)} run{'' if len(selected) == 1 else 's'}, one line each; "
                    "a diamond marks the switch "
                    "from the subset to the full set.",
                    "The loss is on the batches being trained (subset batches in the fast phase), not on "
                    "held-out data.",
                ]
            )
        ],
    )
    return figure


def _schedule_text(rows: pd.DataFrame) -> str:
    pairs = sorted({(int(n), int(b)) for n, b in zip(rows["steps_planned"], rows["batch"], strict=True) if pd.notna(n)})
    return ", ".join(f"{n:,} steps of {b:,}" for n, b in pairs) or "none"


def _seed_text(seeds: Iterable[str]) -> str:
    """``0,1,2`` / ``0,1,2,3,4``: the distinct seed lists of the points drawn."""
    return "; ".join(sorted({s for s in seeds if s}, key=lambda s: (len(s), s))) or "none"


def learning_curve_figure(
    table: pd.DataFrame, pair: tuple[str, str | None] | None = None, *, split: float = 1.0
) -> go.Figure:
    """Test accuracy against the subset budget K at ``split`` (100/0 by default), equal steps.

    Curves: the pair with the highest mean paired difference to random-balanced (or
    ``pair``), random-balanced and random, each point the mean over seeds with its 95%
    interval as error bar; the full-data run (same steps, no subset) is a horizontal line
    with its interval as a band. Computed by :func:`toolkit.results.learning_curve`.
    """
    curve = learning_curve(table, pair, split=split)
    subsets = curve[curve["selector"] != FULL_DATA]
    require(
        not subsets.empty,
        f"no finished equal-steps runs at split {split_label(split)} to draw a learning curve (it needs runs with "
        "--steps at several --sizes)",
    )
    series = list(dict.fromkeys(subsets["series"]))
    colors = selector_colors(series)
    figure = go.Figure()
    sizes = sorted(int(k) for k in subsets["size"].dropna().unique())
    full = curve[curve["selector"] == FULL_DATA]
    for row in full.itertuples(index=False):
        x = [min(sizes), max(sizes)] if len(sizes) > 1 else [sizes[0] * 0.9, sizes[0] * 1.1]
        color = _FIXED_COLORS[FULL_DATA]
        label = f"full data ({int(row.steps_planned):,} steps of {int(row.batch):,})"
        if row.n > 1:
            figure.add_trace(
                go.Scatter(
                    x=[*x, *x[::-1]],
                    y=[100 * row.ci_high] * 2 + [100 * row.ci_low] * 2,
                    fill="toself",
                    mode="lines",
                    line={"width": 0},
                    fillcolor=_rgba(color, 0.12),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=label,
                )
            )
        figure.add_trace(
            go.Scatter(
                x=x,
                y=[100 * row.mean] * 2,
                mode="lines",
                name=f"{label} (95% band)",
                legendgroup=label,
                line={"color": color, "dash": "dot"},
                hovertemplate=f"full data: %{{y:.2f}}% (n={row.n} seeds: {row.seeds})<extra></extra>",
            )
        )
    for name in series:
        points = subsets[subsets["series"] == name].sort_values("size")
        upper = np.nan_to_num(100 * (points["ci_high"] - points["mean"]).to_numpy(dtype=float))
        lower = np.nan_to_num(100 * (points["mean"] - points["ci_low"]).to_numpy(dtype=float))
        figure.add_trace(
            go.Scatter(
                x=points["size"].astype(int),
                y=100 * points["mean"],
                mode="lines+markers",
                name=name,
                line={"color": colors[name], "dash": "dash" if name in BASELINES else "solid"},
                error_y={"type": "data", "array": upper, "arrayminus": lower, "visible": True, "width": 4},
                customdata=np.stack([points["n"], points["seeds"]], axis=1),
                hovertemplate=f"<b>{name}</b><br>K=%{{x:,}}: %{{y:.2f}}%<br>n=%{{customdata[0]}} seeds "
                "(%{customdata[1]})<extra></extra>",
            )
        )
    figure.update_layout(
        title=f"Test accuracy vs subset budget K at {split_label(split)} (equal steps)",
        xaxis={
            "title": "subset budget K (samples)",
            "type": "log",
            "tickvals": sizes,
            "ticktext": [f"{k:,}" for k in sizes],
        },
        yaxis={"title": "test accuracy (%), averaged weights"},
        template="plotly_white",
        legend={"orientation": "v", "x": 1.02, "y": 1},
        margin={"b": 150, "r": 280},
        annotations=[
            _protocol_note(
                [
                    f"Protocol: equal steps ({_schedule_text(curve)}); split {split_label(split)} (subset first); "
                    f"seeds per point: {_seed_text(curve['seeds'])}.",
                    "Mean over seeds; error bars and band: 95% Student-t interval of the mean (none with one seed). "
                    "Full data: the same steps on all images.",
                    "The pair drawn is the one with the highest mean paired difference to random-balanced at this "
                    "split (over K), read from the same runs.",
                ]
            )
        ],
    )
    return figure


def gain_figure(paired: pd.DataFrame, *, split: float | None = 1.0) -> go.Figure:
    """ "Gain over random": each pair's mean paired difference to the baseline, with its 95% interval.

    One row per pair (``embedding:selector``), one marker per K (and split, when ``split`` is
    ``None``), from :func:`toolkit.results.paired_differences`; a line at zero. A whole
    interval right of zero means the pair beats the baseline at that confidence.
    """
    rows = paired[paired["n"] > 0]
    if split is not None:
        rows = rows[rows["split"] == split]
    require(
        not rows.empty, "no paired runs to draw the gain over random (it needs random-balanced runs of the same seeds)"
    )
    embedding = rows["embedding"] if "embedding" in rows.columns else pd.Series(None, index=rows.index, dtype=object)
    rows = rows.assign(pair=[pair_label(s, e) for s, e in zip(rows["selector"], embedding, strict=True)])
    order = rows.groupby("pair")["mean_diff"].mean().sort_values().index.tolist()
    figure = go.Figure()
    groups = rows.groupby(["size", "split"], sort=True)
    for i, ((size, cell_split), group) in enumerate(groups):
        group = group.set_index("pair").reindex(order).dropna(subset=["mean_diff"])
        label = f"K={int(size):,}" + ("" if split is not None else f" at {split_label(cell_split)}")
        offset = (i - (groups.ngroups - 1) / 2) * 0.15
        figure.add_trace(
            go.Scatter(
                x=100 * group["mean_diff"],
                y=[order.index(p) + offset for p in group.index],
                mode="markers",
                name=label,
                marker={"size": 9, "color": _PALETTE[i % len(_PALETTE)]},
                error_x={
                    "type": "data",
                    "array": np.nan_to_num(100 * (group["ci_high"] - group["mean_diff"]).to_numpy(dtype=float)),
                    "arrayminus": np.nan_to_num(100 * (group["mean_diff"] - group["ci_low"]).to_numpy(dtype=float)),
                    "visible": True,
                },
                customdata=np.stack([group.index, group["n"], group["seeds"]], axis=1),
                hovertemplate=f"%{{customdata[0]}} {label}: %{{x:+.2f}} points<br>n=%{{customdata[1]}} pairs "
                "(seeds %{customdata[2]})<extra></extra>",
            )
        )
    figure.add_vline(x=0, line={"color": "#444", "width": 1})
    baseline = str(rows["baseline"].iloc[0])
    figure.update_layout(
        title=f"Gain over {baseline}"
        + ("" if split is None else f" at {split_label(split)}")
        + " (mean paired difference, 95% interval)",
        xaxis={"title": f"test accuracy minus {baseline}'s, same seed (percentage points)"},
        yaxis={"tickvals": list(range(len(order))), "ticktext": order, "title": ""},
        template="plotly_white",
        height=max(400, 40 * len(order) + 200),
        margin={"b": _note_margin(3), "l": 220},
        annotations=[
            _protocol_note(
                [
                    f"Protocol: equal steps ({_schedule_text(rows)}); each pair's run minus {baseline}'s run of the "
                    "same seed, K, split and schedule;",
                    f"seeds: {_seed_text(rows['seeds'])}.",
                    "Markers: mean paired difference; bars: 95% Student-t interval (none with one pair). "
                    f"Right of zero: better than {baseline}.",
                ]
            )
        ],
    )
    return figure


def save_figure(
    figure: go.Figure,
    stem: str | Path,
    *,
    formats: Sequence[str] = ("html", "png"),
    width: int = 1000,
    height: int = 600,
    scale: float = 1.0,
) -> list[Path]:
    """Write ``figure`` as ``<stem>.html`` (self-contained) and/or ``<stem>.png``; return the paths.

    PNG needs plotly's ``kaleido`` package and a Chrome or Chromium (Debian: ``apt-get
    install chromium``); a missing one is a clear error. Files are written atomically.
    """
    stem = Path(stem)
    written = []
    for kind in formats:
        require(kind in ("html", "png"), f"unknown figure format {kind!r}; use html or png")
        path = stem.with_suffix(f".{kind}")
        if kind == "html":
            written.append(atomic_write_text(path, figure.to_html(include_plotlyjs=True, full_html=True)))
            continue
        written.append(atomic_write_bytes(path, render_png(figure, width=width, height=height, scale=scale)))
    return written


# Rendered in a child process: kaleido drives Chromium from an asyncio loop, and inside a
# process that already runs one (Jupyter, Streamlit, a Playwright session) it can wait forever.
_RENDER_PNG = """
import sys
import plotly.io as pio
import kaleido  # noqa: F401
figure = pio.from_json(sys.stdin.read())
width, height, scale = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sys.stdout.buffer.write(figure.to_image(format="png", width=width, height=height, scale=scale))
"""


def render_png(
    figure: go.Figure, *, width: int = 1000, height: int = 600, scale: float = 1.0, timeout_s: float = 180
) -> bytes:
    """``figure`` as PNG bytes, rendered by plotly's kaleido in a fresh Python process.

    Needs the ``kaleido`` package and a Chrome or Chromium; either missing, or a render that
    does not finish within ``timeout_s``, is a clear :class:`SampleSiftError`.
    """
    command = [sys.executable, "-c", _RENDER_PNG, str(width), str(height), str(scale)]
    try:
        done = subprocess.run(command, input=figure.to_json().encode(), capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SampleSiftError(
            f"PNG rendering did not finish in {timeout_s:g} s; write HTML only (--no-png) or check Chromium"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}"
        if "No module named 'kaleido'" in last:
            raise SampleSiftError(
                "PNG figures need the kaleido package: `pip install kaleido` (or write HTML only with --no-png)"
            )
        raise SampleSiftError(
            f"could not render a PNG ({last}); PNG export needs a Chrome or Chromium (Debian: `apt-get install "
            "chromium`), or write HTML only with --no-png"
        )
    return done.stdout
