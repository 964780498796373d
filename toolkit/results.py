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
it took to reach a target accuracy.
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
#: Columns that identify a cell of a results table (everything but the seed).
CELL_COLUMNS = ["dataset", "protocol", "selector", "size", "split", "steps_planned", "time_budget", "batch"]

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


def summarize(
    table: pd.DataFrame, value: str = "test_accuracy", by: Sequence[str] = tuple(CELL_COLUMNS)
) -> pd.DataFrame:
    """Per cell (all columns of ``by``; seeds pooled): n, mean, std, 95% interval, min and max of ``value``."""
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
    subset size K, split and schedule), with ``embedding`` first when the table has that
    column; a baseline run with no embedding (random rules use none) is then the partner of
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
        by = ["embedding", *PAIR_COLUMNS] if "embedding" in table.columns else list(PAIR_COLUMNS)
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
                **{c: getattr(row, c) for c in CELL_COLUMNS},
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
