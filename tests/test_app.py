"""The dashboard, page by page, with Streamlit's AppTest (no browser; see test_e2e_browser.py).

Every page is rendered on the offline default (digits) and on a capped real CIFAR-10 subset;
the figures' data are compared with the toolkit's own output; a selection is injected as
the map's selection event; a run queued from the Train form trains in a real background
process and its curve appears after polling.
"""

from __future__ import annotations

import base64
import collections
import io
import json
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
from toolkit.embed import AutoencoderConfig, Embedding, train_autoencoder
from torchvision.datasets import ImageFolder

from toolkit.data import ImageDataset
from toolkit.export import export_selection
from toolkit.jobs import cancel_run
from toolkit.projection import load_or_compute_projection, points_in_polygon, stratified_subsample
from toolkit.results import results_table
from toolkit.runs import RunStore
from toolkit.selection import list_selections, make_selection
from toolkit.train import TrainConfig, prepare, train
from toolkit.viz.embedding import heatmap_rows, image_grid_items
from toolkit.viz.results import accuracy_vs_split, time_budget_bars

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
    grid = [image for image in at.image if image.captions and image.captions[0].startswith("#")][-1]
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
    expected = {
        m: make_selection(digits, m, size=100, seed=0, save=False, workspace=workspace).indices
        for m in ("random", "topk-activation")
    }
    overlay = chart(at, "sel_overlay")["data"]
    assert len(overlay) == 3  # all samples, then one trace per selection
    for trace, method in zip(overlay[1:], expected, strict=True):
        np.testing.assert_array_equal(decode(trace["customdata"])[:, 0], expected[method])
    bars = chart(at, "sel_classes")["data"]
    for trace, method in zip(bars, expected, strict=True):
        np.testing.assert_array_equal(
            decode(trace["y"]), np.bincount(digits.train_labels[expected[method]], minlength=10)
        )
    at.number_input(key="sel_k").set_value(digits.num_train + 1)
    at.button[0].click().run()
    assert not at.exception
    assert at.error and f"--size must be between 1 and {digits.num_train}" in at.error[0].value


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
    assert at.error and "--steps must be a positive whole number, got 0" in at.error[0].value
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
    assert at.error and "exists and is not empty; pass --overwrite" in at.error[0].value
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


def test_the_autoencoder_is_trained_from_the_app(workspace: Path, digits: ImageDataset) -> None:
    at = open_app("embeddings", max_per_class=20)
    assert_clean(at)
    assert at.info and "has no autoencoder" in at.info[0].value
    at.number_input(key="embed_epochs").set_value(2)
    at.number_input(key="embed_batch").set_value(64)
    at.get("form_submit_button")[0].click()
    at.run()
    # The job process needs seconds to start: the live panel with its cancel button shows first.
    assert at.button(key="cancel_embed").label == "Cancel training"
    assert [m.label for m in at.metric] == ["Step", "Loss", "Images/s", "Time left"]
    poll(at, lambda: bool([c for c in at.get("plotly_chart") if c.proto.id.endswith("embedding_map")]))
    assert_clean(at)
    assert subheaders(at)[0] == "Selected: 0 samples"


# --------------------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="module")
def cifar_embedding(cifar_small: ImageDataset, session_workspace: Path) -> Embedding:
    return train_autoencoder(
        cifar_small, AutoencoderConfig(epochs=1, batch=100, device="cpu"), workspace=session_workspace, progress=False
    )


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
