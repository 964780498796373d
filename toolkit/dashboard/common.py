"""What every dashboard page shares: the data set picker, cached loaders, job panels.

The dashboard is a thin layer: everything it shows comes from toolkit calls that the CLI and
notebooks make too. This module only wires those calls to Streamlit: it caches loaded data
in the server process, turns :class:`~toolkit.errors.SampleSiftError` into an on-page
error, and polls background jobs (:mod:`toolkit.jobs`) from fragments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from toolkit import jobs
from toolkit.data import ImageDataset, load_dataset
from toolkit.embedding import Embedding, list_embeddings, load_embedding
from toolkit.encoders import ENCODERS, get_encoder
from toolkit.errors import SampleSiftError
from toolkit.projection import Projection, find_projection, load_or_compute_projection
from toolkit.workspace import Workspace

SOURCES = ("digits (offline)", "CIFAR-10", "Image folder or .npz")
#: How often fragments poll progress files.
POLL_SECONDS = 1.5


@dataclass(frozen=True)
class Context:
    """The data set, workspace and embedding the pages work on (chosen in the sidebar).

    ``embedding`` is the chosen embedding's name, ``None`` while the data set has none, and
    ``encoder`` the encoder that made it.
    """

    dataset: ImageDataset
    workspace: Workspace
    embedding: str | None
    encoder: str | None = None

    @property
    def ws(self) -> str:
        return str(self.workspace.root)


#: The toolkit's messages name CLI flags (one source of truth for every front end); the app
#: shows them with the control that does the same instead. Whole phrases first, then flags.
APP_PHRASES: tuple[tuple[str, str], ...] = (
    (r"pass --bad-images skip to leave them out", "tick *Skip unreadable images* in the sidebar to leave them out"),
    (r"\(or --max-pixels N to raise the limit\)", "(or raise *Most pixels per image* in the sidebar)"),
    (r"pass --overwrite to replace it", "tick *Overwrite an earlier export* to replace it"),
    (r"--overwrite will not replace it", "*Overwrite an earlier export* will not replace it"),
    (r" \(the shared copy's layout\)", ""),
    (r"(make|remake) (one|it) with `samplesift embed[^`]*`", r"\1 \2 on the Data page (*Make an embedding*)"),
    (r"recompute (it|them) \(samplesift embed\)", r"remake \1 on the Data page"),
    (r"; list runs with `samplesift runs`", " (see the Results page)"),
    (r"resume it with samplesift train", "resume it on the Train page"),
    (r"give --workspace a folder", "give the sidebar's *Workspace* a folder"),
)
#: CLI flags left in a message, and the app control each one corresponds to.
APP_CONTROLS: dict[str, str] = {
    "--max-per-class": "*Images per class*",
    "--size": "*Samples K*",
    "--fraction": "*Fraction*",
    "--steps": "*Steps*",
    "--time-budget": "*Seconds*",
    "--batch": "*Batch*",
    "--seed": "*Seed*",
    "--epochs": "*Epochs*",
    "--components": "*Components*",
    "--evals": "*Evaluations*",
    "--overwrite": "*Overwrite an earlier export*",
    "--bad-images skip": "*Skip unreadable images*",
    "--resume": "*Resume*",
    "--image-size": "*Decode size*",
}


def app_message(message: str) -> str:
    """A toolkit message as the app shows it: its controls named instead of the CLI's flags."""
    import re

    for pattern, replacement in APP_PHRASES:
        message = re.sub(pattern, replacement, message)
    for flag in sorted(APP_CONTROLS, key=len, reverse=True):
        message = re.sub(rf"{re.escape(flag)}(?![\w-])", APP_CONTROLS[flag], message)
    return message


