"""Selection diagnostics on hand-made embeddings, in manifests, and through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.data import ImageDataset
from toolkit.diagnostics import SelectionDiagnostics, class_entropy, describe, diagnose, jaccard, jaccard_matrix
from toolkit.embedding import Embedding
from toolkit.errors import SampleSiftError
from toolkit.selection import compare_selections, load_selection, make_selection


def line(n: int = 11) -> np.ndarray:
    """n samples evenly spaced on [0, 10] along the first of 3 axes."""
    x = np.zeros((n, 3), np.float32)
    x[:, 0] = np.linspace(0, 10, n)
    return x


def test_coverage_radius_and_mean_nearest_distance_by_hand() -> None:
    report = diagnose(line(), [0, 10])  # samples at 0 and 10; the others are 1..5 away
    assert report["coverage_radius"] == pytest.approx(5.0)
    assert report["mean_nearest_distance"] == pytest.approx(2 * (1 + 2 + 3 + 4) / 11 + 5 / 11)
    everything = diagnose(line(), range(11))
    assert everything["coverage_radius"] == pytest.approx(0.0, abs=1e-3)
    assert everything["facility_location"] == pytest.approx(1.0, abs=1e-6)


def test_facility_location_uses_the_knn_bandwidth() -> None:
    # 3 neighbours counting the sample itself: the 2nd other neighbour is 1 away inside the line, 2 at its ends
    diag = SelectionDiagnostics(line(), neighbors=3)
    assert diag.bandwidth == pytest.approx(1.0, rel=1e-4)  # the median squared distance
    value = diag.evaluate([5])["facility_location"]
    expected = np.mean([math.exp(-((i - 5) ** 2) / 1.0) for i in range(11)])
    assert value == pytest.approx(expected, rel=1e-5)
    assert diag.evaluate([0, 5, 10])["facility_location"] > value  # more coverage, higher value


def test_class_histogram_and_entropy() -> None:
    labels = np.repeat([0, 1, 2, 3], 5)
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    uniform = diagnose(x, [0, 5, 10, 15], labels)
    assert uniform["class_counts"] == [1, 1, 1, 1] and uniform["class_entropy"] == pytest.approx(1.0)
    single = diagnose(x, [0, 1, 2], labels)
    assert single["class_counts"] == [3, 0, 0, 0] and single["class_entropy"] == pytest.approx(0.0)
    assert class_entropy(np.array([2, 2, 0, 0])) == pytest.approx(0.5)  # log 2 / log 4


def test_tail_coverage_counts_selected_samples_in_each_top_tail() -> None:
    x = np.random.default_rng(1).normal(size=(200, 5)).astype(np.float32)
    top = [int(np.argmax(x[:, d])) for d in range(5)]
    report = diagnose(x, top, tail=0.01)  # tail = the top 2 of each dimension
    assert report["tail_dims_covered"] == 1.0
    assert all(count >= 1 for count in report["tail_counts"])
    assert report["tail_share_random"] == pytest.approx(len(set(top)) / 200)
    bottom = [int(np.argmin(x[:, d])) for d in range(5)]
    assert diagnose(x, bottom, tail=0.01)["tail_dims_covered"] == 0.0


def test_outlier_share() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    x[:10] *= 8  # ten outliers
    diag = SelectionDiagnostics(x, outlier_quantile=0.95)
    assert diag.evaluate(range(10))["outlier_share"] == 1.0
    assert diag.evaluate(range(10))["outlier_share_random"] == pytest.approx(0.05)
    assert diag.evaluate(range(200, 400))["outlier_share"] < 0.1


def test_jaccard_and_comparison_table() -> None:
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert jaccard([1], [2]) == 0.0
    overlap = jaccard_matrix({"a": [1, 2, 3], "b": [2, 3, 4], "c": [1, 2, 3]})
    assert overlap.loc["a", "b"] == overlap.loc["b", "a"] == pytest.approx(0.5)
    assert overlap.loc["a", "c"] == 1.0 and np.allclose(np.diag(overlap), 1.0)
    labels = np.repeat([0, 1], [6, 5])
    table = SelectionDiagnostics(line(), labels).compare({"ends": [0, 10], "middle": [5]})
    assert list(table.index) == ["ends", "middle"]
    assert table.loc["ends", "coverage_radius"] == pytest.approx(5.0)
    assert table.loc["middle", "coverage_radius"] == pytest.approx(5.0)
    assert table.loc["ends", "mean_nearest_distance"] < table.loc["middle", "mean_nearest_distance"]


def test_bad_selections_are_refused() -> None:
    diag = SelectionDiagnostics(line())
    with pytest.raises(SampleSiftError, match="at least one sample"):
        diag.evaluate([])
    with pytest.raises(SampleSiftError, match=r"must lie in \[0, 11\)"):
        diag.evaluate([3, 11])


def test_manifest_records_diagnostics(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path
) -> None:
    chosen = make_selection(digits, "k-center", size=60, workspace=session_workspace, save=False)
    baseline = make_selection(digits, "random", size=60, seed=1, workspace=session_workspace, save=False)
    d, r = chosen.manifest["diagnostics"], baseline.manifest["diagnostics"]
    assert d["embedding_fingerprint"] == r["embedding_fingerprint"] == digits_embedding.fingerprint
    assert sum(d["class_counts"]) == 60 and len(d["tail_counts"]) == digits_embedding.dim
    assert d["coverage_radius"] < r["coverage_radius"]  # k-center minimises exactly this (up to its projection)
    json.dumps(chosen.manifest)
    lines = describe(d, digits.class_names)
    assert lines[0].startswith("coverage radius") and "class entropy" in lines[-1]


def test_cli_select_prints_diagnostics_and_compare_prints_a_table(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = str(session_workspace)
    for method in ("random", "facility-location"):
        assert main(["select", "--workspace", ws, "--method", method, "--size", "90", "--name", f"cmp-{method}"]) == 0
        out = capsys.readouterr().out
        assert f"selected 90 of {digits.num_train}" in out
        assert "coverage radius" in out and "facility location" in out and "class entropy" in out
    facility = load_selection("cmp-facility-location", digits, workspace=ws)
    assert facility.manifest["diagnostics"]["size"] == 90

    assert main(["compare", "--workspace", ws, "cmp-random", "cmp-facility-location"]) == 0
    out = capsys.readouterr().out
    assert "coverage_radius" in out and "Jaccard overlap" in out
    assert "cmp-random" in out and "facility-location" in out

    assert main(["compare", "--workspace", ws, "--format", "json", "cmp-random", "cmp-facility-location"]) == 0
    payload = json.loads(capsys.readouterr().out)
    rows = payload["selections"]
    assert rows["cmp-facility-location"]["facility_location"] > rows["cmp-random"]["facility_location"]
    overlap = payload["jaccard"]["cmp-random"]["cmp-facility-location"]
    comparison = compare_selections(digits, ["cmp-random", "cmp-facility-location"], workspace=ws)
    random_indices = load_selection("cmp-random", digits, workspace=ws).indices
    assert overlap == pytest.approx(jaccard(random_indices, facility.indices))
    assert comparison.embedding["fingerprint"] == digits_embedding.fingerprint

    assert main(["compare", "--workspace", ws, "cmp-random", "no-such-selection"]) == 2
    assert "no selection named 'no-such-selection'" in capsys.readouterr().err
