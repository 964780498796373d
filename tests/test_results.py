"""Paired statistics of the results table (toolkit.results), on hand-computed numbers: paired
differences, the best pair, learning curves, the gain table, a selection's measured gain, the
time-to-accuracy race, and the figures drawn from them (toolkit.viz.results)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from toolkit.errors import SampleSiftError
from toolkit.results import (
    EQUAL_STEPS,
    FULL_DATA,
    PAIR_COLUMNS,
    PAIRED_COLUMNS,
    RESULT_COLUMNS,
    best_pair,
    gain_table,
    learning_curve,
    mean_interval,
    paired_differences,
    selection_gain,
    time_to_accuracy,
    write_table,
)
from toolkit.viz.results import gain_figure, learning_curve_figure

#: Student t quantile t(0.975) with 2 degrees of freedom, from a table.
T_975_2 = 4.302652729911275


def _row(selector: str, seed: int, accuracy: float, *, size: int = 100, split: float = 0.5, steps: int = 400) -> dict:
    return {
        "run_id": f"{selector}-{size}-{split}-{steps}-{seed}",
        "dataset": "d",
        "protocol": EQUAL_STEPS,
        "selector": selector,
        "size": None if split == 0 else size,
        "split": split,
        "seed": seed,
        "steps_planned": steps,
        "batch": 128,
        "test_accuracy": accuracy,
    }


def _table(rows: list[dict], **extra: list) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    table["size"] = table["size"].astype("Int64")
    table["steps_planned"] = table["steps_planned"].astype("Int64")
    for column, values in extra.items():
        table[column] = values
    return table


def _cell(paired: pd.DataFrame, selector: str, **where: object) -> pd.Series:
    mask = paired["selector"] == selector
    for column, value in where.items():
        mask &= paired[column] == value
    (index,) = paired.index[mask]
    return paired.loc[index]


def test_paired_differences_on_hand_computed_numbers(tmp_path: Path) -> None:
    rows = [_row("random-balanced", seed, base) for seed, base in enumerate([10.0, 20.0, 30.0])]
    rows += [_row("topk", seed, acc) for seed, acc in enumerate([11.0, 22.0, 33.0])]  # differences 1, 2, 3
    rows += [_row("kcenter", seed, acc) for seed, acc in enumerate([12.0, 23.0, 34.0])]  # differences 2, 3, 4
    rows += [_row(FULL_DATA, seed, 50.0, split=0.0) for seed in range(3)]  # no subset: neither side of a pair
    paired = paired_differences(_table(rows))
    assert list(paired.columns) == [*PAIR_COLUMNS, *PAIRED_COLUMNS]
    assert list(paired["selector"]) == ["kcenter", "topk"]  # full data and the baseline are not rows
    half = T_975_2 * 1 / math.sqrt(3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    topk = _cell(paired, "topk")
    assert topk["baseline"] == "random-balanced" and topk["n"] == 3
    assert topk["mean"] == pytest.approx(22.0) and topk["baseline_mean"] == pytest.approx(20.0)
    assert topk["mean_diff"] == pytest.approx(2.0) and topk["std_diff"] == pytest.approx(1.0)
    assert topk["ci_low"] == pytest.approx(2 - half) and topk["ci_high"] == pytest.approx(2 + half)
    assert not topk["ci_above_zero"]  # 2 - 2.48 < 0
    assert topk["seeds"] == "0,1,2" and topk["unmatched_seeds"] == ""
    kcenter = _cell(paired, "kcenter")
    assert kcenter["mean_diff"] == pytest.approx(3.0) and kcenter["ci_low"] == pytest.approx(3 - half)
    assert kcenter["ci_above_zero"]  # 3 - 2.48 > 0
    assert topk["size"] == 100 and topk["split"] == 0.5 and topk["steps_planned"] == 400
    # prints and saves as CSV as it is
    csv, _ = write_table(paired, tmp_path, stem="paired")
    again = pd.read_csv(csv, keep_default_na=False)
    assert list(again.columns) == list(paired.columns) and list(again["seeds"]) == ["0,1,2", "0,1,2"]
    assert "topk" in paired.to_string()


def test_unmatched_seeds_are_reported_never_paired() -> None:
    rows = [_row("random-balanced", seed, base) for seed, base in ((0, 10.0), (1, 20.0), (5, 60.0))]
    rows += [_row("topk", seed, acc) for seed, acc in ((0, 11.0), (1, 22.0), (2, 99.0), (3, 99.0))]
    rows += [_row("random-balanced", 2, 0.0, size=200), _row("random-balanced", 3, 0.0, steps=800)]  # other cells
    rows += [_row("topk", 2, 5.0, size=200)]  # K = 200: pairs with the K = 200 baseline of seed 2
    paired = paired_differences(_table(rows))
    at_100 = _cell(paired, "topk", size=100)
    assert at_100["n"] == 2 and at_100["seeds"] == "0,1" and at_100["unmatched_seeds"] == "2,3"
    assert at_100["mean_diff"] == pytest.approx(1.5) and at_100["std_diff"] == pytest.approx(math.sqrt(0.5))
    half = 12.706204736174698 * math.sqrt(0.5) / math.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert at_100["ci_low"] == pytest.approx(1.5 - half) and at_100["ci_high"] == pytest.approx(1.5 + half)
    assert at_100["mean"] == pytest.approx(16.5) and at_100["baseline_mean"] == pytest.approx(15.0)
    at_200 = _cell(paired, "topk", size=200)
    assert at_200["n"] == 1 and at_200["mean_diff"] == pytest.approx(5.0)


def test_one_pair_has_no_interval_and_no_pair_is_still_reported() -> None:
    rows = [_row("random-balanced", 0, 10.0), _row("topk", 0, 14.0)]
    rows += [_row("topk", 1, 30.0, split=1.0), _row("topk", 2, 31.0, split=1.0)]  # no baseline at split 1
    paired = paired_differences(_table(rows))
    one = _cell(paired, "topk", split=0.5)
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(4.0)
    assert math.isnan(one["std_diff"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    assert not one["ci_above_zero"]
    none = _cell(paired, "topk", split=1.0)
    assert none["n"] == 0 and math.isnan(none["mean_diff"]) and not none["ci_above_zero"]
    assert none["seeds"] == "" and none["unmatched_seeds"] == "1,2"


def test_an_embedding_column_is_paired_on_and_a_baseline_without_one_serves_every_embedding() -> None:
    rows = [_row("topk", seed, acc) for seed, acc in ((0, 11.0), (1, 22.0))]  # embedding a
    rows += [_row("topk", seed, acc) for seed, acc in ((0, 13.0), (1, 20.0))]  # embedding b
    rows += [_row("random-balanced", seed, base) for seed, base in ((0, 10.0), (1, 20.0))]  # no embedding
    rows += [_row("random-balanced", 0, 12.0)]  # embedding b's own baseline run of seed 0 comes first
    table = _table(rows, embedding=["a", "a", "b", "b", None, None, "b"])
    paired = paired_differences(table)
    assert list(paired.columns)[:3] == ["dataset", "protocol", "embedding"]
    a, b = _cell(paired, "topk", embedding="a"), _cell(paired, "topk", embedding="b")
    assert a["n"] == 2 and a["mean_diff"] == pytest.approx(1.5)  # 11 - 10, 22 - 20
    assert b["n"] == 2 and b["mean_diff"] == pytest.approx(0.5)  # 13 - 12 (its own), 20 - 20 (shared)
    with pytest.raises(SampleSiftError, match="cannot be paired"):  # ignoring the embedding: ambiguous pairs
        paired_differences(table, by=[c for c in PAIR_COLUMNS if c != "embedding"])


def test_paired_differences_refuses_what_it_cannot_pair() -> None:
    rows = [_row("random-balanced", 0, 10.0), _row("topk", 0, 11.0), _row("topk", 0, 12.0)]
    with pytest.raises(SampleSiftError, match="cannot be paired"):
        paired_differences(_table(rows))
    with pytest.raises(SampleSiftError, match="no column"):
        paired_differences(_table(rows[:2]), by=["temperature"])
    with pytest.raises(SampleSiftError, match="full-data runs have no subset"):
        paired_differences(_table(rows[:2]), baseline=FULL_DATA)
    empty = paired_differences(_table([]))
    assert empty.empty and list(empty.columns) == [*PAIR_COLUMNS, *PAIRED_COLUMNS]


#: Accuracies at 100/0 per K and seed: random-balanced's, and each pair's difference to it.
BASE = {200: [0.20, 0.22, 0.24], 1000: [0.40, 0.41, 0.45]}
OFFSETS = {("k-means+balanced", "a"): [0.02, 0.03, 0.04], ("typiclust+balanced", "b"): [0.01, -0.01, 0.0]}


def _budgets_table() -> pd.DataFrame:
    """Two budgets at 100/0: random-balanced, random (1 point below it), two pairs, and full data."""
    rows, embeddings = [], []
    for size, base in BASE.items():
        for seed, value in enumerate(base):
            rows += [_row("random-balanced", seed, value, size=size, split=1.0)]
            rows += [_row("random", seed, value - 0.01, size=size, split=1.0)]
            embeddings += [None, None]
            for (selector, embedding), offsets in OFFSETS.items():
                rows += [
                    {**_row(selector, seed, value + offsets[seed], size=size, split=1.0), "run_id": f"{embedding}"}
                ]
                embeddings += [embedding]
    rows += [_row(FULL_DATA, seed, 0.60 + seed / 100, split=0.0) for seed in range(3)]
    embeddings += [None] * 3
    return _table(rows, embedding=embeddings)


def test_best_pair_learning_curve_and_gain_table_on_hand_computed_numbers() -> None:
    table = _budgets_table()
    paired = paired_differences(table)
    assert best_pair(paired) == ("k-means+balanced", "a")  # mean gain +3 points against b's 0
    curve = learning_curve(table)
    assert list(dict.fromkeys(curve["series"])) == ["random", "random-balanced", "a:k-means+balanced", FULL_DATA]
    for size, base in BASE.items():
        point = curve[(curve["series"] == "a:k-means+balanced") & (curve["size"] == size)].iloc[0]
        values = [b + o for b, o in zip(base, OFFSETS[("k-means+balanced", "a")], strict=True)]
        expected = mean_interval(values)
        assert point["n"] == 3 and point["seeds"] == "0,1,2"
        assert point["mean"] == pytest.approx(expected["mean"]) and point["ci_low"] == pytest.approx(expected["ci_low"])
    full = curve[curve["series"] == FULL_DATA].iloc[0]
    assert pd.isna(full["size"]) and full["mean"] == pytest.approx(0.61) and full["n"] == 3
    gains = gain_table(paired)
    assert list(gains["pair"]) == ["a:k-means+balanced", "b:typiclust+balanced", "random"]
    assert list(gains.columns) == ["pair", "mean_gain", "K=200 100/0", "K=1000 100/0"]
    top = gains.iloc[0]
    half = 100 * T_975_2 * 0.01 / math.sqrt(3)  # differences 2, 3, 4 points: std 1 point
    assert top["mean_gain"] == pytest.approx(3.0)
    assert top["K=200 100/0"] == f"+3.00 [{3 - half:+.2f}, {3 + half:+.2f}] n=3 *"  # the interval is above zero
    assert gains.iloc[2]["K=1000 100/0"].startswith("-1.00 [-1.00, -1.00] n=3")  # random: exactly 1 point below


def test_learning_curve_and_gain_figures_draw_those_numbers() -> None:
    table = _budgets_table()
    figure = learning_curve_figure(table)
    lines = {t.name: t for t in figure.data if t.mode == "lines+markers"}
    assert set(lines) == {"random-balanced", "random", "a:k-means+balanced"}
    curve = learning_curve(table)
    best = curve[curve["series"] == "a:k-means+balanced"].sort_values("size")
    assert list(lines["a:k-means+balanced"].x) == [200, 1000]
    assert np.allclose(lines["a:k-means+balanced"].y, 100 * best["mean"])
    assert np.allclose(lines["a:k-means+balanced"].error_y.array, 100 * (best["ci_high"] - best["mean"]))
    full = next(t for t in figure.data if str(t.name).startswith("full data"))
    assert np.allclose(full.y, [61.0, 61.0]) and "400 steps of 128" in full.name
    note = figure.layout.annotations[0].text
    assert "equal steps (400 steps of 128)" in note and "100/0" in note and "0,1,2" in note
    paired = paired_differences(table)
    gains = gain_figure(paired)
    k200 = next(t for t in gains.data if t.name == "K=200")
    cells = paired[paired["size"] == 200].set_index("selector")
    order = list(gains.layout.yaxis.ticktext)
    assert order == ["random", "b:typiclust+balanced", "a:k-means+balanced"]  # the best on top
    expected = [100 * cells.loc[s.split(":")[-1], "mean_diff"] for s in order]
    assert np.allclose(sorted(k200.x), sorted(expected))
    assert "random-balanced" in gains.layout.title.text and "400 steps of 128" in gains.layout.annotations[0].text


def test_a_figure_says_where_its_runs_ran() -> None:
    from toolkit.viz.results import stamp_hardware

    table = _budgets_table()
    plain = learning_curve_figure(table)
    assert stamp_hardware(plain, table.drop(columns=["device_name"], errors="ignore")).layout.title.text == (
        learning_curve_figure(table).layout.title.text
    )  # nothing recorded: nothing added
    mixed = table.assign(device_name=["NVIDIA H200" if i % 2 else "cpu (1 threads)" for i in range(len(table))])
    title = stamp_hardware(learning_curve_figure(mixed), mixed).layout.title.text
    assert title.endswith("<br><sup>runs on NVIDIA H200 and cpu (1 threads)</sup>")


def test_selection_gain_pairs_a_selection_runs_with_the_baseline() -> None:
    rows = [_row("random-balanced", seed, base) for seed, base in enumerate([0.10, 0.20, 0.30])]
    rows += [_row("k-means", seed, acc) for seed, acc in enumerate([0.12, 0.23, 0.34])]  # +2, +3, +4 points
    rows += [_row("k-means", 0, 0.5, split=1.0)]  # the same selection at 100/0: no baseline there
    table = _table(rows, selection=[None, None, None, "km", "km", "km", "km"])
    gain = selection_gain(table, "km")
    assert list(gain["split"]) == [0.5, 1.0]
    half = T_975_2 * 0.01 / math.sqrt(3)
    at_half = gain.iloc[0]
    assert at_half["runs"] == 3 and at_half["mean"] == pytest.approx(0.23) and at_half["seeds"] == "0,1,2"
    assert at_half["n"] == 3 and at_half["mean_diff"] == pytest.approx(0.03)
    assert at_half["ci_low"] == pytest.approx(0.03 - half) and at_half["ci_above_zero"]
    alone = gain.iloc[1]
    assert alone["runs"] == 1 and alone["n"] == 0 and math.isnan(alone["mean_diff"])
    assert selection_gain(table, "other").empty


#: Test accuracy at evaluations every 100 of 400 steps, per (selector, seed): the full-data runs reach
#: 0.5 at step 200 (their half-way point), so 0.5 is the target every run races to.
CURVES = {
    (FULL_DATA, 0): [0.30, 0.50, 0.60, 0.70],
    (FULL_DATA, 1): [0.30, 0.50, 0.62, 0.72],
    ("topk", 0): [0.50, 0.60, 0.60, 0.65],  # reaches it at step 100
    ("topk", 1): [0.40, 0.55, 0.60, 0.65],  # at 200
    ("random", 0): [0.20, 0.30, 0.40, 0.45],  # never
    ("random", 1): [0.20, 0.30, 0.45, 0.50],  # at 400
}


def _raced_table(folder: Path, *, evaluated: bool = True) -> pd.DataFrame:
    rows = []
    for (selector, seed), accuracies in CURVES.items():
        run = folder / f"{selector}-{seed}"
        run.mkdir()
        records = [
            {"kind": "eval", "step": 100 * (i + 1), "test_accuracy": a, "wall_time_s": 10.0 * (i + 1)}
            for i, a in enumerate(accuracies)
        ]
        records = records if evaluated else records[-1:]  # only the final evaluation
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rows.append(
            {**_row(selector, seed, accuracies[-1], split=0.0 if selector == FULL_DATA else 1.0), "path": str(run)}
        )
    return _table(rows)


def test_time_to_accuracy_races_every_configuration_to_the_full_data_half_way_accuracy(tmp_path: Path) -> None:
    race = time_to_accuracy(_raced_table(tmp_path)).set_index("series")
    assert race["target"].tolist() == pytest.approx([0.5] * 3)
    assert race.loc[FULL_DATA, "mean_steps"] == 200 and race.loc[FULL_DATA, "step_ratio"] == 1.0
    topk = race.loc["topk"]
    assert topk["reached"] == 2 and topk["mean_steps"] == 150 and topk["step_ratio"] == pytest.approx(0.75)
    random = race.loc["random"]
    assert random["runs"] == 2 and random["reached"] == 1 and random["mean_steps"] == 400
    assert list(race.index) == ["topk", FULL_DATA, "random"]  # the fastest first


def test_time_to_accuracy_says_what_is_missing_without_evaluations(tmp_path: Path) -> None:
    with pytest.raises(SampleSiftError, match="with --evals"):
        time_to_accuracy(_raced_table(tmp_path, evaluated=False))
