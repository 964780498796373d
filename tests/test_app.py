"""The dashboard, page by page, with Streamlit's AppTest (no browser; see test_e2e_browser.py).

Every page is rendered on the offline default (digits) and on a capped real CIFAR-10 subset;
the figures' data are compared with the toolkit's own output; a selection is injected as
the map's selection event; a run queued from the Train form trains in a real background
process and its curve appears after polling; an embedding made from the Data page's form
appears in its table; the sidebar's embedding picker switches what every page shows.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest
from torchvision.datasets import ImageFolder

from toolkit.data import ImageDataset
from toolkit.diagnostics import jaccard
from toolkit.embedding import Embedding, embedding_table, list_embeddings
from toolkit.encoders import get_encoder
from toolkit.export import export_selection
from toolkit.jobs import cancel_run
from toolkit.projection import load_or_compute_projection, points_in_polygon, stratified_subsample
from toolkit.results import gain_table, paired_differences, results_table, time_to_accuracy
from toolkit.runs import RunStore
from toolkit.selection import compare_diagnostics, list_selections, make_selection, selection_from_indices
from toolkit.train import TrainConfig, prepare, train
from toolkit.viz.embedding import heatmap_rows, image_grid_items
from toolkit.viz.results import accuracy_vs_split, gain_figure, learning_curve_figure, loss_curves, time_budget_bars
from toolkit.workspace import Workspace

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ("data", "embeddings", "dimensions", "selectors", "train", "results", "export")

#: Background training processes inherit SAMPLESIFT_THREADS=1 (much faster on a loaded 2-core machine).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def workspace(session_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session workspace as the app's default; Streamlit's process-wide caches emptied."""
    monkeypatch.setenv("SAMPLESIFT_WORKSPACE", str(session_workspace))
    monkeypatch.delenv("SAMPLESIFT_DATA", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    return session_workspace


def open_app(page: str | None = None, **state: Any) -> AppTest:
    """Run the app with seeded session state (the sidebar's widget keys), then switch page."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"toolkit/dashboard/{page}.py").run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def decode(value: Any) -> np.ndarray:
    """A plotly JSON array: a plain list or plotly's base64 typed array ``{dtype, bdata, shape}``."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            array = array.reshape([int(s) for s in str(value["shape"]).split(",")])
        return array
    return np.asarray(value)


def chart(at: AppTest, key: str) -> dict[str, Any]:
    """The figure JSON of the plotly chart created with ``key``."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert found, f"no chart {key!r} on the page"
    return json.loads(found[0].proto.spec)


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The data of the one dataframe on the page with ``column`` (AppTest does not see a dataframe's key)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} dataframes with a column {column!r} on the page"
    return found[0]


def poll(at: AppTest, condition: Callable[[], bool], timeout: float = 180.0) -> None:
    """Rerun the app (fragments do not tick in AppTest) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the page never showed what was expected")
        time.sleep(0.5)
        at.run()


def subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


# --------------------------------------------------------------------------- the offline default


def test_every_page_renders_on_digits(workspace: Path, digits: ImageDataset, digits_embedding: Embedding) -> None:
    at = open_app()
    assert_clean(at)
    assert [m.value for m in at.metric][:3] == [f"{digits.num_train:,}", f"{digits.num_test:,}", "10"]
    bars = chart(at, "data_classes")["data"][0]
    np.testing.assert_array_equal(decode(bars["y"]), np.bincount(digits.train_labels))
    for page in PAGES[1:]:
        at.switch_page(f"toolkit/dashboard/{page}.py").run()
        assert_clean(at)
        assert at.title[0].value == page.capitalize()


def test_map_matches_the_toolkit_and_a_lasso_shows_and_saves_the_right_images(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    at = open_app("embeddings")
    assert_clean(at)
    coords = load_or_compute_projection(digits_embedding, "pca", workspace=workspace).coords
    shown = stratified_subsample(digits.train_labels, 20_000)
    trace = chart(at, "embedding_map")["data"][0]
    assert trace["type"] == "scattergl"
    np.testing.assert_allclose(decode(trace["x"]), coords[shown, 0], rtol=1e-6)
    np.testing.assert_allclose(decode(trace["y"]), coords[shown, 1], rtol=1e-6)
    np.testing.assert_array_equal(decode(trace["customdata"])[:, 0], shown)
    np.testing.assert_array_equal(decode(trace["marker"]["color"]), digits.train_labels[shown])
    assert subheaders(at)[0] == "Selected: 0 samples"

    # A lasso around the map's lower-left quarter, as the browser sends it (data coordinates).
    (x0, y0), (x1, y1) = coords.min(0), np.median(coords, 0)
    lasso = {"xref": "x", "yref": "y", "x": [x0, x1, x1, x0], "y": [y0, y0, y1, y1]}
    at.session_state["embedding_map"] = {"selection": {"points": [], "point_indices": [], "box": [], "lasso": [lasso]}}
    at.run()
    assert_clean(at)
    expected = np.flatnonzero(points_in_polygon(coords, np.column_stack([lasso["x"], lasso["y"]])))
    assert 50 < len(expected) < digits.num_train
    assert subheaders(at)[0] == f"Selected: {len(expected):,} samples"
    _, captions, _ = image_grid_items(digits, expected[stratified_subsample(digits.train_labels[expected], 60)])
    grids = [image for image in at.image if image.captions and image.captions[0].startswith("#")]
    grid = grids[-2]  # the selection's grid; the last one is the sample detail's neighbours
    assert grid.captions == captions and len(grid.value) == min(60, len(expected))

    at.text_input(key="lasso_name").set_value("lower-left")
    at.get("form_submit_button")[0].click()
    at.run()
    assert_clean(at)
    saved = {s.name: s for s in list_selections(digits, workspace=workspace)}["lower-left"]
    np.testing.assert_array_equal(saved.indices, expected)
    assert saved.method == "lasso" and saved.manifest["params"]["projection"]["method"] == "pca"
    assert at.success and "lower-left" in at.success[0].value

    # Colour by a dimension: the marker colours are that dimension's activations.
    at.selectbox(key="emb_color").set_value("dimension")
    at.run()
    at.number_input(key="emb_dim").set_value(7)
    at.run()
    colors = decode(chart(at, "embedding_map")["data"][0]["marker"]["color"])
    np.testing.assert_allclose(colors, digits_embedding.vectors[shown, 7], rtol=1e-6)


def test_dimensions_heatmap_and_figure4_match_the_toolkit(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    at = open_app("dimensions")
    assert_clean(at)
    rows = heatmap_rows(digits_embedding.vectors, digits.train_labels, sort_by="class", max_rows=400)
    heat = chart(at, "dim_heatmap")
    np.testing.assert_allclose(decode(heat["data"][0]["z"]), digits_embedding.vectors[rows], rtol=1e-6)
    assert heat["layout"]["yaxis"]["ticktext"] == list(digits.class_names)  # one label per class block
    at.radio(key="dim_sort").set_value("a dimension").run()
    at.number_input(key="dim_sort_dim").set_value(3).run()
    z = decode(chart(at, "dim_heatmap")["data"][0]["z"])
    assert np.all(np.diff(z[:, 3]) <= 0)  # sorted by dimension 3, highest first
    at.segmented_control(key="dim_view").set_value("Histograms").run()
    assert_clean(at)
    histograms = chart(at, "dim_histograms")["data"]
    spread = np.argsort(-digits_embedding.vectors.std(axis=0))[:6]
    assert len(histograms) == 6 and histograms[0]["xaxis"] == "x"
    np.testing.assert_allclose(decode(histograms[0]["x"]), digits_embedding.vectors[:, spread[0]], rtol=1e-6)
    at.segmented_control(key="dim_view").set_value("Fig. 4").run()
    assert_clean(at)
    fig4 = chart(at, "fig4")["data"]
    assert [t["type"] for t in fig4[:3]] == ["image", "heatmap", "image"] and len(fig4) == 18
    at.radio(key="fig4_pick").set_value("chosen").run()
    at.text_input(key="fig4_indices").set_value("5, 99999").run()
    assert at.error and "sample indices must be in" in at.error[0].value


def test_selectors_compare_and_refuse_a_budget_larger_than_the_data_set(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    at = open_app("selectors")
    assert_clean(at)
    at.multiselect(key="sel_methods").set_value(["random", "topk-activation"])
    at.number_input(key="sel_k").set_value(100)
    at.button[0].click().run()
    assert_clean(at)
    made = [
        make_selection(digits, m, size=100, seed=0, save=False, workspace=workspace, embedding=digits_embedding.name)
        for m in ("random", "topk-activation")
    ]
    expected = {s.method: s.indices for s in made}
    overlay = chart(at, "sel_overlay")["data"]
    assert len(overlay) == 3  # all samples, then one trace per selection
    for trace, method in zip(overlay[1:], expected, strict=True):
        np.testing.assert_array_equal(decode(trace["customdata"])[:, 0], expected[method])
    bars = chart(at, "sel_classes")["data"]
    for trace, method in zip(bars, expected, strict=True):
        np.testing.assert_array_equal(
            decode(trace["y"]), np.bincount(digits.train_labels[expected[method]], minlength=10)
        )
    # What `samplesift compare` prints: coverage radius, facility location, class entropy, outlier share, Jaccard.
    comparison = compare_diagnostics(digits, made, digits_embedding)
    diagnostics = next(d.value for d in at.dataframe if "coverage_radius" in d.value.columns)
    assert {"coverage_radius", "facility_location", "class_entropy", "outlier_share"} <= set(diagnostics.columns)
    pd.testing.assert_frame_equal(diagnostics, comparison.table, check_dtype=False)
    overlap = next(d.value for d in at.dataframe if list(d.value.columns) == [s.name for s in made])
    pd.testing.assert_frame_equal(overlap, comparison.overlap, check_dtype=False)
    assert overlap.iloc[0, 1] == pytest.approx(jaccard(expected["random"], expected["topk-activation"]))
    at.number_input(key="sel_k").set_value(digits.num_train + 1)
    at.button[0].click().run()
    assert not at.exception
    assert at.error and f"*Samples K* must be between 1 and {digits.num_train}" in at.error[0].value


def test_train_form_queues_a_run_whose_curve_appears(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    # An older run in the store: the curves must follow the newly queued run, not the old ones.
    older = prepare(digits, TrainConfig(split=0.0, steps=5), workspace=workspace, name="older")
    assert cancel_run(older) == "cancelled"
    at = open_app("train")
    assert_clean(at)
    at.number_input(key="train_steps").set_value(0)
    at.button(key="train_submit").click().run()
    assert at.error and "*Steps* must be a positive whole number, got 0" in at.error[0].value
    before = {run.id for run in RunStore(workspace)}

    at.multiselect(key="train_splits").set_value([0.0])
    at.number_input(key="train_steps").set_value(15)
    at.number_input(key="train_batch").set_value(32)
    at.number_input(key="train_evals").set_value(1)
    at.text_input(key="train_name").set_value("from-the-form")
    at.button(key="train_submit").click().run()
    assert_clean(at)
    new = [run for run in RunStore(workspace) if run.id not in before]
    assert len(new) == 1 and new[0].config["train"]["steps"] == 15 and new[0].config["name"] == "from-the-form"
    run = new[0]

    def curve_done() -> bool:
        # What the page showed in its last run: no active run, and the curve up to the last step.
        traces = [c for c in at.get("plotly_chart") if c.proto.id.endswith("train_loss_curves")]
        return (
            "No active runs" in subheaders(at)
            and bool(traces)
            and decode(json.loads(traces[0].proto.spec)["data"][0]["x"])[-1] == 15
        )

    poll(at, curve_done)
    assert_clean(at)
    assert run.status()["state"] == "finished"
    loss = run.metrics("train")
    trace = chart(at, "train_loss_curves")["data"][0]
    np.testing.assert_array_equal(decode(trace["x"]), loss["step"].to_numpy())
    np.testing.assert_allclose(decode(trace["y"]), loss["loss"].to_numpy())
    # Half a page is too narrow for Fig. 7's protocol note (it was cut off): it is text below the chart.
    assert not chart(at, "train_loss_curves")["layout"].get("annotations")
    assert any(c.value.startswith("Protocol: ") for c in at.caption)


def test_results_page_draws_the_experiment_figures_from_the_run_store(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    selection = make_selection(digits, "random", size=100, workspace=workspace, name="results-random")
    for config in (
        TrainConfig(split=0.0, steps=6, batch=32, evals=0, device="cpu"),
        TrainConfig(split=0.5, steps=6, batch=32, evals=0, device="cpu"),
        TrainConfig(split=0.5, time_budget=0.5, batch=32, evals=0, device="cpu"),
    ):
        train(digits, config, selection=selection if config.split else None, workspace=workspace, progress=False)
    at = open_app("results")
    assert_clean(at)
    table = results_table(workspace, dataset=digits.key)
    assert len(table) >= 3 and {"equal-steps", "equal-time"} <= set(table["protocol"])
    for key, figure in (("results_fig5", accuracy_vs_split(table)), ("results_fig6", time_budget_bars(table))):
        assert chart(at, key)["data"] == json.loads(figure.to_json())["data"]
    shown = next(d.value for d in at.dataframe if "images_per_s" in d.value.columns)  # the sortable run table
    assert list(shown["run_id"]) == list(table["run_id"])
    np.testing.assert_allclose(shown["test_accuracy"], table["test_accuracy"])


def test_results_page_shows_the_gain_over_random_the_learning_curve_and_the_race(
    workspace: Path, digits: ImageDataset, gain_runs: list[Path]
) -> None:
    at = open_app("results")
    assert_clean(at)
    table = results_table(workspace, dataset=digits.key)
    paired = paired_differences(table)
    assert at.radio(key="results_gain_split").value == 1.0
    gains = frame(at, "mean_gain")
    expected = gain_table(paired, split=1.0)
    assert "autoencoder:k-means+balanced" in set(expected["pair"]) and {"K=50 100/0", "K=100 100/0"} <= set(
        expected.columns
    )
    pd.testing.assert_frame_equal(gains.reset_index(drop=True), expected, check_dtype=False)
    assert chart(at, "results_gain")["data"] == json.loads(gain_figure(paired, split=1.0).to_json())["data"]
    curve = json.loads(learning_curve_figure(table, split=1.0).to_json())["data"]
    assert chart(at, "results_learning_curve")["data"] == curve
    race = frame(at, "step_ratio")
    pd.testing.assert_frame_equal(race.reset_index(drop=True), time_to_accuracy(table), check_dtype=False)


@pytest.fixture
def media_managers(monkeypatch: pytest.MonkeyPatch) -> list[MediaFileManager]:
    """The media file manager of every AppTest run, kept so a test can fetch what a download serves."""
    made: list[MediaFileManager] = []

    class Recording(MediaFileManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(app_test_module, "MediaFileManager", Recording)
    return made


def download(at: AppTest, managers: list[MediaFileManager], key: str) -> tuple[bytes, str, str]:
    """Click a download button as the browser does: run its deferred callable, read the served file."""
    manager = managers[-1]  # the last run's, which registered the button's callable
    url = manager.execute_deferred(at.download_button(key=key).proto.deferred_file_id)
    served = manager.read_file(url.rsplit("/", 1)[1])
    assert served is not None
    return served.content, served.filename, served.mimetype


def test_export_page_downloads_every_file_format_and_writes_an_image_folder(
    workspace: Path,
    digits: ImageDataset,
    digits_embedding: Embedding,
    media_managers: list[MediaFileManager],
    tmp_path: Path,
) -> None:
    selection = make_selection(digits, "topk-activation", size=60, seed=2, workspace=workspace, name="to-export")
    at = open_app("export")
    at.selectbox(key="export_selection").set_value("to-export").run()
    assert_clean(at)
    assert [m.value for m in at.metric] == ["60", f"{100 * 60 / digits.num_train:.2f}%", "topk-activation"]

    served = {fmt: download(at, media_managers, f"export_download_{fmt}") for fmt in ("json", "csv", "npz")}
    for fmt, (content, filename, _) in served.items():  # exactly what `samplesift export` writes
        assert filename == f"to-export.{fmt}"
        assert content == export_selection(selection, digits, tmp_path / f"cli.{fmt}", fmt).read_bytes(), fmt
    assert served["json"][2] == "application/json" and served["csv"][2] == "text/csv"
    assert json.loads(served["json"][0])["indices"] == selection.indices.tolist()
    table = pd.read_csv(io.BytesIO(served["csv"][0]))
    np.testing.assert_array_equal(table["index"], selection.indices)
    np.testing.assert_allclose(table["score"], selection.scores)
    with np.load(io.BytesIO(served["npz"][0])) as archive:
        np.testing.assert_array_equal(archive["train_images"], digits.train_images[selection.indices])
        np.testing.assert_array_equal(archive["train_labels"], digits.train_labels[selection.indices])

    def export_folder(out: Path, overwrite: bool = False) -> None:
        at.text_input(key="export_folder").set_value(str(out))
        at.checkbox(key="export_overwrite").set_value(overwrite)
        at.get("form_submit_button")[0].click()
        at.run()

    out = tmp_path / "folder"
    export_folder(out)
    assert_clean(at)
    assert at.success and str(out) in at.success[0].value
    folder = ImageFolder(str(out))
    expected = {name: n for name, n in selection.manifest["class_counts"].items() if n}
    assert collections.Counter(folder.classes[t] for t in folder.targets) == expected
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))

    export_folder(out)  # again, without overwrite: refused, nothing touched
    assert not at.exception and not at.success
    assert at.error and "exists and is not empty; tick *Overwrite an earlier export*" in at.error[0].value
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    export_folder(out, overwrite=True)  # an earlier export may be replaced
    assert_clean(at)
    assert at.success and len(ImageFolder(str(out))) == 60

    precious = tmp_path / "not-an-export"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    export_folder(precious, overwrite=True)  # even with overwrite, a folder that is not an export stays
    assert at.error and "is not an earlier SampleSift export" in at.error[0].value
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    export_folder(Path(" "))
    assert at.error and "Give the folder to export into." in at.error[0].value


def test_bad_data_inputs_show_the_toolkit_message(workspace: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    at = open_app(data_source="Image folder or .npz", data_path=str(missing))
    assert not at.exception
    assert at.error and f"data path {missing} does not exist" in at.error[0].value
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    at = open_app(data_source="Image folder or .npz", data_path=str(empty))
    assert not at.exception
    assert at.error and "has no class folders with images" in at.error[0].value


def test_an_autoencoder_is_made_from_a_page_without_an_embedding(workspace: Path, digits: ImageDataset) -> None:
    at = open_app("embeddings", max_per_class=20)
    assert_clean(at)
    assert at.info and "has no embedding yet" in at.info[0].value
    assert at.selectbox(key="new_encoder").value == "autoencoder"
    at.number_input(key="embed_epochs").set_value(2)
    at.number_input(key="embed_batch").set_value(64)
    at.button(key="embed_submit").click().run()
    # The job process needs seconds to start: the live panel with its cancel button shows first.
    assert [b.label for b in at.button if b.label == "Cancel"]
    assert [m.label for m in at.metric] == ["Step", "Loss", "Images/s", "Time left"]
    poll(at, lambda: bool([c for c in at.get("plotly_chart") if c.proto.id.endswith("embedding_map")]))
    assert_clean(at)
    assert subheaders(at)[0] == "Selected: 0 samples"


@pytest.fixture
def fresh_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace of its own as the app's default (embeddings made here stay here)."""
    root = tmp_path / "ws"
    monkeypatch.setenv("SAMPLESIFT_WORKSPACE", str(root))
    monkeypatch.delenv("SAMPLESIFT_DATA", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    return root


@pytest.fixture
def two_embeddings(
    fresh_workspace: Path, session_workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> dict[str, Embedding]:
    """The session's digits autoencoder copied in, then a pixels-pca embedding (the newest)."""
    target = fresh_workspace / digits_embedding.path.relative_to(session_workspace)
    shutil.copytree(digits_embedding.path, target)
    pixels = get_encoder("pixels-pca", components=32).embed(digits, workspace=fresh_workspace, progress=False)
    return {"autoencoder": digits_embedding, "pixels-pca": pixels}


def test_the_embedding_picker_switches_what_every_page_shows(
    fresh_workspace: Path, digits: ImageDataset, two_embeddings: dict[str, Embedding]
) -> None:
    at = open_app("dimensions")
    assert_clean(at)
    picker = at.selectbox(key="embedding")
    assert picker.options == [
        "autoencoder (autoencoder, k-NN %.0f%%)" % (100 * two_embeddings["autoencoder"].quality["knn_accuracy"]),
        "pixels-pca (pixels-pca, k-NN %.0f%%)" % (100 * two_embeddings["pixels-pca"].quality["knn_accuracy"]),
    ]
    assert picker.value == "pixels-pca"  # the newest by default
    at.segmented_control(key="dim_view").set_value("Fig. 4").run()
    assert_clean(at)
    assert at.info and "made by the pixels-pca encoder" in at.info[0].value
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("fig4")]
    heat_rows = heatmap_rows(two_embeddings["pixels-pca"].vectors, digits.train_labels, sort_by="class", max_rows=400)

    at.selectbox(key="embedding").set_value("autoencoder").run()
    assert_clean(at)
    assert at.query_params["embedding"] == "autoencoder"  # a refresh or a shared link keeps it
    assert len(chart(at, "fig4")["data"]) == 18
    at.segmented_control(key="dim_view").set_value("Heatmap").run()
    z = decode(chart(at, "dim_heatmap")["data"][0]["z"])
    assert z.shape[1] == two_embeddings["autoencoder"].dim
    at.selectbox(key="embedding").set_value("pixels-pca").run()
    np.testing.assert_allclose(
        decode(chart(at, "dim_heatmap")["data"][0]["z"]), two_embeddings["pixels-pca"].vectors[heat_rows], rtol=1e-6
    )

    # The map is the chosen embedding's.
    at.switch_page("toolkit/dashboard/embeddings.py").run()
    assert_clean(at)
    for name in ("pixels-pca", "autoencoder"):
        at.selectbox(key="embedding").set_value(name).run()
        assert_clean(at)
        coords = load_or_compute_projection(two_embeddings[name], "pca", workspace=fresh_workspace).coords
        shown = stratified_subsample(digits.train_labels, 20_000)
        np.testing.assert_allclose(decode(chart(at, "embedding_map")["data"][0]["x"]), coords[shown, 0], rtol=1e-6)

    # The Data page lists both, with the k-NN accuracy measured when each was made.
    at.switch_page("toolkit/dashboard/data.py").run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "knn_accuracy" in d.value.columns)
    assert sorted(table["name"]) == ["autoencoder", "pixels-pca"]
    for row in table.itertuples():
        assert row.knn_accuracy == pytest.approx(100 * two_embeddings[row.name].quality["knn_accuracy"])


def test_the_make_embedding_form_runs_an_encoder_in_the_background(fresh_workspace: Path, digits: ImageDataset) -> None:
    at = open_app()
    assert_clean(at)
    assert "No embedding of" in at.info[0].value
    at.selectbox(key="new_encoder").set_value("pixels-pca").run()
    at.number_input(key="embed_components").set_value(16)
    at.text_input(key="embed_name_pixels-pca").set_value("pixels-16")
    at.button(key="embed_submit").click().run()
    assert not at.exception
    runs = [run for run in RunStore(fresh_workspace) if run.config.get("kind") == "embed"]
    assert len(runs) == 1 and runs[0].config["encoder"] == "pixels-pca"
    assert runs[0].config["options"]["components"] == 16 and runs[0].config["embedding"] == "pixels-16"

    def listed() -> bool:
        return any("knn_accuracy" in d.value.columns and "pixels-16" in set(d.value["name"]) for d in at.dataframe)

    poll(at, listed)
    assert_clean(at)
    assert runs[0].status()["state"] == "finished"
    made = embedding_table(digits, workspace=fresh_workspace)
    assert list(made["name"]) == ["pixels-16"] and made["dim"].iloc[0] == 16
    assert [m["name"] for m in list_embeddings(digits, workspace=fresh_workspace)] == ["pixels-16"]
    at.run()  # the sidebar is drawn before the page: it may have missed an embedding saved meanwhile
    assert at.selectbox(key="embedding").value == "pixels-16"  # the sidebar picks it up


# --------------------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="module")
def cifar_embedding(cifar_small: ImageDataset, session_workspace: Path) -> Embedding:
    encoder = get_encoder("autoencoder", epochs=1, batch=100, device="cpu")
    return encoder.embed(cifar_small, workspace=session_workspace, progress=False)


@pytest.mark.cifar
def test_every_page_renders_on_capped_cifar10(
    workspace: Path, cifar_root: Path, cifar_small: ImageDataset, cifar_embedding: Embedding
) -> None:
    at = open_app(data_source="Image folder or .npz", data_path=str(cifar_root), max_per_class=100)
    assert_clean(at)
    assert [m.value for m in at.metric][:3] == ["1,000", "1,000", "10"]
    for page in PAGES[1:]:
        at.switch_page(f"toolkit/dashboard/{page}.py").run()
        assert_clean(at)
    at.switch_page("toolkit/dashboard/embeddings.py").run()
    coords = load_or_compute_projection(cifar_embedding, "pca", workspace=workspace).coords
    trace = chart(at, "embedding_map")["data"][0]
    np.testing.assert_allclose(decode(trace["x"]), coords[:, 0], rtol=1e-6)
    custom = decode(trace["customdata"])
    np.testing.assert_array_equal(custom[:, 1], cifar_small.train_labels[custom[:, 0]])


# --------------------------------------------------------------------------- issue 13: state, feedback, wording


def test_the_server_watches_no_files() -> None:
    """A file watcher over a repository with .venv and workspace/ inside burned 45-65 % CPU."""
    import tomllib

    config = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"]["runOnSave"] is False


def test_sidebar_edits_wait_for_load_and_the_url_restores_the_choice(
    fresh_workspace: Path, digits: ImageDataset, two_embeddings: dict[str, Embedding]
) -> None:
    at = open_app()
    assert_clean(at)
    assert at.number_input(key="max_per_class").label.startswith("Images per class, training and test")
    at.number_input(key="max_per_class").set_value(30).run()  # typing alone loads nothing
    assert [m.value for m in at.metric][:2] == [f"{digits.num_train:,}", f"{digits.num_test:,}"]
    at.radio(key="data_source").set_value("CIFAR-10").run()  # nor does another source
    assert [m.value for m in at.metric][:2] == [f"{digits.num_train:,}", f"{digits.num_test:,}"]
    assert any("Press **Load**" in c.value for c in at.sidebar.caption)
    at.radio(key="data_source").set_value("digits (offline)").run()  # digits needs no path: at once
    assert not any("Press **Load**" in c.value for c in at.sidebar.caption)
    at.number_input(key="max_per_class").set_value(30)
    at.button(key="data_load").click().run()
    assert_clean(at)
    assert [m.value for m in at.metric][:2] == ["300", "300"]
    assert at.query_params["source"] == "digits" and at.query_params["cap"] == "30"
    assert "data" not in at.query_params and "workspace" not in at.query_params  # defaults stay out of the URL

    at.number_input(key="max_per_class").set_value(0)
    at.button(key="data_load").click().run()
    at.selectbox(key="embedding").set_value("autoencoder").run()
    at.switch_page("toolkit/dashboard/embeddings.py").run()
    at.selectbox(key="emb_color").set_value("dimension").run()
    assert_clean(at)
    url = dict(at.query_params)
    assert url["embedding"] == "autoencoder" and url["color"] == "dimension" and url["map"] == "pca"

    # A refresh: a new session with the same URL shows the same data set, embedding and colouring.
    again = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in url.items():
        again.query_params[key] = value
    again.run()
    again.switch_page("toolkit/dashboard/embeddings.py").run()
    assert_clean(again)
    assert again.selectbox(key="embedding").value == "autoencoder"
    assert again.selectbox(key="emb_color").value == "dimension"
    capped = AppTest.from_file(str(APP), default_timeout=120)
    restored = {"source": "digits", "cap": "30", "workspace": str(fresh_workspace / "other"), "maxpx": "4000000"}
    for key, value in restored.items():
        capped.query_params[key] = value
    capped.run()
    assert_clean(capped)
    assert capped.number_input(key="max_per_class").value == 30
    assert capped.number_input(key="max_pixels").value == 4_000_000 and capped.query_params["maxpx"] == "4000000"
    assert [m.value for m in capped.metric][:2] == ["300", "300"]
    assert capped.text_input(key="workspace").value == str(fresh_workspace / "other")
    assert capped.query_params["workspace"] == str(fresh_workspace / "other")
    # Away to digits and back: the CIFAR-10 location (not drawn meanwhile) is still there.
    capped.radio(key="data_source").set_value("CIFAR-10").run()
    location = capped.text_input(key="cifar_path").value
    capped.radio(key="data_source").set_value("digits (offline)").run()  # the location is not drawn: dropped
    capped.radio(key="data_source").set_value("CIFAR-10").run()
    assert capped.text_input(key="cifar_path").value == location

    # Old bookmarks (?data=PATH) still open an image folder.
    old = AppTest.from_file(str(APP), default_timeout=120)
    old.query_params["data"] = str(fresh_workspace / "nowhere")
    old.run()
    assert old.radio(key="data_source").value == "Image folder or .npz"
    assert old.error and "does not exist" in old.error[0].value


def test_a_selection_survives_recolouring_and_a_box_is_named_a_box(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    at = open_app("embeddings")
    coords = load_or_compute_projection(digits_embedding, "pca", workspace=workspace).coords
    trace = chart(at, "embedding_map")["data"][0]
    shown = decode(trace["customdata"])[:, 0]
    assert trace["text"] == [digits.class_names[c] for c in digits.train_labels[shown]]  # hover names the class
    assert "%{text}" in trace["hovertemplate"] and "class %{customdata[1]}" not in trace["hovertemplate"]
    slider = at.slider(key="emb_max_points")  # digits' 1,437 points: steps of 100, not 1,000
    assert (slider.min, slider.max, slider.step, slider.value) == (100, digits.num_train, 100, digits.num_train)

    (x0, y0), (x1, y1) = coords.min(0), np.median(coords, 0)
    box = {"xref": "x", "yref": "y", "x": [x0, x1], "y": [y0, y1]}
    at.session_state["embedding_map"] = {"selection": {"points": [], "point_indices": [], "box": [box], "lasso": []}}
    at.run()
    inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    count = int(inside.sum())
    assert subheaders(at)[0] == f"Selected: {count:,} samples"
    assert at.text_input(key="lasso_name").value == f"box-{count}"

    # Recolour (the chart's own selection is emptied, as the browser does when the figure changes).
    at.session_state["embedding_map"] = {"selection": {"points": [], "point_indices": [], "box": [], "lasso": []}}
    at.selectbox(key="emb_color").set_value("dimension").run()
    assert_clean(at)
    assert subheaders(at)[0] == f"Selected: {count:,} samples"
    redrawn = chart(at, "embedding_map")["data"][0]
    assert sorted(redrawn["selectedpoints"]) == sorted(np.flatnonzero(inside[shown]).tolist())
    at.slider(key="emb_max_points").set_value(700).run()  # another plotted sample keeps it too
    assert subheaders(at)[0] == f"Selected: {count:,} samples"
    at.selectbox(key="emb_color").set_value("selector score").run()
    assert_clean(at)
    assert at.selectbox(key="emb_selector").value == "topk-activation"  # the paper's selector by default
    assert subheaders(at)[0] == f"Selected: {count:,} samples"
    at.button(key="emb_clear_selection").click().run()
    assert subheaders(at)[0] == "Selected: 0 samples"


def test_errors_name_the_app_controls_not_cli_flags(workspace: Path, tmp_path: Path) -> None:
    from toolkit.dashboard.common import app_message

    folder = tmp_path / "with-bad-file"
    for split in ("train", "test"):
        (folder / split / "cat").mkdir(parents=True)
        (folder / split / "cat" / "broken.png").write_bytes(b"not an image")
    at = open_app(data_source="Image folder or .npz", data_path=str(folder))
    assert not at.exception
    message = at.error[0].value
    assert "*Skip unreadable images*" in message and "--bad-images" not in message
    assert "the shared copy's layout" not in app_message(
        "give a folder with train/<class>/<image> and test/<class>/<image> (the shared copy's layout)"
    )
    assert app_message("x exists; pass --overwrite to replace it") == (
        "x exists; tick *Overwrite an earlier export* to replace it"
    )
    assert app_message("--size must be between 1 and 5; --seed too") == (
        "*Samples K* must be between 1 and 5; *Seed* too"
    )
    assert "Data page" in app_message("data set d has no embedding yet; make one with `samplesift embed --data d`")
    too_large = "1 image(s) in x exceed the limit of 9 pixels, ...; fix or remove them, or pass --bad-images skip to "
    too_large += "leave them out (or --max-pixels N to raise the limit)"
    assert app_message(too_large).endswith("(or raise *Most pixels per image* in the sidebar)")
    assert app_message("--image-size must be a whole number").startswith("*Decode size* must")


def test_figure_notes_sit_below_the_axis_titles_and_counts_are_singular(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    from toolkit.viz.results import NOTE_LINE, NOTE_OFFSET

    selection = make_selection(digits, "random", size=100, workspace=workspace, name="notes-random")
    for split in (0.0, 0.5):
        config = TrainConfig(split=split, steps=4, batch=32, evals=0, device="cpu", seed=7)
        train(digits, config, selection=selection if split else None, workspace=workspace, progress=False)
    table = results_table(workspace, dataset=digits.key)
    figure = accuracy_vs_split(table[table["seed"] == 7]).to_dict()["layout"]
    (note,) = figure["annotations"]
    lines = note["text"].count("<br>") + 1
    # Pinned in pixels below the plot area (not a share of its height), with room in the margin.
    assert note["y"] == 0 and note["yanchor"] == "top" and note["yshift"] <= -NOTE_OFFSET
    assert figure["margin"]["b"] >= -note["yshift"] + NOTE_LINE * lines
    assert "1 seed per point" in note["text"] and "1 seeds" not in note["text"]
    curves = loss_curves(table[table["seed"] == 7].head(1)).to_dict()["layout"]["annotations"][0]["text"]
    assert "1 run, one line each" in curves and "1 runs" not in curves


def test_a_queued_run_says_what_it_waits_for_and_a_repeat_is_flagged(
    fresh_workspace: Path, digits: ImageDataset
) -> None:
    store = RunStore(fresh_workspace)
    first = prepare(digits, TrainConfig(split=0.0, steps=5, batch=32, seed=1), workspace=fresh_workspace)
    second = prepare(digits, TrainConfig(split=0.0, steps=5, batch=32, seed=2), workspace=fresh_workspace)
    with first.lock():  # as a worker executing it holds it
        first.set_status("running")
        at = open_app("train")
        assert_clean(at)
        captions = [c.value for c in at.caption]
        assert f"waiting for run `{first.id}`" in captions
        assert sum(c.startswith("step 0 · loss –") for c in captions) == 1  # only the running one
        assert any("Not started yet, so no curve" in c and second.id in c for c in captions)
    for run in (first, second):
        cancel_run(run)

    at.multiselect(key="train_splits").set_value([0.0])
    at.number_input(key="train_steps").set_value(5)
    at.number_input(key="train_batch").set_value(32)
    at.number_input(key="train_evals").set_value(0)
    at.button(key="train_submit").click().run()
    assert_clean(at)
    assert not at.warning
    at.button(key="train_submit").click().run()  # the same configuration again
    assert at.warning and "repeats a configuration that is already queued or finished" in at.warning[0].value
    for run in store:
        cancel_run(run)


def test_a_click_on_the_map_opens_the_sample_detail(
    fresh_workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    from toolkit.dashboard.detail import nearest_neighbours
    from toolkit.embedding import save_embedding

    rng = np.random.default_rng(0)
    scores = {"el2n": rng.random(digits.num_train).astype(np.float32)}
    emb = save_embedding(
        digits,
        workspace=fresh_workspace,
        name="scored",
        encoder="file",
        config={},
        seed=None,
        vectors=digits_embedding.vectors,
        test_vectors=None,
        sample_scores=scores,
    )
    member = make_selection(digits, "random", size=50, workspace=fresh_workspace, name="holds-it", embedding="scored")
    sample = int(member.indices[3])
    at = open_app("embeddings")
    assert_clean(at)
    trace = chart(at, "embedding_map")["data"][0]
    position = int(np.flatnonzero(decode(trace["customdata"])[:, 0] == sample)[0])
    point = {"point_index": position, "customdata": [sample, int(digits.train_labels[sample])]}
    at.session_state["embedding_map"] = {
        "selection": {"points": [point], "point_indices": [position], "box": [], "lasso": []}
    }
    at.run()
    assert_clean(at)
    assert at.number_input(key="emb_detail_index").value == sample
    assert at.query_params["sample"] == str(sample)
    assert subheaders(at)[0] == "Selected: 0 samples"  # a click is not a selection
    assert any(
        f"**Sample #{sample}** · class **{digits.class_names[digits.train_labels[sample]]}**" in m.value
        for m in at.markdown
    )
    assert any("In saved selections: `holds-it`" in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "percentile" in d.value.columns)
    assert table["score"].tolist() == ["el2n"] and table["value"].iloc[0] == pytest.approx(scores["el2n"][sample])

    # Its neighbours: the most cosine-similar rows, itself excluded.
    unit = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    similarity = unit @ unit[sample]
    similarity[sample] = -np.inf
    expected = np.argsort(-similarity, kind="stable")[:12]
    found, values = nearest_neighbours(emb, sample)
    np.testing.assert_allclose(values, similarity[expected], rtol=1e-5)
    grid = at.image[-1]
    assert [c.split(" · ")[0] for c in grid.captions] == [f"#{j}" for j in found]


def served_image_side(managers: list[MediaFileManager], url: str) -> int:
    """The pixel width of an image the page served (read back from the media file manager)."""
    from PIL import Image

    served = managers[-1].read_file(url.rsplit("/", 1)[1].split("?")[0])
    assert served is not None
    return Image.open(io.BytesIO(served.content)).size[0]


def test_an_image_in_any_grid_opens_the_sample_detail_at_the_chosen_size(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding, media_managers: list[MediaFileManager]
) -> None:
    from toolkit.dashboard.detail import nearest_neighbours

    def detail_of(at: AppTest) -> list[str]:
        return [m.value for m in at.markdown if m.value.startswith("**Sample #")]

    # The Data page's sample grid: no detail until an image is picked, then that image's.
    at = open_app()
    assert_clean(at)
    assert not detail_of(at)
    picker = at.selectbox(key="data_grid_open")
    grid = next(image for image in at.image if image.captions and image.captions[0].startswith("#"))
    assert picker.options == grid.captions  # the picker lists the grid's images, captioned alike
    sample = int(grid.captions[5].split(" · ")[0][1:])
    picker.set_value(5).run()
    assert_clean(at)
    assert at.number_input(key="data_detail_index").value == sample
    assert detail_of(at)[0].startswith(
        f"**Sample #{sample}** · class **{digits.class_names[digits.train_labels[sample]]}**"
    )
    assert at.query_params["sample"] == str(sample)
    assert at.selectbox(key="data_grid_open").value is None  # ready for the next pick

    # A neighbour in the detail opens in its place; Close hides the detail.
    neighbours, _ = nearest_neighbours(digits_embedding, sample)
    at.selectbox(key="detail_neighbours_open").set_value(0).run()
    assert at.number_input(key="data_detail_index").value == int(neighbours[0])
    at.button(key="data_detail_close").click().run()
    assert_clean(at)
    assert not detail_of(at) and "sample" not in at.query_params

    # The sidebar's image size: every grid's images are drawn that large, and the URL keeps it.
    assert served_image_side(media_managers, grid.value[0]) == 64
    at.radio(key="thumb_size").set_value(128).run()
    assert_clean(at)
    grid = next(image for image in at.image if image.captions and image.captions[0].startswith("#"))
    assert served_image_side(media_managers, grid.value[0]) == 128
    assert at.query_params["thumbs"] == "128"

    # The Selectors page's grids (one per selector) open theirs too.
    at.switch_page("toolkit/dashboard/selectors.py").run()
    at.multiselect(key="sel_methods").set_value(["topk-activation"])
    at.number_input(key="sel_k").set_value(40)
    at.button[0].click().run()
    assert_clean(at)
    selection = make_selection(
        digits, "topk-activation", size=40, save=False, workspace=workspace, embedding=digits_embedding.name
    )
    _, _, shown = image_grid_items(digits, selection.indices, scores=selection.scores, limit=48)
    at.selectbox(key=f"sel_grid_open_{selection.name}").set_value(2).run()
    assert_clean(at)
    assert at.number_input(key="sel_detail_index").value == int(shown[2])
    assert detail_of(at)[0].startswith(f"**Sample #{shown[2]}**")

    # And on the Embeddings page, the selection's grid opens one in the page's detail.
    at.switch_page("toolkit/dashboard/embeddings.py").run()
    coords = load_or_compute_projection(digits_embedding, "pca", workspace=workspace).coords
    (x0, y0), (x1, y1) = coords.min(0), np.median(coords, 0)
    box = {"xref": "x", "yref": "y", "x": [x0, x1], "y": [y0, y1]}
    at.session_state["embedding_map"] = {"selection": {"points": [], "point_indices": [], "box": [box], "lasso": []}}
    at.run()
    label = at.selectbox(key="emb_grid_open").options[1]
    at.selectbox(key="emb_grid_open").set_value(1).run()
    assert_clean(at)
    assert at.number_input(key="emb_detail_index").value == int(label.split(" · ")[0][1:])


def test_a_filter_restricts_the_map_and_the_grid_and_saves_as_a_selection(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    from toolkit.filters import SampleFilter

    rng = np.random.default_rng(5)
    for name in ("filter-a", "filter-b"):
        picked = np.sort(rng.choice(digits.num_train, 700, replace=False))
        selection_from_indices(digits, picked, name=name, workspace=workspace)
    scores = make_selection(
        digits, "topk-activation", fraction=0.0864, save=False, workspace=workspace, embedding=digits_embedding.name
    ).result.scores
    low = float(np.quantile(scores, 0.3))

    at = open_app("embeddings")
    assert_clean(at)
    at.multiselect(key="emb_filter_classes").set_value([3, 5])
    at.multiselect(key="emb_filter_within").set_value(["filter-a"])
    at.multiselect(key="emb_filter_outside").set_value(["filter-b"])
    at.selectbox(key="emb_filter_score").set_value("topk-activation").run()
    assert_clean(at)
    high = at.slider(key="emb_range_topk-activation").max
    at.slider(key="emb_range_topk-activation").set_value((low, high)).run()
    assert_clean(at)

    # By hand: class 3 or 5, in A, not in B, score at least the 30 % quantile.
    members = {s.name: s.indices for s in list_selections(digits, workspace=workspace)}
    everyone = np.arange(digits.num_train)
    expected = np.flatnonzero(
        np.isin(digits.train_labels, [3, 5])
        & np.isin(everyone, members["filter-a"])
        & ~np.isin(everyone, members["filter-b"])
        & (scores >= low)
    )
    assert 0 < len(expected) < 200
    wanted = SampleFilter((3, 5), ("filter-a",), ("filter-b",), "topk-activation score", low, None)
    np.testing.assert_array_equal(wanted.indices(digits, scores=scores, workspace=workspace), expected)
    np.testing.assert_array_equal(decode(chart(at, "embedding_map")["data"][0]["customdata"])[:, 0], expected)
    assert subheaders(at)[0] == f"Passing the filter: {len(expected):,} samples"
    grid = next(image for image in at.image if image.captions and image.captions[0].startswith("#"))
    assert sorted(int(c.split(" · ")[0][1:]) for c in grid.captions) == sorted(expected[: len(grid.captions)])

    at.text_input(key="lasso_name").set_value("filtered")
    at.get("form_submit_button")[0].click()
    at.run()
    assert_clean(at)
    saved = {s.name: s for s in list_selections(digits, workspace=workspace)}["filtered"]
    np.testing.assert_array_equal(saved.indices, expected)
    assert saved.method == "filter"
    assert saved.manifest["params"]["filter"] == {
        "classes": ["3", "5"],
        "within": ["filter-a"],
        "outside": ["filter-b"],
        "score": {"name": "topk-activation score", "low": pytest.approx(low), "high": None},
    }

    # A box on the filtered map keeps only the filtered samples inside it.
    coords = load_or_compute_projection(digits_embedding, "pca", workspace=workspace).coords
    (x0, y0), (x1, y1) = coords.min(0), np.median(coords, 0)
    box = {"xref": "x", "yref": "y", "x": [x0, x1], "y": [y0, y1]}
    at.session_state["embedding_map"] = {"selection": {"points": [], "point_indices": [], "box": [box], "lasso": []}}
    at.run()
    assert_clean(at)
    inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    assert subheaders(at)[0] == f"Selected: {int(inside[expected].sum()):,} samples"
    for name in ("filter-a", "filter-b", "filtered"):  # other tests share the workspace's selections
        Workspace(workspace).selection_path(digits.key, name).unlink()


def test_the_selectors_and_train_choices_survive_a_refresh(
    workspace: Path, digits: ImageDataset, digits_embedding: Embedding
) -> None:
    at = open_app("selectors")
    assert_clean(at)
    assert "selectors" not in at.query_params and "k" not in at.query_params  # defaults stay out of the URL
    at.multiselect(key="sel_methods").set_value(["random", "k-center"])
    at.number_input(key="sel_k").set_value(77)
    at.checkbox(key="sel_balanced").check()
    at.number_input(key="sel_seed").set_value(3).run()
    assert_clean(at)
    selectors_url = dict(at.query_params)
    assert {k: selectors_url[k] for k in ("selectors", "k", "balanced", "seed")} == {
        "selectors": "random,k-center",
        "k": "77",
        "balanced": "True",
        "seed": "3",
    }

    at.switch_page("toolkit/dashboard/train.py").run()
    at.multiselect(key="train_splits").set_value([0.0, 1.0])
    at.radio(key="train_length").set_value("time budget").run()
    at.number_input(key="train_budget").set_value(45.0)
    at.number_input(key="train_batch").set_value(64)
    at.selectbox(key="train_norm").set_value("lrn").run()
    assert_clean(at)
    train_url = dict(at.query_params)
    assert {k: train_url[k] for k in ("splits", "length", "seconds", "batch", "norm")} == {
        "splits": "0.0,1.0",
        "length": "time budget",
        "seconds": "45.0",
        "batch": "64",
        "norm": "lrn",
    }

    # A refresh: a new session with the page's URL draws the same choices.
    def refreshed(page: str, url: dict[str, str]) -> AppTest:
        again = AppTest.from_file(str(APP), default_timeout=120)
        for key, value in url.items():
            again.query_params[key] = value
        again.run()
        again.switch_page(f"toolkit/dashboard/{page}.py").run()
        assert_clean(again)
        return again

    again = refreshed("selectors", selectors_url)
    assert again.multiselect(key="sel_methods").value == ["random", "k-center"]
    assert again.number_input(key="sel_k").value == 77
    assert again.checkbox(key="sel_balanced").value is True and again.number_input(key="sel_seed").value == 3
    again = refreshed("train", train_url)
    assert again.multiselect(key="train_splits").value == [0.0, 1.0]
    assert again.radio(key="train_length").value == "time budget"
    assert again.number_input(key="train_budget").value == 45.0
    assert again.number_input(key="train_batch").value == 64 and again.selectbox(key="train_norm").value == "lrn"

    # A hand-edited link with numbers outside the fields' ranges (or not numbers) draws the defaults, no error.
    edited = refreshed("train", {**train_url, "length": "steps", "seeds": "99", "batch": "0", "evals": "x"})
    assert edited.number_input(key="train_seeds").value == 1 and edited.number_input(key="train_batch").value == 128
    assert edited.number_input(key="train_evals").value == 5
    sidebar = AppTest.from_file(str(APP), default_timeout=120)
    sidebar.query_params.update({"source": "digits", "imgsize": "5000", "cap": "-3"})
    sidebar.run()
    assert_clean(sidebar)
    assert sidebar.number_input(key="image_size").value == 0 and sidebar.number_input(key="max_per_class").value == 0


def test_the_sidebar_image_size_loads_and_is_kept_in_the_url(tmp_path: Path, fresh_workspace: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imgs" / split / cls / f"{i}.png")
    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in {"source": "folder", "data": str(tmp_path / "imgs"), "imgsize": "16"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error
    assert at.number_input(key="image_size").value == 16 and at.query_params["imgsize"] == "16"
    assert any("16x16x3" in c.value for c in at.sidebar.caption)  # decoded to the chosen size
