"""Results tables and statistics: one row per finished training run, and honest numbers over seeds.

:func:`results_table` is the one table everything is drawn from (the CLI writes it as CSV and
Parquet; the app's Results page and :mod:`toolkit.viz.results` read it). :func:`run_info`
says what a run is from its config alone; :func:`config_key` is the identity of a run's
configuration, by which sweeps (:mod:`toolkit.experiments`) match planned runs against the
run store and the table keeps one row per configuration.

Statistics: :func:`summarize` gives n, mean, standard deviation and a 95% Student-t
interval over seeds for every cell; :func:`paired_differences` pairs each selector's runs
with a baseline's (random, by default) by seed and gives the interval of the mean paired
difference; :func:`time_to_target` reads each run's evaluations for the steps and seconds
it took to reach a target accuracy, and :func:`time_to_accuracy` races every configuration to
what the full-data run reaches half-way (the paper's "faster training" claim).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.artifacts import atomic_write_bytes, fingerprint_bytes, to_jsonable
from toolkit.errors import SampleSiftError, require
from toolkit.runs import Run, RunStore
from toolkit.train import TrainConfig
from toolkit.workspace import Workspace

EQUAL_STEPS = "equal-steps"
EQUAL_TIME = "equal-time"
FULL_DATA = "full-data"
#: Columns that identify a cell of a results table (everything but the seed). ``embedding`` is
#: the embedding the selection was made on (empty for rules that use none, and at split 0).
CELL_COLUMNS = [
    "dataset",
    "protocol",
    "selector",
    "embedding",
    "size",
    "split",
    "steps_planned",
    "time_budget",
    "batch",
]

#: Columns a results table takes from each run's summary.json.
_SUMMARY_COLUMNS = (
    "steps",
    "steps_fast",
    "test_accuracy",
    "test_accuracy_raw",
    "test_loss",
    "final_train_loss",
    "wall_time_s",
    "images_seen",
    "images_per_s",
    "warmup_time_s",
    "eval_time_s",
    "device",
    "device_name",
)

#: Columns of :func:`results_table`, in order.
RESULT_COLUMNS = [
    "run_id",
    "dataset",
    "protocol",
    "selector",
    "method",
    "balanced",
    "selection",
    "embedding",
    "size",
    "split",
    "seed",
    "steps_planned",
    "time_budget",
    "batch",
    "norm",
    *_SUMMARY_COLUMNS,
    "config_key",
    "finished",
    "path",
]


# --------------------------------------------------------------------------- configuration keys


def selector_label(method: str | None, balanced: bool, split: float) -> str:
    """How a run's selector is shown: ``full-data`` at split 0, else the method (``+balanced``)."""
    if float(split) == 0.0 or method is None:
        return FULL_DATA
    return f"{method}+balanced" if balanced and method != "random-balanced" else method


def config_key(dataset_fingerprint: str, selection_name: str | None, train: dict[str, Any]) -> str:
    """The identity of a run's configuration: same key, same experiment.

    Selections made by a sweep are named by a hash of their recipe (method, parameters,
    budget, balance, seed, embedding), so the name stands for the recipe.
    """
    normalized = TrainConfig.from_dict(train).to_dict()
    payload = {"dataset": dataset_fingerprint, "selection": selection_name, "train": normalized}
    return fingerprint_bytes(json.dumps(to_jsonable(payload), sort_keys=True))[:20]


def run_config_key(run: Run) -> str | None:
    """:func:`config_key` of a recorded training run (``None`` for other kinds of runs)."""
    config = run.config
    if config.get("kind") != "train":
        return None
    selection = config.get("selection") or {}
    return config_key(config["dataset"]["fingerprint"], selection.get("name"), config["train"])


# --------------------------------------------------------------------------- the results table


