"""Figures quoted in the docs come from committed result files: recomputed here, they must agree."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EMBEDDINGS_CSV = REPO / "docs" / "results" / "embeddings-cifar10.csv"


def _number(value: float, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def embedding_row(row: pd.Series) -> str:
    """One row of docs/embeddings.md's results table, rendered from the CSV."""
    cells = [
        row["name"],
        row["encoder"],
        str(int(row["dim"])),
        f"{100 * row['knn_accuracy']:.1f} %",
        f"{100 * row['linear_probe_accuracy']:.1f} %",
        _number(row["train_time_s"], 1),
        _number(row["steps"]),
        _number(row["images_per_s"]),
    ]
    return "| " + " | ".join(cells) + " |"


def test_the_embeddings_table_matches_the_committed_results() -> None:
    if not EMBEDDINGS_CSV.exists():
        pytest.skip(f"{EMBEDDINGS_CSV.relative_to(REPO)} has not been committed yet")
    table = pd.read_csv(EMBEDDINGS_CSV)
    doc = (REPO / "docs" / "embeddings.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| embedding")]
    expected = [embedding_row(row) for _, row in table.iterrows()]
    assert rows == expected, "docs/embeddings.md's table differs from docs/results/embeddings-cifar10.csv"


def test_the_readme_quotes_the_committed_embedding_figures() -> None:
    if not EMBEDDINGS_CSV.exists():
        pytest.skip(f"{EMBEDDINGS_CSV.relative_to(REPO)} has not been committed yet")
    knn = pd.read_csv(EMBEDDINGS_CSV).set_index("name")["knn_accuracy"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, phrase in (
        ("contrastive-30min", "contrastive encoder reached {} k-NN"),
        ("autoencoder", "autoencoder {} after 5 epochs"),
        ("pixels-pca", "pixels {}"),
        ("proxy", "proxy {}"),
    ):
        assert phrase.format(f"{100 * knn[name]:.1f} %") in " ".join(readme.split()), name


def _claims():
    """docs/claims.py, which computes the docs' statements from the committed results."""
    spec = importlib.util.spec_from_file_location("claims", REPO / "docs" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_state_what_the_committed_results_say() -> None:
    claims = _claims()
    for doc, statements in claims.STATEMENTS.items():
        text = (REPO / doc).read_text(encoding="utf-8")
        for statement in statements:
            blocks = claims.block(statement.__name__).findall(text)
            assert blocks, f"{doc} has no <!-- claims:{statement.__name__} --> block"
            for found in blocks:
                assert found[1].split() == statement().split(), (
                    f"{doc} says {found[1].strip()!r}; the data say {statement()!r} (python docs/claims.py --write)"
                )


def test_the_diagnostics_table_matches_its_csv() -> None:
    table = pd.read_csv(_claims().SELECTOR_DIAGNOSTICS, dtype=str)
    doc = (REPO / "docs" / "selectors.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(doc) if line.startswith("| selector | test acc. 100/0"))
    shown = [line for line in doc[header + 2 : header + 2 + len(table) + 1] if line.startswith("| `")]
    expected = [
        f"| `{r.selector}` | {r.test_accuracy_pct} | {r.smallest_class} / {r.largest_class} | {r.class_entropy} | "
        f"{r.coverage_radius} | {r.mean_nearest_distance} | {r.facility_location} | {r.outlier_share} | "
        f"{r.select_time_s} | {r.peak_rss_mb} |"
        for r in table.itertuples()
    ]
    assert shown == expected, (
        "docs/selectors.md's diagnostics table differs from docs/results/selectors-diagnostics.csv"
    )


def test_the_final_statement_reads_the_paired_gains_against_the_goals(tmp_path: Path) -> None:
    claims = _claims()
    assert claims.final_statement(tmp_path) == "No run of the final grid has finished yet."
    (tmp_path / "progress.json").write_text('{"planned": 137, "finished": 9, "partial": true, "missing": []}')
    columns = ["embedding", "selector", "size", "split", "n", "mean_diff", "ci_low", "ci_high", "ci_above_zero"]
    rows = [
        ("contrastive", "typiclust+balanced", 200, 1.0, 5, 0.071, 0.012, 0.13, True),  # +7.1, above zero: met
        ("contrastive", "k-means+balanced", 200, 1.0, 5, 0.02, -0.01, 0.05, False),
        ("contrastive", "typiclust+balanced", 1000, 1.0, 3, 0.045, -0.01, 0.10, False),  # +4.5 but crosses zero
        ("contrastive", "typiclust+balanced", 4320, 0.5, 3, 0.09, 0.05, 0.13, True),  # 50/50: not the goal's split
        ("", "random", 4320, 1.0, 3, 0.5, 0.4, 0.6, True),  # plain random is not a pair
    ]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "paired.csv", index=False)
    said = claims.final_statement(tmp_path)
    assert said.startswith("9 of the final grid's 137 runs have finished (partial")
    best = "best contrastive:typiclust+balanced"
    assert f"K = 200: {best} +7.10 points (n = 5, 95 % interval [+1.20, +13.00]; goal +6: met)" in said
    assert (
        f"K = 1,000: {best} +4.50 points (n = 3, 95 % interval [-1.00, +10.00]; goal +4: not met: the interval "
        "includes zero)" in said
    )
    assert "K = 4,320: no pair has a random-balanced run of the same seed yet" in said
    short = pd.DataFrame([("c", "k-means+balanced", 4320, 1.0, 3, 0.021, 0.001, 0.04, True)], columns=columns)
    short.to_csv(tmp_path / "paired.csv", index=False)
    said = claims.final_statement(tmp_path)
    assert (
        "K = 4,320: best c:k-means+balanced +2.10 points (n = 3, 95 % interval [+0.10, +4.00]; goal +3: not met, "
        "0.90 points short)" in said
    )
