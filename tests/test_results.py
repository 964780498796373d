"""Paired statistics of the results table (toolkit.results.paired_differences), on hand-computed numbers."""

from __future__ import annotations

import math
from pathlib import Path

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
    paired_differences,
    write_table,
)

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
        table.insert(0, column, values)
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
    assert list(paired.columns)[:2] == ["embedding", "dataset"]
    a, b = _cell(paired, "topk", embedding="a"), _cell(paired, "topk", embedding="b")
    assert a["n"] == 2 and a["mean_diff"] == pytest.approx(1.5)  # 11 - 10, 22 - 20
    assert b["n"] == 2 and b["mean_diff"] == pytest.approx(0.5)  # 13 - 12 (its own), 20 - 20 (shared)
    with pytest.raises(SampleSiftError, match="cannot be paired"):  # ignoring the embedding: ambiguous pairs
        paired_differences(table, by=PAIR_COLUMNS)


def test_paired_differences_refuses_what_it_cannot_pair() -> None:
    rows = [_row("random-balanced", 0, 10.0), _row("topk", 0, 11.0), _row("topk", 0, 12.0)]
    with pytest.raises(SampleSiftError, match="cannot be paired"):
        paired_differences(_table(rows))
    with pytest.raises(SampleSiftError, match="no column"):
        paired_differences(_table(rows[:2]), by=["embedding"])
    with pytest.raises(SampleSiftError, match="full-data runs have no subset"):
        paired_differences(_table(rows[:2]), baseline=FULL_DATA)
    empty = paired_differences(_table([]))
    assert empty.empty and list(empty.columns) == [*PAIR_COLUMNS, *PAIRED_COLUMNS]