def run_info(run: Run) -> dict[str, Any]:
    """What a training run is, from its config alone (usable while it is still running)."""
    config = run.config
    train = config["train"]
    selection = config.get("selection") or {}
    split = float(train["split"])
    balanced = bool(selection.get("balanced", False))
    method = selection.get("method")
    return {
        "run_id": run.id,
        "dataset": config["dataset"]["key"],
        "protocol": EQUAL_STEPS if train.get("time_budget") is None else EQUAL_TIME,
        "selector": selector_label(method, balanced, split),
        "method": method,
        "balanced": balanced,
        "selection": selection.get("name"),
        "embedding": _embedding_name(selection) if split > 0 else None,
        "size": selection.get("size") if split > 0 else None,
        "split": split,
        "seed": int(train["seed"]),
        "steps_planned": train.get("steps"),
        "time_budget": train.get("time_budget"),
        "batch": int(train["batch"]),
        "norm": train.get("norm"),
        "config_key": run_config_key(run),
        "path": str(run.path),
    }


def _embedding_name(selection: dict[str, Any]) -> str | None:
    """The name of the embedding a run's selection was made on (``None`` for rules that use none).

    Runs recorded before the name was kept in the run's config have only the fingerprint:
    the name is then read from the selection's manifest, when it is still there.
    """
    if selection.get("embedding") is not None or not selection.get("embedding_fingerprint"):
        return selection.get("embedding")
    try:
        manifest = json.loads(Path(str(selection.get("path"))).read_text())
        return (manifest.get("embedding") or {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def _run_row(run: Run) -> dict[str, Any] | None:
    """One results-table row for a finished training run, else ``None``."""
    try:
        if run.config.get("kind") != "train":
            return None
        status = run.status()
        summary = run.summary() if status.get("state") == "finished" else None
        if not summary:
            return None
        info = run_info(run)
    except (SampleSiftError, KeyError):
        return None
    return {**info, **{c: summary.get(c) for c in _SUMMARY_COLUMNS}, "finished": status.get("updated")}


def _table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=RESULT_COLUMNS)
    frame["embedding"] = frame["embedding"].astype(object)
    for column in ("size", "steps_planned", "steps", "steps_fast", "images_seen"):
        frame[column] = frame[column].astype("Int64")
    for column in ("split", "time_budget", "test_accuracy", "wall_time_s"):
        frame[column] = frame[column].astype("float64")
    return frame


def results_table(workspace: Workspace | str | Path | None = None, dataset: str | None = None) -> pd.DataFrame:
    """One row per finished training run (see :data:`RESULT_COLUMNS`), optionally for one data set key.

    ``protocol`` is ``equal-steps`` or ``equal-time``; ``selector`` is the method (with
    ``+balanced``) or ``full-data`` at split 0; ``steps_planned`` is the configured step
    count (empty for equal-time runs, whose achieved ``steps`` vary with the machine);
    ``test_accuracy`` is that of the averaged weights; ``wall_time_s`` counts training
    steps only (warm-up and evaluation excluded). When one configuration was run more than
    once, only its latest finished run is kept, so statistics never count a seed twice.
    """
    rows = [row for run in RunStore(workspace) if (row := _run_row(run)) is not None]
    if dataset is not None:
        rows = [row for row in rows if row["dataset"] == dataset]
    frame = _table(rows)
    frame = frame.sort_values("finished", kind="stable").drop_duplicates("config_key", keep="last")
    return frame.sort_values(["protocol", "selector", "split", "seed"], kind="stable").reset_index(drop=True)


def write_table(table: pd.DataFrame, folder: str | Path, stem: str = "results") -> list[Path]:
    """Write a results table as CSV and Parquet (atomically); return the paths."""
    folder = Path(folder)
    csv = atomic_write_bytes(folder / f"{stem}.csv", table.to_csv(index=False).encode("utf-8"))
    parquet = atomic_write_bytes(folder / f"{stem}.parquet", table.to_parquet(index=False))
    return [csv, parquet]


# --------------------------------------------------------------------------- statistics


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation (n - 1) and a Student-t confidence interval of the mean.

    With one value the spread and interval are NaN: one seed says nothing about spread.
    """
    from scipy import stats

    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    n = len(data)
    mean = float(data.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def _present(columns: Sequence[str], table: pd.DataFrame) -> list[str]:
    """``columns`` without ``embedding`` when ``table`` has no such column (tables made by hand)."""
    return [c for c in columns if c != "embedding" or c in table.columns]


def summarize(table: pd.DataFrame, value: str = "test_accuracy", by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per cell (all columns of ``by``, default :data:`CELL_COLUMNS`; seeds pooled): n, mean, std,
    95% interval, min and max of ``value``."""
    by = _present(CELL_COLUMNS, table) if by is None else list(by)
    rows = []
    for cell, group in table.groupby(list(by), dropna=False, sort=True):
        values = group[value].to_numpy(dtype=np.float64)
        rows.append(
            {
                **dict(zip(by, cell, strict=True)),
                **mean_interval(values),
                "min": float(np.nanmin(values)),
                "max": float(np.nanmax(values)),
                "seeds": ",".join(str(s) for s in sorted(group["seed"])),
            }
        )
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "ci_low", "ci_high", "min", "max", "seeds"])


