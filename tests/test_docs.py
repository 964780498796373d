"""Figures quoted in the docs come from committed result files: recomputed here, they must agree."""

from __future__ import annotations

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
