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

#: The cpu-converged final grid's report (``... --part final --pairs ... --report``).
CONVERGED_FINAL = RESULTS / "converged-final"
#: Issue 12's goal at 100/0: a pair above random-balanced by this many points (K -> points), interval above zero.
GAIN_GOALS = {200: 6.0, 1000: 4.0, 4320: 3.0}

#: bench/selector_speed.py's committed record (docs/selectors.md's speed section).
SELECTOR_SPEED = Path(__file__).resolve().parent / "bench" / "selector_speed.json"
#: The selector benchmark's targets (issue 3), as the record's ``meets_target`` judged them.
SPEED_TARGETS = {
    "topk-activation": ("top-k activation", "< 0.5 s"),
    "k-center": ("k-center", "< 10 s"),
    "facility-location": ("facility location", "< 2 min, < 2 GB"),
    "k-means": ("k-means", "< 60 s"),
}

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


def selector_speed_statement(path: Path = SELECTOR_SPEED) -> str:
    """The selector benchmark's targets, peer comparison and 1M-row scale (docs/selectors.md)."""
    record = json.loads(path.read_text())
    selectors, peer, scale = record["selectors"], record["peer"], record["scale"]
    judged = []
    for method, (label, target) in SPEED_TARGETS.items():
        figures = selectors[method]
        memory = f" at {figures['peak_rss_mb']:,.0f} MB peak" if method == "facility-location" else ""
        verdict = "" if figures["meets_target"] else ", MISSED"
        seconds = f"{figures['seconds']:.3f}" if figures["seconds"] < 1 else f"{figures['seconds']:.2f}"
        judged.append(f"{label} {seconds} s{memory} ({target}{verdict})")
    met = all(selectors[m]["meets_target"] for m in SPEED_TARGETS)
    failed = [m for m, figures in selectors.items() if "error" in figures]
    fl, fb = peer["facility_location"], peer["feature_based"]
    at_scale = ", ".join(
        f"{m} {f['seconds']:.1f} s (+{f['selection_peak_increase_mb']:,.0f} MB)" for m, f in scale["selectors"].items()
    )
    load = record["load_average_start"][0]
    return (
        f"Measured {record['date'][:10]} on this {record['machine']['cpu_count']}-core CPU (load average {load:.1f} at "
        f"the start), N = {record['n']:,} x {record['dim']} ({'synthetic' if record['synthetic'] else 'real CIFAR-10'} "
        f"embeddings), K = {record['k']:,}; targets {'all met' if met else 'not all met'}: "
        + ", ".join(judged)
        + ". "
        + (
            f"{', '.join(failed)} did not run on this embedding (it needs the proxy encoder's training-dynamics "
            "scores). "
            if failed
            else ""
        )
        + f"Against apricot {peer['apricot_version']} in the same run (N = {peer['n']:,}, K = {peer['k']:,}, the same "
        f"objectives): with its numba kernels compiled, our facility location is {fl['time_ratio_warm']:.1f} times "
        f"faster and our feature-based selection {fb['time_ratio_warm']:.1f} times ({fl['time_ratio_cold']:.0f} and "
        f"{fb['time_ratio_cold']:.0f} times against its first fit, which compiles them: "
        f"{fl['apricot_compile_s']:.1f} s and {fb['apricot_compile_s']:.1f} s), reaching the same objective (ratio "
        f"{fl['objective_ratio']:.5f} and {fb['objective_ratio']:.5f}; Jaccard of the picks {fl['jaccard']:.3f} and "
        f"{fb['jaccard']:.3f}). At N = {scale['n']:,} x {record['dim']} (synthetic float32, one fresh process each): "
        f"{at_scale}."
    )


def _map_page_statement(steps: dict) -> str:
    """The app's map page as a record measured it: opened in the app (AppTest), or its data functions (older)."""
    if "open_map_page" not in steps:
        return f"the map page's data {steps['map_page']['seconds']:.1f} s"
    page = steps["open_map_page"]
    return (
        f"in the app, the Data page's first run {page['data_page_first_s']:.1f} s, the map page's first run "
        f"{page['map_first_s']:.1f} s, a rerun {page['map_rerun_s']:.1f} s, a lasso of {page['lasso_selected']:,} "
        f"points {page['lasso_s']:.1f} s"
    )


def scale_statement() -> str:
    """What bench/scale.py's committed records measured (README's "Your own data"), largest first."""
    records = [
        (path, json.loads(path.read_text())) for path in (Path(__file__).resolve().parent / "bench").glob("scale*.json")
    ]
    parts = []
    for path, record in sorted(records, key=lambda item: -item[1]["images"]):
        if record.get("only_selection"):
            continue
        steps = record["steps"]
        heaviest = max(steps, key=lambda step: steps[step]["peak_rss_mb"])
        size = f"decoded at {record['image_size']} px" if record["image_size"] else "at their native size"
        selects = ", ".join(
            f"{method} {steps[f'select_{method}']['seconds']:.1f} s"
            for method in ("random", "topk-activation", "k-means", "facility-location")
        )
        search = steps["select_facility-location"].get("neighbor_search", {"search": "exact"})
        if search["search"] == "ivf":
            selects += (
                f" (its k-NN graph from an inverted file of {search['cells']:,} cells, {search['probes']} probed"
                f" per cell, recall {search['recall']:.2f})"
            )
        parts.append(
            f"{record['images']:,} {record['format']} images {size}: decode and cache "
            f"{steps['decode_cache']['seconds']:.0f} s; pixels-pca {steps['embed_pixels_pca']['seconds']:.0f} s, "
            f"autoencoder inference {steps['embed_autoencoder']['seconds']:.0f} s "
            f"({steps['embed_autoencoder']['images_per_s']:,.0f} images/s); selecting K = {record['k']:,}: {selects}; "
            f"CSV export {steps['export_csv']['seconds']:.1f} s; "
            f"{_map_page_statement(steps)}; "
            f"every step within {record['peak_rss_mb'] / 1024:.1f} GB peak RSS (the largest, {heaviest}; target 8 GB; "
            f"load average up to {max(record['load_average_start'][0], record['load_average_end'][0]):.1f}; "
            f"[`docs/bench/{path.name}`](docs/bench/{path.name}))"
        )
    selections = sorted((r for r in records if r[1].get("only_selection")), key=lambda item: item[1]["date"])
    return "; ".join(parts) + "." + (f" {_selections_statement(selections)}" if selections else "")