#: Columns that pair a selector's run with the baseline's run of the same seed: the cell without the selector.
PAIR_COLUMNS = [c for c in CELL_COLUMNS if c != "selector"]
#: Columns of :func:`paired_differences` after its pairing columns.
PAIRED_COLUMNS = [
    "selector",
    "baseline",
    "n",
    "mean",
    "baseline_mean",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "ci_above_zero",
    "seeds",
    "unmatched_seeds",
]


def paired_differences(
    table: pd.DataFrame,
    baseline: str = "random-balanced",
    *,
    value: str = "test_accuracy",
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Does each selector beat ``baseline``? Per cell, the selector minus the baseline, paired by seed.

    A selector's run is paired with the baseline's run of the same seed in the same cell: the
    same values of every ``by`` column, by default :data:`PAIR_COLUMNS` (data set, protocol,
    embedding, subset size K, split and schedule; ``embedding`` only when the table has that
    column); a baseline run with no embedding (random rules use none) is then the partner of
    the same seed's run in every embedding's cell. Seeds without a partner (or with a missing
    value) are never paired: they are listed in ``unmatched_seeds`` and ``n`` counts the
    matched pairs only. The interval is the Student-t interval (``confidence``, 95% by
    default) of the mean paired difference; with fewer than two pairs it is NaN.
    ``ci_above_zero`` is True only when the whole interval is above zero: for test
    accuracy, the selector beats the baseline at that confidence.

    Full-data runs (split 0) have no subset, so they are neither compared nor a baseline. Two
    runs of one selector in one cell with the same seed (say, different selector parameters)
    cannot be paired unambiguously: that is an error; filter the table first, or add the
    column that tells them apart to ``by``.

    Returns one row per selector and cell: the ``by`` columns, then :data:`PAIRED_COLUMNS`:
    ``n`` pairs, ``mean`` and ``baseline_mean`` (over the paired seeds), ``mean_diff`` and
    ``std_diff`` (sample standard deviation, n - 1) of the differences, ``ci_low``,
    ``ci_high``, ``ci_above_zero``, and the paired and unmatched seeds as comma-separated
    text, so the table prints and saves as CSV as it is.
    """
    if by is None:
        by = _present(PAIR_COLUMNS, table)
    by = list(by)
    require(
        "selector" not in by and "seed" not in by,
        f"by names the cell apart from the selector and the seed (they are paired on), got {by}",
    )
    missing = [c for c in (*by, "selector", "seed", value) if c not in table.columns]
    require(not missing, f"the results table has no column(s) {missing}")
    require(baseline != FULL_DATA, "full-data runs have no subset to pair with; choose a selector as the baseline")
    keys = [*by, "seed"]
    rows = table[table["selector"] != FULL_DATA]
    repeated = rows[rows.duplicated(["selector", *keys], keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0]
        raise SampleSiftError(
            f"{len(repeated)} runs share their selector, cell and seed with another run (e.g. {first['selector']} "
            f"seed {first['seed']}), so they cannot be paired: filter the table, or add the column that tells them "
            "apart to by"
        )
    partners = rows.loc[rows["selector"] == baseline, [*keys, value]].rename(columns={value: "_baseline"})
    # A baseline run without an embedding (random) is the partner of every embedding's run.
    shared = partners.iloc[:0]
    if "embedding" in by:
        shared = partners[partners["embedding"].isna()].drop(columns="embedding")
        partners = partners[partners["embedding"].notna()]
    out = []
    for cell, group in rows[rows["selector"] != baseline].groupby(["selector", *by], dropna=False, sort=True):
        merged = group[[*keys, value]].sort_values("seed", kind="stable").merge(partners, on=keys, how="left")
        theirs = merged["_baseline"].to_numpy(dtype=np.float64)
        if not shared.empty:
            common = [k for k in keys if k != "embedding"]
            fallback = merged[common].merge(shared, on=common, how="left")["_baseline"].to_numpy(dtype=np.float64)
            theirs = np.where(np.isfinite(theirs), theirs, fallback)
        ours = merged[value].to_numpy(dtype=np.float64)
        paired = np.isfinite(ours) & np.isfinite(theirs)
        stats = mean_interval(ours[paired] - theirs[paired], confidence)
        seeds = merged["seed"].to_numpy()
        out.append(
            {
                **dict(zip(by, cell[1:], strict=True)),
                "selector": cell[0],
                "baseline": baseline,
                "n": stats["n"],
                "mean": float(ours[paired].mean()) if paired.any() else math.nan,
                "baseline_mean": float(theirs[paired].mean()) if paired.any() else math.nan,
                "mean_diff": stats["mean"],
                "std_diff": stats["std"],
                "ci_low": stats["ci_low"],
                "ci_high": stats["ci_high"],
                "ci_above_zero": bool(stats["ci_low"] > 0),  # False when NaN (fewer than two pairs)
                "seeds": ",".join(str(s) for s in seeds[paired]),
                "unmatched_seeds": ",".join(str(s) for s in seeds[~paired]),
            }
        )
    frame = pd.DataFrame(out, columns=[*by, *PAIRED_COLUMNS])
    for column in by:
        frame[column] = frame[column].astype(table[column].dtype)
    frame["n"] = frame["n"].astype("int64")
    frame["ci_above_zero"] = frame["ci_above_zero"].astype(bool)
    return frame


def time_to_target(table: pd.DataFrame, target: float) -> pd.DataFrame:
    """Steps and training seconds each run took to first reach ``target`` test accuracy.

    Read from the run's evaluations (averaged weights), so the resolution is the spacing of
    its evaluations; a run that never reached the target gets NaN. ``target`` is a fraction
    (0.4 for 40%).
    """
    rows = []
    for row in table.itertuples(index=False):
        evals = Run(row.path).metrics("eval")
        reached = evals[evals["test_accuracy"] >= target] if not evals.empty else evals
        first = reached.iloc[0] if len(reached) else None
        rows.append(
            {
                "run_id": row.run_id,
                **{c: getattr(row, c, None) for c in CELL_COLUMNS},
                "seed": row.seed,
                "target": target,
                "steps_to_target": None if first is None else int(first["step"]),
                "seconds_to_target": math.nan if first is None else float(first["wall_time_s"]),
                "evaluations": len(evals),
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["steps_to_target"] = frame["steps_to_target"].astype("Int64")
    return frame


#: Columns of :func:`time_to_accuracy`.
SPEED_COLUMNS = ["series", "selector", "embedding", "size", "split", "steps_planned", "batch", "target", "runs"]
SPEED_COLUMNS += ["reached", "mean_steps", "full_data_steps", "step_ratio", "seeds"]


def _accuracy_at(run_path: str, step: float) -> float:
    """A run's test accuracy at its last evaluation at or before ``step`` (NaN when it has none)."""
    evals = Run(run_path).metrics("eval")
    if evals.empty:
        return math.nan
    before = evals[evals["step"] <= step]
    return float(before["test_accuracy"].iloc[-1]) if len(before) else math.nan


def time_to_accuracy(table: pd.DataFrame, fraction: float = 0.5) -> pd.DataFrame:
    """The paper's "faster training" view: the steps each configuration needs to reach a full-data target.

    Per equal-steps schedule (planned steps and batch) with finished full-data runs, the
    target is the full-data runs' mean test accuracy ``fraction`` of the way through (their
    last evaluation at or before that step; half-way by default). Every run of the schedule
    is then read for the first evaluation at or above the target (:func:`time_to_target`),
    and each series (selector, embedding, K, split) gets: its runs, how many ``reached``
    the target, the ``mean_steps`` of those that did, and ``step_ratio``, that mean over the
    full-data runs' own mean steps to the target (below 1: subset first got there sooner
    than training on everything). Resolution is the spacing of the evaluations, so runs need
    ``--evals`` (the cpu-converged final grid evaluates every 250 steps).

    Raises :class:`SampleSiftError` naming what is missing when no schedule has full-data
    runs evaluated by the target step. Columns :data:`SPEED_COLUMNS`.
    """
    require(0 < fraction <= 1, f"fraction is the share of the full-data run's steps, in (0, 1]; got {fraction}")
    rows = table[(table["protocol"] == EQUAL_STEPS) & table["steps_planned"].notna()]
    out = []
    for (steps, batch), schedule in rows.groupby(["steps_planned", "batch"], sort=True):
        full = schedule[schedule["selector"] == FULL_DATA]
        at = [_accuracy_at(path, fraction * float(steps)) for path in full["path"]]
        if not np.isfinite(at).any():
            continue
        target = float(np.nanmean(at))
        reached = time_to_target(schedule, target)
        full_steps = reached.loc[reached["selector"] == FULL_DATA, "steps_to_target"].astype("float64").mean()
        keys = ["selector", "embedding", "size", "split"]
        for cell, group in reached.groupby(keys, dropna=False, sort=True):
            took = group["steps_to_target"].astype("float64")
            mean_steps = float(took.mean()) if took.notna().any() else math.nan
            out.append(
                {
                    "series": pair_label(cell[0], cell[1]),
                    **dict(zip(keys, cell, strict=True)),
                    "steps_planned": steps,
                    "batch": batch,
                    "target": target,
                    "runs": len(group),
                    "reached": int(took.notna().sum()),
                    "mean_steps": mean_steps,
                    "full_data_steps": float(full_steps),
                    "step_ratio": mean_steps / full_steps if full_steps > 0 else math.nan,
                    "seeds": ",".join(str(s) for s in sorted(group["seed"])),
                }
            )
    require(
        bool(out),
        f"no full-data run with an evaluation {100 * fraction:g}% of the way through its steps, so there is no "
        "target to race to: run the full-data configuration (split 0) with --evals, next to the subset runs",
    )
    frame = pd.DataFrame(out, columns=SPEED_COLUMNS)
    frame["size"] = frame["size"].astype("Int64")
    return frame.sort_values(["steps_planned", "batch", "step_ratio"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- does it beat random?

#: The baselines every pair is read against: they use no embedding.
RANDOM_BASELINES = ("random", "random-balanced")
#: Columns of :func:`learning_curve`.
CURVE_COLUMNS = ["series", "selector", "embedding", "steps_planned", "batch", "size", "n", "mean", "std"]
CURVE_COLUMNS += ["ci_low", "ci_high", "seeds"]


def pair_label(selector: str, embedding: Any = None) -> str:
    """``embedding:selector`` for a rule run on an embedding, else the selector alone."""
    return selector if embedding is None or embedding != embedding or embedding == "" else f"{embedding}:{selector}"


def best_pair(paired: pd.DataFrame, split: float = 1.0) -> tuple[str, str | None] | None:
    """The (selector, embedding) with the highest mean paired difference at ``split``, averaged over K.

    Read from :func:`paired_differences` (equal-steps cells only); the random baselines and
    cells without a pair are left out. ``None`` when nothing is left.
    """
    rows = paired[(paired["split"] == split) & (paired["n"] > 0) & ~paired["selector"].isin(RANDOM_BASELINES)]
    if "protocol" in rows.columns:
        rows = rows[rows["protocol"] == EQUAL_STEPS]
    if rows.empty:
        return None
    embedding = rows["embedding"] if "embedding" in rows.columns else pd.Series(None, index=rows.index)
    keyed = rows.assign(_embedding=embedding.astype(object).where(embedding.notna(), ""))
    means = keyed.groupby(["selector", "_embedding"], sort=True)["mean_diff"].mean()
    selector, embedding_name = means.idxmax()  # the first of equal means, in sorted order
    return str(selector), (str(embedding_name) or None)


def learning_curve(
    table: pd.DataFrame,
    pair: tuple[str, str | None] | None = None,
    *,
    split: float = 1.0,
    baselines: Sequence[str] = RANDOM_BASELINES,
) -> pd.DataFrame:
    """Test accuracy against the budget K at ``split`` (equal steps), per series, over seeds.

    Series: the ``pair`` (selector, embedding; default the :func:`best_pair` against
    random-balanced), each of ``baselines``, and the full-data run (one point per schedule,
    ``size`` empty: it uses no subset). Each point is the mean over seeds with its standard
    deviation and 95% Student-t interval (:func:`mean_interval`); columns :data:`CURVE_COLUMNS`.
    """
    rows = table[table["protocol"] == EQUAL_STEPS]
    if pair is None and not rows.empty:
        pair = best_pair(paired_differences(rows), split)
    embedding = rows["embedding"] if "embedding" in rows.columns else pd.Series(None, index=rows.index, dtype=object)
    wanted = [(b, None) for b in baselines] + ([pair] if pair is not None else [])
    out = []
    for selector, on in [*wanted, (FULL_DATA, None)]:
        if selector == FULL_DATA:
            picked = rows[rows["selector"] == FULL_DATA]
        else:
            picked = rows[(rows["selector"] == selector) & (rows["split"] == split)]
            if on is not None:
                picked = picked[embedding.loc[picked.index] == on]
        for (steps, batch, size), group in picked.groupby(["steps_planned", "batch", "size"], dropna=False, sort=True):
            stats = mean_interval(group["test_accuracy"].to_numpy(dtype=np.float64))
            out.append(
                {
                    "series": pair_label(selector, on),
                    "selector": selector,
                    "embedding": on,
                    "steps_planned": steps,
                    "batch": batch,
                    "size": size,
                    **stats,
                    "seeds": ",".join(str(s) for s in sorted(group["seed"])),
                }
            )
    frame = pd.DataFrame(out, columns=CURVE_COLUMNS)
    frame["size"] = frame["size"].astype("Int64")
    frame["n"] = frame["n"].astype("int64")
    return frame


def gain_table(paired: pd.DataFrame, split: float | None = None) -> pd.DataFrame:
    """The "gain over random" table: one row per pair, one column per split and K.

    Each cell reads ``+1.23 [-0.40, +2.86] n=3``: the mean paired difference to the
    baseline in percentage points with its 95% interval and the number of paired seeds
    (``*`` marks an interval entirely above zero). Rows are sorted by their mean gain
    (``mean_gain``, points, over the cells shown). Equal-steps cells only.
    """
    rows = paired[paired["n"] > 0]
    if "protocol" in rows.columns:
        rows = rows[rows["protocol"] == EQUAL_STEPS]
    if split is not None:
        rows = rows[rows["split"] == split]
    if rows.empty:
        return pd.DataFrame(columns=["pair", "mean_gain"])
    embedding = rows["embedding"] if "embedding" in rows.columns else pd.Series(None, index=rows.index, dtype=object)
    rows = rows.assign(pair=[pair_label(s, e) for s, e in zip(rows["selector"], embedding, strict=True)])

    def cell(row: pd.Series) -> str:
        if row["n"] < 2:
            return f"{100 * row['mean_diff']:+.2f} n={row['n']}"
        star = " *" if row["ci_above_zero"] else ""
        interval = f"[{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}]"
        return f"{100 * row['mean_diff']:+.2f} {interval} n={row['n']}{star}"

    rows = rows.assign(
        _column=[
            f"K={int(k)} {100 * float(s):g}/{100 - 100 * float(s):g}"
            for k, s in zip(rows["size"], rows["split"], strict=True)
        ],
        _cell=rows.apply(cell, axis=1),
    )
    order = rows.sort_values(["split", "size"], ascending=[False, True])["_column"].drop_duplicates().tolist()
    wide = rows.pivot_table(index="pair", columns="_column", values="_cell", aggfunc="first")
    wide = wide.reindex(columns=order).fillna("")
    wide.insert(0, "mean_gain", 100 * rows.groupby("pair")["mean_diff"].mean())
    wide = wide.sort_values("mean_gain", ascending=False).reset_index()
    wide.columns.name = None
    return wide


#: Columns of :func:`selection_gain`.
GAIN_COLUMNS = ["protocol", "size", "split", "steps_planned", "time_budget", "batch", "runs", "mean", "seeds"]
GAIN_COLUMNS += ["baseline", "n", "baseline_mean", "mean_diff", "ci_low", "ci_high", "ci_above_zero"]


def selection_gain(
    table: pd.DataFrame, selection: str, fingerprint: str | None = None, baseline: str = "random-balanced"
) -> pd.DataFrame:
    """A saved selection's measured gain: its finished runs, and how they compare with ``baseline``.

    The runs are those trained on the selection named ``selection`` (with ``fingerprint``,
    when given: the same samples). Per cell (protocol, K, split, schedule, batch): the runs,
    their mean test accuracy and seeds, then the mean paired difference to ``baseline``'s
    runs of the same data set, cell and seed with its 95% interval (NaN with fewer than two
    pairs). When the baseline has several runs of one seed and cell (different sweeps), their
    mean is its value for that seed. Columns :data:`GAIN_COLUMNS`; empty when there are no runs.
    """
    mine = table[table["selection"] == selection]
    if fingerprint is not None and not mine.empty:
        same = [(Run(p).config.get("selection") or {}).get("fingerprint") == fingerprint for p in mine["path"]]
        mine = mine[same]
    keys = ["dataset", "protocol", "size", "split", "steps_planned", "time_budget", "batch"]
    theirs = table[(table["selector"] == baseline) & (table["selection"] != selection)]
    theirs = theirs.groupby([*keys, "seed"], dropna=False, as_index=False)["test_accuracy"].mean()
    out = []
    for cell, group in mine.groupby(keys, dropna=False, sort=True):
        merged = group[[*keys, "seed", "test_accuracy"]].merge(
            theirs.rename(columns={"test_accuracy": "_baseline"}), on=[*keys, "seed"], how="left"
        )
        ours = merged["test_accuracy"].to_numpy(dtype=np.float64)
        base = merged["_baseline"].to_numpy(dtype=np.float64)
        paired = np.isfinite(ours) & np.isfinite(base)
        stats = mean_interval(ours[paired] - base[paired])
        values = dict(zip(keys, cell, strict=True))
        out.append(
            {
                **{k: values[k] for k in keys if k != "dataset"},
                "runs": len(group),
                "mean": float(np.nanmean(ours)),
                "seeds": ",".join(str(s) for s in sorted(group["seed"])),
                "baseline": baseline,
                "n": stats["n"],
                "baseline_mean": float(base[paired].mean()) if paired.any() else math.nan,
                "mean_diff": stats["mean"],
                "ci_low": stats["ci_low"],
                "ci_high": stats["ci_high"],
                "ci_above_zero": bool(stats["ci_low"] > 0),
            }
        )
    return pd.DataFrame(out, columns=GAIN_COLUMNS)
