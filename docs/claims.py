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
from scipy.stats import spearmanr, t

RESULTS = Path(__file__).resolve().parent / "results"
#: The diagnostics of docs/selectors.md's pilot table (one seed, 100 steps of 128, K = 4,320).
SELECTOR_DIAGNOSTICS = RESULTS / "selectors-diagnostics.csv"
#: The cpu preset's runs (docs/results.md: Figs. 5-7).
CPU_RESULTS = RESULTS / "cpu-results.csv"
#: The cpu-converged pilot's report (``samplesift sweep --preset cpu-converged --part pilot --report``).
CONVERGED_PILOT = RESULTS / "converged-pilot"

#: The cpu-converged final grid's report (``... --part final --pairs ... --report``).
CONVERGED_FINAL = RESULTS / "converged-final"
#: The same grid's runs made on this 2-core CPU (partial), the cross-device check.
CONVERGED_FINAL_CPU = RESULTS / "converged-final-cpu"
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


def _ran_on(folder: Path) -> str:
    """Where a report's runs ran and at what precision, from its results.csv and spec.json."""
    names = sorted(pd.read_csv(folder / "results.csv")["device_name"].dropna().unique())
    precision = json.loads((folder / "spec.json").read_text())["train"]["precision"]
    return f"{' and '.join(names)}, precision {precision}"