def show_error(error: Exception | str, prefix: str = "") -> None:
    st.error(prefix + app_message(str(error)), icon=":material/error:")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a :class:`SampleSiftError` as an error box on the page (and stop this run)."""
    try:
        yield
    except SampleSiftError as exc:
        show_error(exc)
        st.stop()


def default_cifar10_location() -> str:
    """``$SAMPLESIFT_CIFAR10``, else the shared copy beside the repository if it is there."""
    if os.environ.get("SAMPLESIFT_CIFAR10"):
        return os.environ["SAMPLESIFT_CIFAR10"]
    shared = Path("../shared/datasets/cifar10")
    return str(shared) if shared.is_dir() else ""


#: URL values of the sidebar's source (``?source=``).
SOURCE_PARAMS = {SOURCES[0]: "digits", SOURCES[1]: "cifar10", SOURCES[2]: "folder"}


#: The sidebar's largest decode size (px).
MAX_IMAGE_SIZE = 1024


def default_workspace() -> str:
    return os.environ.get("SAMPLESIFT_WORKSPACE") or "workspace"


def _restore_picker_state() -> None:
    """Every run: each sidebar field without a value takes it from the URL (``?source=&data=&cap=&skip=&maxpx=
    &imgsize=&workspace=``, written back by :func:`_publish_data`), else the environment, else digits.

    A new session (a refresh, a bookmark, a shared link) has no values; a running one loses a field's value
    whenever a run does not draw it (Streamlit drops it: the CIFAR-10 location while digits is chosen, or any
    field of a run cut short by the next), so every run asks, and the loaded choice comes back.
    ``?data=digits``, ``?data=cifar10`` and ``?data=PATH`` alone work too (bookmarks made before ``source``
    was written).
    """
    params = st.query_params
    spec = params.get("data") or os.environ.get("SAMPLESIFT_DATA") or "digits"
    source = {v: k for k, v in SOURCE_PARAMS.items()}.get(params.get("source", ""))
    if source is None:
        source = SOURCES[0] if spec == "digits" else SOURCES[1] if spec == "cifar10" else SOURCES[2]
    cifar = spec if source == SOURCES[1] and spec != "cifar10" else default_cifar10_location()
    st.session_state.setdefault("data_source", source)
    st.session_state.setdefault("data_path", spec if source == SOURCES[2] else "")
    st.session_state.setdefault("cifar_path", cifar)
    cap = params.get("cap", "0")
    st.session_state.setdefault("max_per_class", int(cap) if cap.isdigit() else 0)
    st.session_state.setdefault("skip_bad", params.get("skip") == "1")
    limit = params.get("maxpx", "0")
    st.session_state.setdefault("max_pixels", int(limit) if limit.isdigit() else 0)
    side = params.get("imgsize", "0")
    st.session_state.setdefault("image_size", int(side) if side.isdigit() and int(side) <= MAX_IMAGE_SIZE else 0)
    st.session_state.setdefault("workspace", params.get("workspace") or default_workspace())


def current_spec() -> str:
    """The data spec the sidebar describes."""
    source = st.session_state.get("data_source", SOURCES[0])
    if source == SOURCES[0]:
        return "digits"
    if source == SOURCES[1]:
        return st.session_state.get("cifar_path", "").strip() or "cifar10"
    return st.session_state.get("data_path", "").strip()


def _apply_sidebar() -> None:
    """Take the sidebar's fields as the data set to load (first run, *Load* and source changes)."""
    st.session_state["_data_applied"] = _pending()


def set_param(name: str, value: Any, default: Any = None) -> None:
    """Keep ``?name=value`` in the URL, so a refresh or a shared link restores it.

    ``None`` or the ``default`` removes it (defaults stay out of the URL); a list is written
    comma-separated.
    """
    if value is None or value == default:
        if name in st.query_params:
            del st.query_params[name]
        return
    text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    if st.query_params.get(name) != text:
        st.query_params[name] = text


def restore_choice(
    key: str,
    param: str,
    options: Sequence[Any] | None = None,
    *,
    parse: Callable[[str], Any] | None = None,
    many: bool = False,
) -> None:
    """Before drawing widget ``key``: when it has no value yet, take it from ``?param=``.

    That is a refresh, a bookmark or a shared link, and any run that draws the widget anew
    (Streamlit forgets a widget's value when a run does not draw it). Every run of a page
    asks, not only a session's first: a run cut short by another can lose a value it set.
    The value must be one of ``options`` (compared as text; with ``many``, a comma-separated
    list of them), or whatever ``parse`` makes of it (a value it refuses is ignored).
    """
    value = st.query_params.get(param)
    if value is None or key in st.session_state:
        return
    if parse is not None:
        with suppress(ValueError):  # a hand-edited link: the widget keeps its default
            st.session_state[key] = parse(value)
        return
    assert options is not None
    by_text = {str(o): o for o in options}
    if many:
        st.session_state[key] = [by_text[v] for v in value.split(",") if v in by_text]
    elif value in by_text:
        st.session_state[key] = by_text[value]