def _selections_statement(records: list[tuple[Path, dict]]) -> str:
    """``--only-selection`` records, oldest first: each selector's seconds and peak as the newest record measured it."""
    newest = {step: figures for _, record in records for step, figures in record["steps"].items()}
    record = records[-1][1]
    timed, failed = [], []
    for step, figures in newest.items():
        method = step.removeprefix("select_")
        if "error" in figures:
            failed.append(f"{method} ({figures['error']})")
            continue
        info, extra = figures.get("info", {}), ""
        if "neighbor_search" in figures and figures["neighbor_search"]["search"] == "ivf":
            extra = f", inverted-file recall {figures['neighbor_search']['recall']:.2f}"
        if "delta_lowered_from" in info:
            extra += f", delta {info['delta']:.2f} (lowered from {info['delta_lowered_from']:.2f} to fit its graph)"
        timed.append(f"{method} {figures['seconds']:.1f} s ({figures['peak_rss_mb'] / 1024:.1f} GB{extra})")
    return (
        f"Every other selector on the same {record['images']:,} images' pixels-pca embedding, K = {record['k']:,}, "
        f"each in a fresh process: {', '.join(timed)}"
        + (f"; did not finish: {', '.join(failed)}" if failed else "")
        + f" ({', '.join(f'[`docs/bench/{p.name}`](docs/bench/{p.name})' for p, _ in records)}"
        + (
            "; where a later record measured a selector again, after a change, the later figure is given"
            if len(records) > 1
            else ""
        )
        + "; ccs is not among them: it ranks by the proxy encoder's training-dynamics scores, which a pixels-pca "
        "embedding does not have)."
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
    """What the cpu-converged pilot's runs say, and the pairs it picks for the final grid (docs/results.md, README)."""
    results, baseline, progress = _pilot()
    pairs = results[results["selector"] != "random-balanced"]
    rules = pairs[pairs["embedding"].fillna("") != ""]
    above = pairs[pairs["test_accuracy"] > baseline]
    best, worst = pairs.iloc[0], pairs.iloc[-1]
    done = (
        f"All {progress['planned']} of the pilot's runs have finished"
        if progress["finished"] == progress["planned"]
        else f"{progress['finished']} of the pilot's {progress['planned']} runs have finished"
    )
    picked = ", ".join(rules["pair"].head(3))
    return (
        f"{done} (one seed, K = 1,000, 100/0, 1,500 steps of 128). Random-balanced reached {100 * baseline:.2f} %; "
        f"{len(above)} of the {len(pairs)} other runs are above it, the best {best.pair} by "
        f"{100 * (best.test_accuracy - baseline):+.2f} points, the worst {worst.pair} at "
        f"{100 * (worst.test_accuracy - baseline):+.2f}. The three largest gains, the pairs the final grid runs: "
        f"{picked}."
    )


def final_statement(folder: Path = CONVERGED_FINAL) -> str:
    """How far the final grid is, and at each budget the best pair's paired gain at 100/0 against the goal."""
    if not (folder / "progress.json").is_file():
        return "No run of the final grid has finished yet."
    progress = json.loads((folder / "progress.json").read_text())
    text = f"{progress['finished']} of the final grid's {progress['planned']} runs have finished" + (
        " (partial: the rest run in later sessions; `progress.json` lists them)." if progress["partial"] else "."
    )
    paired = pd.read_csv(folder / "paired.csv")
    paired = paired[(paired["split"] == 1.0) & (paired["n"] > 0) & paired["embedding"].notna()]
    parts = []
    for size, goal in GAIN_GOALS.items():
        cell = paired[paired["size"] == size]
        if cell.empty:
            parts.append(f"K = {size:,}: no pair has a random-balanced run of the same seed yet")
            continue
        best = cell.sort_values("mean_diff", ascending=False).iloc[0]
        gain = 100 * best["mean_diff"]
        if best["n"] < 2:
            verdict = "one seed, no interval yet"
        else:
            low, high = 100 * best["ci_low"], 100 * best["ci_high"]
            met = best["ci_above_zero"] and gain >= goal
            verdict = f"95 % interval [{low:+.2f}, {high:+.2f}]; goal +{goal:g}: {'met' if met else 'not met'}"
        parts.append(
            f"K = {size:,}: best {best['embedding']}:{best['selector']} {gain:+.2f} points (n = {best['n']}, {verdict})"
        )
    return text + " At 100/0 against random-balanced, paired by seed: " + "; ".join(parts) + "."


STATEMENTS = {
    "docs/selectors.md": (diagnostic_statement, selector_speed_statement),
    "docs/results.md": (diagnostic_statement, extra_steps_statement, pilot_table, pilot_statement, final_statement),
    "README.md": (pilot_statement, scale_statement),
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