def final_statement(folder: Path = CONVERGED_FINAL) -> str:
    """How far the final grid is, and at each budget the best pair's paired gain at 100/0 against the goal."""
    if not (folder / "progress.json").is_file():
        return "No run of the final grid has finished yet."
    progress = json.loads((folder / "progress.json").read_text())
    where = f" (on {_ran_on(folder)})" if (folder / "results.csv").is_file() else ""
    done = progress["finished"] == progress["planned"]
    text = (
        f"All {progress['planned']} of the final grid's runs have finished{where}."
        if done
        else f"{progress['finished']} of the final grid's {progress['planned']} runs have finished{where}"
        + " (partial: the rest run in later sessions; `progress.json` lists them)."
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
            if best["ci_above_zero"] and gain >= goal:
                outcome = "met"
            elif gain >= goal:
                outcome = "not met: the interval includes zero"
            else:
                outcome = f"not met, {goal - gain:.2f} points short" + (
                    "" if best["ci_above_zero"] else "; the interval includes zero"
                )
            verdict = f"95 % interval [{low:+.2f}, {high:+.2f}]; goal +{goal:g}: {outcome}"
        parts.append(
            f"K = {size:,}: best {best['embedding']}:{best['selector']} {gain:+.2f} points (n = {best['n']}, {verdict})"
        )
    return text + " At 100/0 against random-balanced, paired by seed: " + "; ".join(parts) + "."


def paper_rule_statement(folder: Path = CONVERGED_FINAL) -> str:
    """Where the paper's rule (top-k activation on the autoencoder) stands against random-balanced at 100/0."""
    paired = pd.read_csv(folder / "paired.csv")
    rule = paired[
        (paired["selector"] == "topk-activation") & (paired["embedding"] == "autoencoder") & (paired["split"] == 1.0)
    ].sort_values("size")
    below = rule["ci_high"] < 0
    cells = "; ".join(
        f"K = {int(row.size):,}: {100 * row.mean_diff:+.2f} points [{100 * row.ci_low:+.2f}, {100 * row.ci_high:+.2f}]"
        for row in rule.itertuples()
    )
    where = "at every budget" if below.all() else f"at {int(below.sum())} of {len(rule)} budgets"
    return (
        f"The paper's rule, top-k activation on the autoencoder, is below random-balanced {where} at 100/0, "
        f"its whole 95 % interval below zero there ({cells})."
        if below.any()
        else f"The paper's rule, top-k activation on the autoencoder, against random-balanced at 100/0: {cells}."
    )


def final_run_time_statement(folder: Path = CONVERGED_FINAL) -> str:
    """How long the final grid's runs took where they ran (results.csv: training time and finishing times)."""
    runs = pd.read_csv(folder / "results.csv")
    finished = pd.to_datetime(runs["finished"])
    span = (finished.max() - finished.min()).total_seconds()
    return (
        f"On {_ran_on(folder)}, the {len(runs)} runs finished within {span:.0f} s of one another, first to last; a "
        f"run's training took a median {runs['wall_time_s'].median():.1f} s (warm-up excluded; from "
        f"{runs['wall_time_s'].min():.1f} to {runs['wall_time_s'].max():.1f} s, as many ran at once), plus a median "
        f"{runs['eval_time_s'].median():.1f} s of evaluations."
    )


def cpu_run_time_statement(pilot: Path = CONVERGED_PILOT, final: Path = CONVERGED_FINAL_CPU) -> str:
    """What a 1,500-step run took on this 2-core CPU (two at a time), and what the pilot and final grid need."""
    parts = []
    for name, folder in (("pilot", pilot), ("final grid", final)):
        runs = pd.read_csv(folder / "results.csv")
        planned = json.loads((folder / "progress.json").read_text())["planned"]
        median = runs["wall_time_s"].median()
        parts.append(
            f"the {name}'s {len(runs)} CPU runs took a median {median / 60:.1f} minutes of training each, so its "
            f"{planned} runs need about {planned * median / 2 / 3600:.0f} hours"
        )
    return (
        "on this 2-core CPU with `--workers 2` (warm-up excluded, loading and evaluation not counted; a machine "
        "shared with other work makes it longer), " + "; ".join(parts) + "."
    )


def final_gain_table(folder: Path = CONVERGED_FINAL) -> str:
    """The final grid's gain table (gain.csv): each pair minus random-balanced, same seed, per budget and split."""
    gains = pd.read_csv(folder / "gain.csv")
    cells = [c for c in gains.columns if c.startswith("K=")]
    lines = [
        "| pair | mean over the cells | " + " | ".join(c.replace("K=", "K = ") for c in cells) + " |",
        "|---" * (len(cells) + 2) + "|",
    ]
    for _, row in gains.iterrows():
        values = " | ".join(str(row[c]) for c in cells)
        lines.append(f"| {row['pair']} | {row['mean_gain']:+.2f} | {values} |")
    return "\n".join(lines)


def time_to_accuracy_statement(folder: Path = CONVERGED_FINAL) -> str:
    """The race to the full-data run's half-way accuracy (time_to_accuracy.csv): who gets there in fewer steps."""
    race = pd.read_csv(folder / "time_to_accuracy.csv")
    full = race[race["series"] == "full-data"].iloc[0]
    subsets = race[race["series"] != "full-data"]
    faster = subsets[subsets["step_ratio"] < 1].sort_values("step_ratio")
    never = subsets[subsets["reached"] == 0]
    slower = len(subsets) - len(faster) - len(never)
    listed = "; ".join(
        f"{row.series} K = {int(row.size):,} at {_split_name(row.split)} ({row.mean_steps:.0f} steps, "
        f"{row.reached} of {row.runs} runs)"
        for row in faster.itertuples()
    )
    where_never = sorted({_split_name(split) for split in never["split"]})
    return (
        f"The full-data runs reached {100 * full['target']:.2f} % (their mean accuracy at step "
        f"{int(full['steps_planned']) // 2:,}) after {full['mean_steps']:.0f} steps on average (evaluations every "
        f"250 steps). Of the {len(subsets)} subset-first configurations, "
        + (f"{len(faster)} got there in fewer steps: {listed}" if len(faster) else "none got there in fewer steps")
        + f"; {slower} took as many steps or more, and {len(never)} never reached it"
        + (f" (all at {', '.join(where_never)})." if len(never) else ".")
    )


def _split_name(split: float) -> str:
    return "100/0" if split == 1.0 else f"{round(100 * split)}/{round(100 * (1 - split))}"


def device_check_statement(gpu: Path = CONVERGED_FINAL, cpu: Path = CONVERGED_FINAL_CPU) -> str:
    """The final grid's runs made on both devices: how far the H200's accuracy is from the CPU's, run by run."""
    keys = ["selector", "embedding", "size", "split", "seed"]
    tables = [pd.read_csv(folder / "results.csv").fillna({"embedding": "", "size": 0}) for folder in (cpu, gpu)]
    both = tables[0].merge(tables[1], on=keys, suffixes=("_cpu", "_gpu"))
    difference = 100 * (both["test_accuracy_gpu"] - both["test_accuracy_cpu"])
    half = t.ppf(0.975, len(difference) - 1) * difference.std() / len(difference) ** 0.5
    widest = both.loc[difference.abs().idxmax()]
    seeds = tables[1].groupby(["selector", "embedding", "size", "split"])["test_accuracy"].std().mul(100)
    return (
        f"{len(tables[0])} runs of the same grid also finished on this 2-core CPU ({_ran_on(cpu)}; "
        f"[`results/converged-final-cpu/`](results/converged-final-cpu/), partial); each has its twin on the "
        f"GPU (same selection, seed and schedule). GPU minus CPU, run by run: mean {difference.mean():+.2f} points "
        f"(95 % interval [{difference.mean() - half:+.2f}, {difference.mean() + half:+.2f}]), standard deviation "
        f"{difference.std():.2f}, from {difference.min():+.2f} to {difference.max():+.2f} (the widest: "
        f"{widest['selector']} K = {int(widest['size']):,} seed {int(widest['seed'])}). For comparison, the runs of "
        f"one cell of the GPU grid differ across seeds by a median standard deviation of {seeds.median():.2f} points "
        f"(at most {seeds.max():.2f}). The CPU runs took a median {tables[0]['wall_time_s'].median():.0f} s of "
        "training each, two at a time."
    )


STATEMENTS = {
    "docs/selectors.md": (diagnostic_statement, selector_speed_statement),
    "docs/results.md": (
        diagnostic_statement,
        extra_steps_statement,
        pilot_table,
        pilot_statement,
        final_statement,
        paper_rule_statement,
        final_gain_table,
        final_run_time_statement,
        cpu_run_time_statement,
        time_to_accuracy_statement,
        device_check_statement,
    ),
    "README.md": (final_statement, paper_rule_statement, scale_statement),
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