def url_widget(
    draw: Callable[..., Any],
    *args: Any,
    key: str,
    param: str,
    omit: Any,
    options: Sequence[Any] | None = None,
    parse: Callable[[str], Any] | None = None,
    many: bool = False,
    **kwargs: Any,
) -> Any:
    """``draw(*args, key=key, **kwargs)`` (a widget) with its value kept in the URL as ``?param=``.

    A refresh or a shared link restores it (see :func:`restore_choice` for ``options``,
    ``parse`` and ``many``); the value ``omit`` (the widget's default) stays out of the URL.
    """
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if parse is not None and (low is not None or high is not None):
        parse = _within(parse, low, high)
    restore_choice(key, param, options, parse=parse, many=many)
    value = draw(*args, key=key, **kwargs)
    set_param(param, value, omit)
    return value


def _within(parse: Callable[[str], Any], low: Any, high: Any) -> Callable[[str], Any]:
    """``parse``, refusing (``ValueError``) a value outside a number field's range: a hand-edited link
    must not make the widget raise, it keeps its default."""

    def parse_in_range(text: str) -> Any:
        value = parse(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{value} is outside [{low}, {high}]")
        return value

    return parse_in_range


def _publish_data(applied: dict[str, Any]) -> None:
    source = SOURCE_PARAMS[applied["source"]]
    set_param("source", source)
    set_param("data", None if source == "digits" else applied["spec"])
    set_param("cap", str(applied["cap"]) if applied["cap"] else None)
    set_param("skip", "1" if applied["skip"] else None)
    set_param("maxpx", str(applied["max_pixels"]) if applied["max_pixels"] else None)
    set_param("imgsize", str(applied["image_size"]) if applied["image_size"] else None)
    set_param("workspace", None if applied["workspace"] == default_workspace() else applied["workspace"])


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_dataset(
    spec: str, workspace: str, cap: int, skip_bad: bool, max_pixels: int, image_size: int, generation: int
) -> ImageDataset:
    return load_dataset(
        spec,
        workspace=workspace,
        max_per_class=cap or None,
        bad_files="skip" if skip_bad else "error",
        max_pixels=max_pixels or None,
        image_size=image_size or None,
    )


def _load_with_progress(
    spec: str, workspace: str, cap: int, skip_bad: bool, max_pixels: int, image_size: int, generation: int
) -> ImageDataset:
    """The cached data set; a first load of an image folder shows a progress bar with counts and time left."""
    from toolkit.images import decode_progress

    bar = st.empty()

    def report(done: int, total: int, elapsed: float) -> None:
        left = elapsed / done * (total - done) if done else None
        bar.progress(
            done / max(total, 1),
            text=f"Decoding the images once (then cached): {done:,} of {total:,}, "
            f"{format_seconds(elapsed)} so far, about {format_seconds(left)} left",
        )

    with decode_progress(report), st.spinner("Loading the data set…"):
        dataset = _load_dataset(spec, workspace, cap, skip_bad, max_pixels, image_size, generation)
    bar.empty()
    return dataset


def sidebar() -> Context | None:
    """Draw the data set picker; return the context, or ``None`` after showing why not.

    Edits of the fields take effect with *Load* (a form), so typing a path does not load
    data on every keystroke; the loaded choice is kept in the URL.
    """
    _restore_picker_state()
    st.session_state.setdefault("data_generation", 0)
    if "_data_applied" not in st.session_state:
        _apply_sidebar()
    with st.sidebar:
        st.subheader("Data set")
        st.radio("Source", SOURCES, key="data_source")
        source = st.session_state["data_source"]
        with st.form("data_form", border=False):
            if source == SOURCES[1]:
                st.text_input(
                    "CIFAR-10 location",
                    key="cifar_path",
                    help="An image-folder copy (train/ and test/), a folder holding torchvision's "
                    "cifar-10-batches-py, or empty to download it with torchvision.",
                )
            elif source == SOURCES[2]:
                st.text_input(
                    "Path",
                    key="data_path",
                    placeholder="path/to/folder, data.npz, list:FILE.csv or hf:PATH",
                    help="A folder with train/<class>/<image> and test/<class>/<image>, an .npz archive, list:FILE.csv "
                    "(a CSV of image paths and labels) or hf:PATH (a saved Hugging Face dataset or a folder of "
                    "parquet files). Here a source needs its own test split; the command line's --test-fraction "
                    "holds one out.",
                )
            st.number_input(
                "Images per class, training and test (0 = all)",
                min_value=0,
                step=50,
                key="max_per_class",
                help="Keeps the first N images of every class in the training split and in the test split.",
            )
            st.checkbox("Skip unreadable images", key="skip_bad", help="Otherwise a folder with bad files is refused.")
            st.number_input(
                "Most pixels per image (0 = Pillow's limit)",
                min_value=0,
                step=1_000_000,
                key="max_pixels",
                help="Read from each image's header before decoding; larger images (possible decompression bombs) "
                "refuse the source, or are skipped with the box above.",
            )
            st.number_input(
                "Decode size, px (0 = automatic)",
                min_value=0,
                max_value=MAX_IMAGE_SIZE,
                step=16,
                key="image_size",
                help="Images are brought to S x S while they are decoded (shorter side to S, then the centre square). "
                "Automatic keeps the native size when every image is at most 64 px, else 64.",
            )
            st.text_input("Workspace", key="workspace", help="Where caches, embeddings, selections and runs live.")
            if st.form_submit_button("Load", icon=":material/upload:", key="data_load", type="primary"):
                _apply_sidebar()
        if source != st.session_state["_data_applied"]["source"] and source == SOURCES[0]:
            _apply_sidebar()  # digits needs no path: switch at once
        if st.button("Reload data", help="Read the source again (after its files changed)."):
            st.session_state["data_generation"] += 1
            _load_dataset.clear()
    applied = st.session_state["_data_applied"]
    if applied != _pending():
        st.sidebar.caption("Press **Load** to use the changed fields.")
    spec = applied["spec"]
    if not spec:
        st.info("Enter the path of an image folder or an .npz file in the sidebar, then press **Load**.")
        return None
    try:
        workspace = Workspace(applied["workspace"])
        dataset = _load_with_progress(
            spec,
            str(workspace.root),
            applied["cap"],
            applied["skip"],
            applied["max_pixels"],
            applied["image_size"],
            st.session_state["data_generation"],
        )
    except SampleSiftError as exc:
        show_error(exc, "Cannot load the data set: ")
        return None
    _publish_data(applied)
    made = {m["name"]: m for m in list_embeddings(dataset, workspace=workspace)}
    with st.sidebar:
        chosen = _embedding_picker(made)
        _thumbnail_picker()
        st.caption(
            f"**{dataset.key}**: {dataset.num_train:,} train / {dataset.num_test:,} test images, "
            f"{dataset.num_classes} classes, {dataset.image_shape[0]}x{dataset.image_shape[1]}x{dataset.channels}"
        )
        st.divider()
        st.caption(
            "The server listens on 127.0.0.1 only (`.streamlit/config.toml`). To share it on a network, "
            "run `streamlit run app.py --server.address 0.0.0.0` behind your own access control."
        )
    return Context(dataset, workspace, chosen, made[chosen]["encoder"] if chosen else None)


def _pending() -> dict[str, Any]:
    """What the sidebar's fields describe now (loaded or not)."""
    source = st.session_state.get("data_source", SOURCES[0])
    return {
        "source": source,
        "spec": current_spec(),
        "cap": int(st.session_state.get("max_per_class") or 0),
        "skip": bool(st.session_state.get("skip_bad", False)),
        "max_pixels": int(st.session_state.get("max_pixels") or 0),
        # digits is arrays, nothing to decode: the size is kept for the sources it applies to.
        "image_size": int(st.session_state.get("image_size") or 0) if source != SOURCES[0] else 0,
        "workspace": (st.session_state.get("workspace") or "").strip() or default_workspace(),
    }


def _embedding_label(manifest: dict[str, Any]) -> str:
    knn = (manifest.get("quality") or {}).get("knn_accuracy")
    return f"{manifest['name']} ({manifest['encoder']}" + (f", k-NN {100 * knn:.0f}%)" if knn is not None else ")")


def _embedding_picker(made: dict[str, dict[str, Any]]) -> str | None:
    """The sidebar's embedding choice (kept in the URL as ``?embedding=NAME``); the newest by default."""
    if not made:
        st.caption("No embedding yet: make one on the Data page.")
        return None
    names = list(made)
    wanted = st.session_state.get("embedding") or st.query_params.get("embedding")
    if wanted not in made:
        wanted = names[-1]
    st.session_state["embedding"] = wanted
    chosen = st.selectbox(
        "Embedding",
        names,
        key="embedding",
        format_func=lambda name: _embedding_label(made[name]),
        help="Every page reads this embedding: the map, the dimensions, the selectors. Make more on the Data page.",
    )
    st.query_params["embedding"] = chosen
    return chosen


def context() -> Context:
    """The context set by the sidebar for this run; stops the page when there is none."""
    ctx = st.session_state.get("_context")
    if ctx is None:
        st.stop()
    return ctx


# --------------------------------------------------------------------------- embeddings


@st.cache_resource(max_entries=4)
def _load_embedding(_dataset: ImageDataset, fingerprint: str, workspace: str, name: str, stamp: int) -> Embedding:
    return load_embedding(_dataset, workspace=workspace, name=name)


def embedding(ctx: Context) -> Embedding | None:
    """The context's embedding (cached while its files are unchanged), or ``None`` if there is none."""
    if ctx.embedding is None:
        return None
    with user_errors():
        manifest = ctx.workspace.embedding_dir(ctx.dataset.key, ctx.embedding) / "manifest.json"
        if not manifest.is_file():
            return None
        return _load_embedding(ctx.dataset, ctx.dataset.fingerprint, ctx.ws, ctx.embedding, manifest.stat().st_mtime_ns)


def require_embedding(ctx: Context) -> Embedding:
    """The embedding, or the panel that makes one (and the page stops there)."""
    found = embedding(ctx)
    if found is None:
        st.info(
            f"Data set {ctx.dataset.key} has no embedding yet: make one here (a background "
            f"`samplesift embed` process) or run `samplesift embed --encoder NAME "
            f"{' '.join(ctx.dataset.cli_arguments())}`."
        )
        encoder_panel(ctx)
        st.stop()
    return found


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs`` (``many``: an irregular plural)."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


STAGE_LABELS = {"training": "training", "embedding": "embedding every image", "measuring": "measuring quality"}


@st.fragment(run_every=POLL_SECONDS)
def _embedding_progress(run_id: str, workspace: str) -> None:
    from toolkit.runs import RunStore

    run = RunStore(workspace).get(run_id)
    progress = jobs.run_progress(run)
    if progress.state not in ("queued", "running"):
        st.rerun()  # it ended: redraw the page (the new embedding, or the failure)
    config = run.config
    label = f"{config['encoder']} → {config['embedding']}: "
    if progress.state == "queued":
        ahead = jobs.running_run(workspace)
        label += f"waiting for run {ahead} to finish" if ahead else "waiting for its worker to start"
    elif progress.stage == "training" and not config.get("loop"):
        label += "computing the embedding"  # encoders that do not train log no steps
    elif progress.stage == "training" and progress.step == 0 and progress.loss is None:
        # Before the first loss record: the process imports torch, loads the data, builds the model.
        label += "starting (loading the data set and building the model)"
    else:
        label += STAGE_LABELS.get(progress.stage, progress.stage)
        if progress.stage == "training" and progress.eta_s is not None:
            label += f", {format_seconds(progress.eta_s)} left"
    st.progress(progress.fraction, text=label)
    total = (config.get("loop") or {}).get("steps")
    cols = st.columns(4)
    cols[0].metric("Step", f"{progress.step:,}" + (f" / {int(total):,}" if total else ""))
    cols[1].metric("Loss", f"{progress.loss:.4f}" if progress.loss is not None else "–")
    cols[2].metric("Images/s", f"{progress.images_per_s:.0f}" if progress.images_per_s else "–")
    cols[3].metric("Time left", format_seconds(progress.eta_s))
    if st.button("Cancel", key=f"cancel_{run_id}", icon=":material/stop:"):
        jobs.cancel_run(run)
        st.rerun()


def _encoder_option_inputs(name: str) -> dict[str, Any]:
    """Inputs for the options a user most often sets; the rest keep the encoder's defaults."""
    defaults = ENCODERS[name].defaults()
    options: dict[str, Any] = {}
    cols = st.columns(4)
    if "epochs" in defaults:
        options["epochs"] = float(
            cols[0].number_input("Epochs", 0.1, 10_000.0, float(defaults["epochs"]), 1.0, key="embed_epochs")
        )
        options["batch"] = int(cols[1].number_input("Batch", 2, 65_536, int(defaults["batch"]), key="embed_batch"))
    if "components" in defaults:
        options["components"] = int(
            cols[0].number_input("Components", 1, 10_000, int(defaults["components"]), key="embed_components")
        )
        options["whiten"] = cols[1].checkbox("Whiten", bool(defaults["whiten"]), key="embed_whiten")
    if "path" in defaults:
        options["path"] = cols[0].text_input(
            "Embedding file", placeholder="features.npy / .npz / .parquet / .csv", key="embed_file"
        )
        options["match"] = cols[1].selectbox("Match rows by", ("auto", "order", "name"), key="embed_match")
    options["seed"] = int(cols[2].number_input("Seed", 0, 2**31 - 1, 0, key="embed_seed"))
    return options


def encoder_panel(ctx: Context) -> None:
    """Make an embedding with any encoder in the background: live progress and cancel."""
    active = jobs.active_embedding_runs(ctx.dataset, workspace=ctx.workspace)
    for run in active:
        _embedding_progress(run.id, ctx.ws)
    last = jobs.find_embedding_run(ctx.dataset, None, workspace=ctx.workspace)
    if last is not None and not active:
        status = last.status()
        if status.get("state") == "failed":
            st.error(f"Making embedding {last.config.get('embedding')!r} failed: {status.get('error')}")
        elif status.get("state") == "interrupted":
            st.warning(
                f"Making embedding {last.config.get('embedding')!r} was stopped; start it again to continue "
                "from its last checkpoint."
            )
            if st.button("Continue it", key="requeue_embedding", icon=":material/replay:"):
                with user_errors():
                    jobs.requeue(last, workspace=ctx.workspace)
                st.rerun()
    names = list(ENCODERS)
    encoder = st.selectbox(
        "Encoder",
        names,
        key="new_encoder",
        format_func=lambda n: f"{n}: {ENCODERS[n].summary}",
    )
    with st.form("embed_form"):
        name = st.text_input(
            "Name", value=encoder, key=f"embed_name_{encoder}", help="Its name among this data set's embeddings."
        )
        options = _encoder_option_inputs(encoder)
        submitted = st.form_submit_button(
            "Make embedding", icon=":material/play_arrow:", type="primary", key="embed_submit"
        )
    if submitted:
        with user_errors():
            jobs.start_embedding(ctx.dataset, get_encoder(encoder, **options), workspace=ctx.workspace, name=name)
        st.rerun()


# --------------------------------------------------------------------------- maps

PROJECTION_LABELS = {"umap": "UMAP", "pca": "PCA (fast)"}


def projection_controls(ctx: Context, emb: Embedding, key: str) -> Projection:
    """Method and seed pickers; returns the map (PCA is computed here, UMAP in the background)."""
    cached_umap = find_projection(emb, "umap", workspace=ctx.workspace) is not None
    cols = st.columns([2, 1, 1, 1])
    restore_choice(f"{key}_map_method", "map", list(PROJECTION_LABELS))
    method = cols[0].selectbox(
        "Map",
        list(PROJECTION_LABELS),
        index=0 if cached_umap else 1,
        format_func=PROJECTION_LABELS.__getitem__,
        key=f"{key}_map_method",
    )
    set_param("map", method)
    seed = int(cols[1].number_input("Map seed", value=0, step=1, key=f"{key}_map_seed"))
    params: dict[str, Any] = {}
    if method == "umap":
        params["n_neighbors"] = int(cols[2].number_input("Neighbours", 2, 200, 15, key=f"{key}_map_neighbours"))
        params["min_dist"] = float(
            cols[3].number_input("Min. distance", 0.0, 1.0, 0.1, 0.05, key=f"{key}_map_min_dist")
        )
        with user_errors():
            found = find_projection(emb, "umap", seed=seed, params=params, workspace=ctx.workspace)
        if found is not None:
            return found
        _umap_job_panel(ctx, seed, params, key)
        st.caption("Showing the PCA map until the UMAP is ready.")
    with user_errors():
        return load_or_compute_projection(emb, "pca", seed=seed, workspace=ctx.workspace)


def _umap_job_panel(ctx: Context, seed: int, params: dict[str, Any], key: str) -> None:
    assert ctx.embedding is not None
    job = jobs.find_projection_job(ctx.dataset, "umap", seed=seed, workspace=ctx.workspace, embedding=ctx.embedding)
    same = job is not None and all(job.record["targets"].get(k) == v for k, v in params.items())
    if same and job is not None and job.alive():
        _projection_poll(job.id, ctx.ws)
        return
    if same and job is not None and job.state() in ("failed", "lost"):
        st.error(f"The UMAP job {job.state()}:")
        st.code(job.log_tail(10) or "(no output)")
    if st.button(
        f"Compute the UMAP of {ctx.dataset.num_train:,} samples in the background",
        key=f"{key}_start_umap",
        icon=":material/play_arrow:",
    ):
        with user_errors():
            jobs.start_projection(
                ctx.dataset, "umap", seed=seed, params=params, workspace=ctx.workspace, embedding=ctx.embedding
            )
        st.rerun()


@st.fragment(run_every=POLL_SECONDS)
def _projection_poll(job_id: str, workspace: str) -> None:
    import datetime as dt

    ws = Workspace(workspace)
    job = jobs.Job(ws.jobs_dir / f"{job_id}.json")
    if not job.alive():
        st.rerun()
    started = dt.datetime.fromisoformat(str(job.record["created"]))
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    compiled = jobs.numba_cache_dir(ws).is_dir() and any(jobs.numba_cache_dir(ws).rglob("*.nbi"))
    st.info(
        f"Computing the UMAP in the background: {format_seconds(elapsed)} so far. "
        + (
            "UMAP's compiled kernels are cached in the workspace: this should take seconds to a minute."
            if compiled
            else "The first UMAP in a workspace compiles numba kernels (a minute or two on a small machine); "
            "they are cached, so later maps start at once."
        ),
        icon=":material/hourglass:",
    )


#: Captions under small images wrap between words (Streamlit breaks them anywhere, mid-word).
CAPTION_CSS = (
    "<style>[data-testid='stImageCaption']{word-break:normal;overflow-wrap:normal;hyphens:none;"
    "font-size:0.7rem;line-height:1.15}</style>"
)


#: Image sizes offered for every grid (pixels; the sidebar's *Image size*, ``?thumbs=``).
THUMBNAIL_SIZES = (64, 96, 128)


def thumbnail_size() -> int:
    """The side, in pixels, that grid images are enlarged to (the sidebar's *Image size*)."""
    return int(st.session_state.get("thumb_size") or THUMBNAIL_SIZES[0])


def _thumbnail_picker() -> None:
    """The sidebar's *Image size* for every grid, kept in the URL as ``?thumbs=N``."""
    restore_choice("thumb_size", "thumbs", THUMBNAIL_SIZES)
    size = st.radio(
        "Image size",
        THUMBNAIL_SIZES,
        format_func=lambda s: f"{s} px",
        horizontal=True,
        key="thumb_size",
        help="How large the images of every grid are drawn.",
    )
    set_param("thumbs", size, default=THUMBNAIL_SIZES[0])


def _open_sample(picker: str, shown: list[int], target: str) -> None:
    """A grid's picker chose an image: show it in the detail view (the number input ``target``)."""
    position = st.session_state.get(picker)
    if position is not None:
        st.session_state[target] = shown[position]
        st.session_state[picker] = None  # ready for the next pick, which may be the same image


def show_images(
    images: list[np.ndarray],
    captions: list[str],
    *,
    shown: np.ndarray | None = None,
    key: str | None = None,
    open_in: str | None = None,
) -> None:
    """A grid of images with captions (wrapped at word boundaries), drawn at the sidebar's size.

    With ``shown`` (the sample index of each image), ``key`` and ``open_in`` (the key of the
    page's sample-detail index), a picker under the grid opens any of its images in the
    detail view: Streamlit's images take no clicks.
    """
    if not images:
        return
    st.html(CAPTION_CSS)
    # Room for the caption beside a small image: a quarter more than the image itself.
    st.image(images, caption=captions, width=thumbnail_size() * 5 // 4)
    if shown is not None and key is not None and open_in is not None:
        st.selectbox(
            "Open an image in the sample detail",
            range(len(captions)),
            index=None,
            format_func=captions.__getitem__,
            placeholder=f"one of these {plural(len(captions), 'image')}…",
            key=key,
            on_change=_open_sample,
            args=(key, [int(i) for i in shown], open_in),
        )
