"""Statements the docs make about committed results, computed from those results.

Each function reads the committed files under docs/results/ and returns one statement (a
sentence, or a markdown table). In the docs a statement sits between ``<!-- claims:NAME -->``
and ``<!-- /claims -->``: ``python docs/claims.py`` prints them all, ``python docs/claims.py
--write`` rewrites those blocks from the data, and tests/test_docs.py checks that every block
says exactly what the data say, so a statement cannot drift from its data.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

RESULTS = Path(__file__).resolve().parent / "results"
#: The diagnostics of docs/selectors.md's pilot table (one seed, 100 steps of 128, K = 4,320).
SELECTOR_DIAGNOSTICS = RESULTS / "selectors-diagnostics.csv"
#: The cpu preset's runs (docs/results.md: Figs. 5-7).
CPU_RESULTS = RESULTS / "cpu-results.csv"
#: The cpu-converged pilot's report (``samplesift sweep --preset cpu-converged --part pilot --report``).
CONVERGED_PILOT = RESULTS / "converged-pilot"

#: The diagnostics ranked against accuracy, and how the docs name them.
DIAGNOSTIC_NAMES = {
    "class_entropy": "class entropy",
    "largest_class": "the largest class's size",
    "smallest_class": "the smallest class's size",
    "mean_nearest_distance": "the mean nearest-selected distance",
    "facility_location": "the facility-location value",
    "outlier_share": "the outlier share",
    "coverage_radius": "the coverage radius",
}


def diagnostic_ranking(path: Path = SELECTOR_DIAGNOSTICS) -> pd.DataFrame:
    """Spearman rank correlation of each diagnostic with the selectors' test accuracy, strongest first."""
    table = pd.read_csv(path)
    rows = [
        {"diagnostic": column, "spearman": spearmanr(table[column], table["test_accuracy_pct"]).statistic}
        for column in DIAGNOSTIC_NAMES
    ]
    ranking = pd.DataFrame(rows)
    return ranking.reindex(ranking["spearman"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def diagnostic_statement(path: Path = SELECTOR_DIAGNOSTICS) -> str:
    """Which diagnostics rank the selectors' accuracies best (docs/selectors.md, docs/results.md)."""
    ranking = diagnostic_ranking(path)
    top = [f"{DIAGNOSTIC_NAMES[r.diagnostic]} ({r.spearman:+.2f})" for r in ranking.head(4).itertuples()]
    return (
        f"Over the {len(pd.read_csv(path))} selectors, the diagnostics that rank the accuracies best "
        f"(Spearman correlation) are {', '.join(top[:-1])} and {top[-1]}: class balance first, coverage next."
    )


def extra_steps_statement(path: Path = CPU_RESULTS) -> str:
    """How many more steps a subset-first run made than full data in the same time (docs/results.md, Fig. 6)."""
    table = pd.read_csv(path)
    timed = table[table["protocol"] == "equal-time"]
    full = timed[timed["selector"] == "full-data"].set_index("seed")["steps"]
    parts = []
    for selector in ("random", "topk-activation"):
        runs = timed[(timed["selector"] == selector) & (timed["split"] == 0.5)].set_index("seed")["steps"]
        mean_gain = 100 * (runs.mean() / full.mean() - 1)
        per_seed = 100 * (runs / full.reindex(runs.index) - 1)
        parts.append(
            f"{selector} 50/50 {mean_gain:.1f} % more on average (per seed "
            + ", ".join(f"{g:+.0f} %" for g in per_seed)
            + ")"
        )
    return (
        f"In the same time a subset-first run made more steps than a full-data run ({full.mean():.0f} on "
        f"average): {parts[0]}, {parts[1]}."
    )


def _pilot() -> tuple[pd.DataFrame, float, dict]:
    """The pilot's finished runs (pair label, accuracy), random-balanced's accuracy, and its progress record."""
    results = pd.read_csv(CONVERGED_PILOT / "results.csv")
    progress = json.loads((CONVERGED_PILOT / "progress.json").read_text())
    embedding = results["embedding"].fillna("")
    results["pair"] = [f"{e}:{s}" if e else s for e, s in zip(embedding, results["selector"], strict=True)]
    baseline = float(results.loc[results["selector"] == "random-balanced", "test_accuracy"].iloc[0])
    return results.sort_values("test_accuracy", ascending=False, kind="stable"), baseline, progress


def pilot_table() -> str:
    """docs/results.md's pilot table: each finished run, its accuracy and its difference to random-balanced."""
    results, baseline, _ = _pilot()
    lines = ["| pair (embedding:selector) | test accuracy % | minus random-balanced (points) |", "|---|---|---|"]
    for row in results.itertuples():
        difference = "" if row.selector == "random-balanced" else f"{100 * (row.test_accuracy - baseline):+.2f}"
        lines.append(f"| {row.pair} | {100 * row.test_accuracy:.2f} | {difference} |")
    return "\n".join(lines)


def pilot_statement() -> str:
    """What the cpu-converged pilot's finished runs say so far (docs/results.md, README)."""
    results, baseline, progress = _pilot()
    pairs = results[results["selector"] != "random-balanced"]
    above = pairs[pairs["test_accuracy"] > baseline]
    best, worst = pairs.iloc[0], pairs.iloc[-1]
    return (
        f"{progress['finished']} of the pilot's {progress['planned']} runs have finished (one seed, K = 1,000, "
        f"100/0, 1,500 steps of 128). Random-balanced reached {100 * baseline:.2f} %; {len(above)} of the "
        f"{len(pairs)} other runs are above it, the best {best.pair} by {100 * (best.test_accuracy - baseline):+.2f} "
        f"points, the worst {worst.pair} at {100 * (worst.test_accuracy - baseline):+.2f}."
    )


STATEMENTS = {
    "docs/selectors.md": (diagnostic_statement,),
    "docs/results.md": (diagnostic_statement, extra_steps_statement, pilot_table, pilot_statement),
    "README.md": (pilot_statement,),
}


def block(name: str) -> re.Pattern[str]:
    """The marked block of statement ``name`` in a doc: its text is group 2."""
    return re.compile(rf"(<!-- claims:{name} -->)(.*?)(<!-- /claims -->)", re.S)


def write() -> None:
    """Rewrite every marked block of every doc from the data."""
    root = Path(__file__).resolve().parents[1]
    for doc, functions in STATEMENTS.items():
        path = root / doc
        text = path.read_text(encoding="utf-8")
        for function in functions:
            value = function()
            if "\n" in value:  # a table stands on its own lines
                value = f"\n{value}\n"
            text = block(function.__name__).sub(lambda m, value=value: m[1] + value + m[3], text)
        path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        for statement in dict.fromkeys(f for functions in STATEMENTS.values() for f in functions):
            print(statement())
