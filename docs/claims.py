"""Statements the docs make about committed results, computed from those results.

Run ``python docs/claims.py`` to print each statement as the docs quote it; tests/test_docs.py
checks that the docs contain exactly these sentences, so a statement cannot drift from its data.
Each function reads the committed CSVs under docs/results/ and returns one sentence.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

RESULTS = Path(__file__).resolve().parent / "results"
#: The diagnostics of docs/selectors.md's pilot table (one seed, 100 steps of 128, K = 4,320).
SELECTOR_DIAGNOSTICS = RESULTS / "selectors-diagnostics.csv"
#: The cpu preset's runs (docs/results.md: Figs. 5-7).
CPU_RESULTS = RESULTS / "cpu-results.csv"

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


STATEMENTS = {
    "docs/selectors.md": (diagnostic_statement,),
    "docs/results.md": (diagnostic_statement, extra_steps_statement),
}

if __name__ == "__main__":
    for statement in dict.fromkeys(f for functions in STATEMENTS.values() for f in functions):
        print(statement())
